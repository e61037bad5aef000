"""``medtool lungmask`` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtool.formats import load_volume, save_volume

from ..test_lungmask import chest


def test_masks_and_masked_images(cli, tmp_path):
    volume, truth = chest()
    save_volume(volume, tmp_path / "hu" / "case.nii.gz")
    raw = volume.with_array(volume.array + 1024, units="raw")
    save_volume(raw, tmp_path / "hu" / "raw.npy")
    result = cli("lungmask", tmp_path / "hu", tmp_path / "masks", "--apply", "-1000", "--json")
    assert result.exit_code == 1                             # raw.npy failed, case went on
    assert "raw.npy" in result.stderr and "medtool hu" in result.stderr
    written = [row["output"] for row in json.loads(result.stdout)["written"]]
    assert written == [str(tmp_path / "masks" / "case.nii.gz"),
                       str(tmp_path / "masks" / "case_masked.nii.gz")]
    mask = load_volume(tmp_path / "masks" / "case.nii.gz")
    assert mask.same_grid(volume) and set(np.unique(mask.array)) == {0, 1, 2}
    masked = load_volume(tmp_path / "masks" / "case_masked.nii.gz")
    assert np.all(masked.array[mask.array == 0] == -1000)


@pytest.fixture(scope="module")
def lung_model(tmp_path_factory):
    """A tiny 3D U-Net trained for a few steps on the hand-made chest (1 right, 2 left)."""
    import torch

    from medtool.segmentation import SegmentOptions
    from medtool.train import BEST, TrainConfig, fit, make_task

    root = tmp_path_factory.mktemp("lung_model")
    volume, truth = chest()
    save_volume(volume, root / "images" / "chest.npy")
    save_volume(volume.with_array(truth.astype(np.uint8), units="label"), root / "masks" / "chest.npy")
    options = SegmentOptions(images=str(root / "images"), masks=str(root / "masks"), dim=3, patch=[16, 32, 32],
                             spacing=[8.0, 6.0, 6.0], width=8, depth=3, augment="none", pos_ratio=0.5,
                             val_fraction=0)
    fit(make_task("segment", options), TrainConfig(epochs=3, steps_per_epoch=8, batch_size=2, lr=3e-3),
        root / "run", device=torch.device("cpu"), progress=False)
    return root / "run" / BEST, volume


def test_model_method_runs_the_checkpoint_like_predict(cli, tmp_path, lung_model):
    import torch

    checkpoint, volume = lung_model
    save_volume(volume, tmp_path / "hu" / "chest.nii.gz")
    assert cli("predict", checkpoint, tmp_path / "hu", tmp_path / "pred", "--keep-largest", "1",
               "--device", "cpu").exit_code == 0
    expected = load_volume(tmp_path / "pred" / "chest.nii.gz").array
    assert set(np.unique(expected)) == {0, 1, 2}            # the model finds lungs of both sides
    result = cli("lungmask", tmp_path / "hu", tmp_path / "model", "--method", "model",
                 "--checkpoint", checkpoint, "--apply", "-1000", "--json")
    assert result.exit_code == 0, result.stderr
    mask = load_volume(tmp_path / "model" / "chest.nii.gz")
    assert mask.same_grid(volume) and np.array_equal(mask.array, expected)   # labels kept: lungs_1, lungs_2
    assert mask.meta["lungmask"]["method"] == "model"
    masked = load_volume(tmp_path / "model" / "chest_masked.nii.gz")
    assert np.all(masked.array[mask.array == 0] == -1000)
    # class names that say which lung is which are mapped: here label 1 is named the left one
    state = torch.load(checkpoint, weights_only=False)
    state["recipe"]["classes"] = ["background", "Left lung", "Right lung"]
    torch.save(state, tmp_path / "named.pt")
    assert cli("lungmask", tmp_path / "hu", tmp_path / "named", "--method", "model",
               "--checkpoint", tmp_path / "named.pt").exit_code == 0
    named = load_volume(tmp_path / "named" / "chest.nii.gz").array
    assert np.array_equal(named, np.choose(expected, [0, 2, 1]).astype(np.uint8))
    assert cli("lungmask", tmp_path / "hu", tmp_path / "bin", "--method", "model", "--checkpoint", checkpoint,
               "--binary").exit_code == 0
    assert np.array_equal(load_volume(tmp_path / "bin" / "chest.nii.gz").array, (expected > 0).astype(np.uint8))


def test_model_method_errors(cli, tmp_path):
    volume, _ = chest()
    save_volume(volume, tmp_path / "a.npy")
    result = cli("lungmask", tmp_path / "a.npy", tmp_path / "m.npy", "--method", "model")
    assert result.exit_code == 2 and "--checkpoint" in result.stderr
    result = cli("lungmask", tmp_path / "a.npy", tmp_path / "m.npy", "--checkpoint", tmp_path / "a.npy")
    assert result.exit_code == 2 and "--method model" in result.stderr
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    result = cli("lungmask", tmp_path / "a.npy", tmp_path / "m.npy", "--method", "model",
                 "--checkpoint", tmp_path / "bad.pt")
    assert result.exit_code != 0 and "bad.pt" in result.stderr and not (tmp_path / "m.npy").exists()


def test_a_scan_without_lung_is_one_line_and_exit_1(cli, tmp_path):
    """An abdomen-only scan: ``no lung in this scan`` for that file, the others go on."""
    from medtool.phantom.ct import Anatomy, make_ct
    from medtool.volume import Volume

    case = make_ct(np.random.default_rng(1), shape=64, anatomy=Anatomy(scan_range="abdomen"))
    abdomen = Volume(np.nan_to_num(case.hu, nan=-1000).astype(np.int16), spacing=case.spacing,
                     origin=case.origin, meta={"units": "HU", "modality": "CT"})
    save_volume(abdomen, tmp_path / "hu" / "abdomen.npy")
    save_volume(chest()[0], tmp_path / "hu" / "chest.npy")
    result = cli("lungmask", tmp_path / "hu", tmp_path / "masks")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "abdomen.npy: no lung in this scan" in lines[0]
    assert (tmp_path / "masks" / "chest.npy").is_file() and not (tmp_path / "masks" / "abdomen.npy").exists()
