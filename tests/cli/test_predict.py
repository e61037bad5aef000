"""``medtool predict``: masks on the input's own grid (anisotropic, oblique), formats, errors."""

import json

import numpy as np
import pytest
import torch

from medtool.formats import load_volume, save_volume
from medtool.metrics import dice
from medtool.segmentation import SegmentOptions
from medtool.train import LAST, TrainConfig, fit, make_task

from ..conftest import rotation
from ..segdata import ball_case, write_ball_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small 3D model that segments balls (trained at spacing 2 x 1 x 1 mm)."""
    root = tmp_path_factory.mktemp("predict")
    images, masks = write_ball_dataset(root, cases=4)
    options = SegmentOptions(images=str(images), masks=str(masks), dim=3, patch=[8, 16, 16], width=8,
                             depth=3, augment="none", pos_ratio=0.5, val_fraction=0.25)
    config = TrainConfig(epochs=4, steps_per_epoch=20, batch_size=2, lr=3e-3, schedule="constant")
    fit(make_task("segment", options), config, root / "run", device=torch.device("cpu"), progress=False)
    return root / "run" / LAST


@pytest.fixture
def oblique_case(tmp_path):
    """A ball on an anisotropic, oblique grid that differs from the model's spacing."""
    direction = rotation("x", 12.0) @ rotation("z", -25.0) @ np.array(
        [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    image, mask = ball_case(7, shape=(10, 30, 22), spacing=(2.5, 0.8, 1.1), direction=direction,
                            origin=(-40.0, 12.5, 300.0))
    save_volume(image, tmp_path / "in" / "oblique.nii.gz")
    return tmp_path / "in" / "oblique.nii.gz", mask


@pytest.mark.parametrize("interpolation", ["nearest", "linear"])
def test_prediction_lands_on_the_input_grid(cli, checkpoint, oblique_case, tmp_path, interpolation):
    source, truth = oblique_case
    out = tmp_path / "out"
    result = cli("predict", checkpoint, source.parent, out, "--keep-largest", "1", "--tta", "--json",
                 "--interpolation", interpolation)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["output"] == str(out / "oblique.nii.gz")
    image, labels = load_volume(source), load_volume(out / "oblique.nii.gz")
    assert labels.same_grid(image, atol=1e-4) and labels.array.dtype == np.uint8
    assert labels.meta["units"] == "label" and labels.meta["classes"] == ["background", "label_1"]
    assert labels.history[-1]["command"].startswith("medtool predict")
    # the right voxels: resampled to 2 x 1 x 1 and back, the ball is still where it was
    assert dice(truth.array > 0, labels.array > 0) > 0.8
    assert rows[0]["volumes_ml"]["label_1"] == pytest.approx(
        labels.array.sum() * np.prod(labels.spacing) / 1000, abs=1e-3)


def test_probabilities_single_file_and_threshold(cli, checkpoint, oblique_case, tmp_path):
    source, _ = oblique_case
    out = tmp_path / "one.npy"
    result = cli("predict", checkpoint, source, out, "--probabilities", "--blend", "constant", "--overlap", "0.25")
    assert result.exit_code == 0, result.output
    labels = load_volume(out)
    probability = load_volume(tmp_path / "one_prob_label_1.npy")
    assert probability.same_grid(labels) and probability.array.dtype == np.float32
    assert 0 <= probability.array.min() and probability.array.max() <= 1
    # labels and probabilities agree away from the resampling of boundaries
    assert ((probability.array > 0.5) == (labels.array > 0)).mean() > 0.97
    strict = cli("predict", checkpoint, source, tmp_path / "strict.npy", "--threshold", "0.99")
    assert strict.exit_code == 0
    assert load_volume(tmp_path / "strict.npy").array.sum() <= labels.array.sum()


def test_errors(cli, checkpoint, oblique_case, tmp_path):
    source, _ = oblique_case
    out = tmp_path / "o.nii.gz"
    assert cli("predict", checkpoint, source, out).exit_code == 0
    exists = cli("predict", checkpoint, source, out)
    assert exists.exit_code == 1 and "output exists already" in exists.stderr and "--force" in exists.stderr
    assert cli("predict", checkpoint, source, out, "--force").exit_code == 0
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = cli("predict", junk, source, tmp_path / "x.nii.gz")
    assert bad.exit_code == 1 and "cannot read checkpoint" in bad.stderr
    missing = cli("predict", checkpoint, tmp_path / "nope.nii.gz", tmp_path / "y.nii.gz")
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    blend = cli("predict", checkpoint, source, tmp_path / "z.nii.gz", "--blend", "median")
    assert blend.exit_code == 2
    interpolation = cli("predict", checkpoint, source, tmp_path / "z.nii.gz", "--interpolation", "cubic")
    assert interpolation.exit_code == 2 and "--interpolation cubic: choose one of nearest, linear" in interpolation.stderr
