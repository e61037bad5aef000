"""A CT NIfTI in HU written by another tool (RAS, float32, no medtool metadata) is CT in HU
to hu, lungmask and train alike; an image whose values cannot tell is refused with the option
that decides."""

from __future__ import annotations


import nibabel as nib
import numpy as np

from medtool.formats import load_volume, save_volume
from medtool.volume import to_nifti

from ..test_lungmask import chest


def _foreign(volume, path, dtype=np.float32):
    """What dcm2niix, SimpleITK or a Kaggle notebook writes: the array and the affine only."""
    data, affine = to_nifti(volume)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data, dtype=dtype), affine), path)
    return path


def test_hu_and_lungmask_take_a_foreign_hu_nifti_as_hu(cli, tmp_path):
    volume, truth = chest()
    source = _foreign(volume, tmp_path / "in" / "chest.nii.gz")
    assert "units" not in load_volume(source).meta
    result = cli("hu", tmp_path / "in", tmp_path / "hu")
    assert result.exit_code == 0, result.stderr
    hu = load_volume(next((tmp_path / "hu").iterdir()))
    assert hu.units == "HU"
    np.testing.assert_array_equal(hu.array, np.clip(volume.array, -1024, None))
    result = cli("lungmask", tmp_path / "in", tmp_path / "masks")
    assert result.exit_code == 0, result.stderr
    mask = load_volume(tmp_path / "masks" / "chest.nii.gz").array
    for value in (1, 2):
        both = np.sum((mask == value) & (truth == value))
        assert 2 * both / (np.sum(mask == value) + np.sum(truth == value)) > 0.95


def test_a_z_scored_image_is_not_taken_for_hu(cli, tmp_path):
    volume, _ = chest()
    array = volume.array.astype(np.float32)
    scored = volume.with_array((array - array.mean()) / array.std())
    _foreign(scored, tmp_path / "in" / "mri.nii.gz")
    for command in ("hu", "lungmask"):
        result = cli(command, tmp_path / "in", tmp_path / command)
        assert result.exit_code == 1
        line = " ".join(result.stderr.split())
        assert "mri.nii.gz" in line and "never as low as air" in line, line
    assert not (tmp_path / "hu").exists() or not any((tmp_path / "hu").iterdir())


def _segmentation_set(tmp_path, *, scale=1.0, offset=0.0):
    volume, truth = chest()
    for k in range(2):
        image = volume.with_array(np.roll(volume.array, 3 * k, axis=2).astype(np.float32) * scale + offset)
        _foreign(image, tmp_path / "images" / f"case{k}.nii.gz")
        save_volume(volume.with_array(np.roll(truth, 3 * k, axis=2).astype(np.uint8), units="label"),
                    tmp_path / "masks" / f"case{k}.nii.gz")


def _train(cli, tmp_path, *extra):
    return cli("train", "--task", "segment", "--images", tmp_path / "images", "--masks", tmp_path / "masks",
               "--dim", "2d", "--width", "4", "--depth", "2", "--epochs", "1", "--steps", "1",
               "--batch-size", "2", "--val-fraction", "0", "--out", tmp_path / "run", *extra)


def test_train_windows_a_foreign_hu_nifti_and_says_so(cli, tmp_path):
    _segmentation_set(tmp_path)
    result = _train(cli, tmp_path)
    assert result.exit_code == 0, result.stderr
    first = " ".join(result.stderr.split())
    assert "normalise ct window [-1000, 400] (CT in HU: no units in the file; values" in first
    from medtool.train import load_checkpoint

    recipe = load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]
    assert recipe["normalize"] == {"mode": "ct", "window": [-1000.0, 400.0]}
    assert "look like HU" in recipe["normalize_why"]


def test_train_refuses_values_that_cannot_tell_and_names_the_option(cli, tmp_path):
    _segmentation_set(tmp_path, offset=1024.0)          # stored values: all >= 0, no rescale
    result = _train(cli, tmp_path)
    assert result.exit_code != 0
    line = " ".join(result.stderr.split())
    assert "cannot tell how to normalise it" in line and "--normalize zscore" in line
    assert not (tmp_path / "run" / "last.pt").exists()
    given = _train(cli, tmp_path, "--normalize", "zscore", "--force")
    assert given.exit_code == 0, given.stderr
    assert "normalise zscore (given; over every voxel: " in " ".join(given.stderr.split())
