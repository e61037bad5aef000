"""``medtool gradcam``: maps written on each input's grid (any format), PNG montages, layers
listed, batches that go on past a bad file, one-line errors."""

import json

import numpy as np
import pytest
import torch

from medtool.formats import load_volume, save_volume

from ..segdata import ball_case
from ..test_gradcam import segment_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "seg.pt"
    torch.save(segment_checkpoint(3), path)
    return path


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    image, _ = ball_case(1, shape=(8, 20, 16), spacing=(2.5, 0.9, 0.8), origin=(3.0, -7.0, 120.0))
    save_volume(image, folder / "a.nii.gz")
    save_volume(image.with_array(image.array[:, ::-1].copy()), folder / "sub" / "b.npy")
    return folder


def test_folder_to_maps_and_pngs(cli, checkpoint, inputs, tmp_path):
    out = tmp_path / "cam"
    result = cli("gradcam", checkpoint, inputs, out, "--png", "--class", "ball", "--suffix", "_cam", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["output"] for r in rows) == [str(out / "a_cam.nii.gz"), str(out / "sub" / "b_cam.npy")]
    for row in rows:
        source, cam = load_volume(row["input"]), load_volume(row["output"])
        assert cam.same_grid(source) and cam.array.dtype == np.float32
        assert cam.array.min() == 0.0 and cam.array.max() == 1.0          # normalised per case
        assert cam.meta["layer"] == row["layer"] == "decoder.1.conv2" and cam.meta["class"] == "ball"
        assert cam.history[-1]["method"] == "gradcam"
        png = row["png"]
        from matplotlib.image import imread

        picture = imread(png)
        assert picture.shape[0] > 100 and np.ptp(picture[..., 0] - picture[..., 2]) > 0.1   # coloured
    # existing outputs are kept without --force; --raw keeps the raw values
    again = cli("gradcam", checkpoint, inputs / "a.nii.gz", out / "a_cam.nii.gz")
    assert again.exit_code == 1 and "exists" in again.stderr
    raw = cli("gradcam", checkpoint, inputs / "a.nii.gz", tmp_path / "raw.npz", "--raw", "--method", "gradcam++")
    assert raw.exit_code == 0, raw.output
    values = load_volume(tmp_path / "raw.npz").array
    assert values.max() > 0 and not np.isclose(values.max(), 1.0)


def test_list_layers(cli, checkpoint):
    result = cli("gradcam", checkpoint, "--list-layers", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert listing["input_shape"] == [8, 16, 16] and listing["auto"] == "decoder.1.conv2"
    by_name = {layer["name"]: layer for layer in listing["layers"]}
    assert by_name["heads.0"] == {"name": "heads.0", "type": "Conv3d", "shape": [2, 8, 16, 16]}
    table = cli("gradcam", checkpoint, "--list-layers")
    assert "decoder.1.conv2 *" in table.stdout


def test_bad_file_in_a_batch_and_bad_options(cli, checkpoint, inputs, tmp_path):
    (inputs / "broken.npy").write_bytes(b"not a volume")
    result = cli("gradcam", checkpoint, inputs, tmp_path / "cam")
    assert result.exit_code == 1
    assert "broken.npy" in result.stderr and (tmp_path / "cam" / "a.nii.gz").exists()
    for args, text in ((("--class", "liver"), "--class liver"), (("--layer", "nope"), "--layer nope"),
                       (("--method", "scorecam"), "--method scorecam")):
        bad = cli("gradcam", checkpoint, inputs / "a.nii.gz", tmp_path / "x.nii.gz", *args)
        assert bad.exit_code == 2 and text in bad.stderr and "Traceback" not in bad.output
    missing = cli("gradcam", tmp_path / "none.pt", inputs, tmp_path / "cam2")
    assert missing.exit_code == 1 and "no such checkpoint" in missing.stderr


def test_gradcam_takes_the_inputs_named_as_in_training(cli, tmp_path):
    """A classifier trained on <case>_masked crops explains only those (not the other files of
    the folder) and names its maps <case><suffix>, as predict does."""
    import numpy as np

    from medtool.formats import load_volume, save_volume
    from tests.test_checkpoints import classify_inputs

    crops = classify_inputs(tmp_path / "crops")
    masked = tmp_path / "masked"
    masked.mkdir()
    for path in sorted(crops.glob("c*.npy")):
        volume = load_volume(path)
        save_volume(volume, masked / f"{path.stem}_masked.npy")
        save_volume(volume.with_array(np.zeros_like(volume.array)), masked / f"{path.stem}_lungs.npy")
    result = cli("train", "classify", "--images", masked, "--image-suffix", "_masked", "--labels", crops / "labels.csv",
                 "--model", "simple3d", "--width", "4", "--epochs", "1", "--normalize", "zscore", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    result = cli("gradcam", tmp_path / "run" / "last.pt", masked, tmp_path / "cam", "--suffix", "_cam")
    assert result.exit_code == 0, result.stderr
    assert "inputs named <case>_masked (as in training" in " ".join(result.stderr.split())
    assert sorted(p.name for p in (tmp_path / "cam").glob("*.npy")) == [f"c{i}_cam.npy" for i in range(6)]


def test_truth_masks_on_another_grid_give_the_inside_outside_ratio(cli, checkpoint, inputs, tmp_path):
    """--truth: the ratio of each map to its case's mask, brought onto the map's grid first."""
    from medtool.gradcam import inside_outside
    from medtool.resample import Grid, resample_to

    truth = tmp_path / "truth"
    image, mask = ball_case(1, shape=(8, 20, 16), spacing=(2.5, 0.9, 0.8), origin=(3.0, -7.0, 120.0))
    # a finer grid whose even voxels are the map's voxel centres: nearest lands back exactly
    fine = resample_to(mask, Grid(shape=(15, 39, 31), spacing=(1.25, 0.45, 0.4), origin=(3.0, -7.0, 120.0),
                                  direction=np.asarray(mask.direction)), mask=True)
    assert np.array_equal(fine.array[::2, ::2, ::2], mask.array)
    save_volume(fine, truth / "a_ball.nii.gz")
    result = cli("gradcam", checkpoint, inputs / "a.nii.gz", tmp_path / "cam", "--class", "ball",
                 "--truth", truth, "--truth-suffix", "_ball", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    cam = load_volume(row["output"]).array
    assert row["inside_outside"] == pytest.approx(inside_outside(cam, mask.array), rel=1e-3)
    table = cli("gradcam", checkpoint, inputs, tmp_path / "cam2", "--class", "ball", "--truth", truth,
                "--truth-suffix", "_ball")
    assert table.exit_code == 0, table.output
    assert "over 1 case with a truth region" in table.stdout and "inside/outside" in table.stdout
    assert "no truth mask b_ball" in table.stderr
