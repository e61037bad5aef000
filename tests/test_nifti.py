"""medtool.nifti: a .nii written without nibabel is byte for byte the file nibabel writes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medtool.formats import load_volume, save_volume
from medtool.volume import Volume

from .conftest import rotation

DIRECTIONS = {
    "axial": None,
    "oblique": rotation("x", 20.0) @ rotation("z", 35.0),
    "flipped": np.diag([1.0, -1.0, 1.0]),
    "reversed": np.diag([-1.0, -1.0, -1.0]),
    "oblique left-handed": rotation("y", 50.0) @ np.diag([1.0, 1.0, -1.0]),
}
ARRAYS = {
    "int16": np.arange(60, dtype=np.int16).reshape(3, 4, 5) - 30,
    "uint16": np.arange(24, dtype=np.uint16).reshape(2, 3, 4) * 1000,
    "float32": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    "float64": np.linspace(-1, 1, 24).reshape(2, 3, 4),
    "bool": np.arange(24).reshape(2, 3, 4) % 3 == 0,
}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("dtype", ARRAYS)
def test_nii_bytes_are_nibabels(tmp_path, dtype, direction):
    matrix = DIRECTIONS[direction]
    volume = Volume(ARRAYS[dtype], spacing=(2.0, 0.7, 0.3), origin=(1.5, -3.0, 7.25),
                    meta={"units": "raw"}, **({} if matrix is None else {"direction": matrix}))
    ours = save_volume(volume, tmp_path / "ours.nii")
    theirs = save_volume(volume, tmp_path / "theirs.nii.gz")        # written by nibabel
    assert ours.read_bytes() == gzip.decompress(theirs.read_bytes())
    back = load_volume(ours)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.direction, volume.direction)


def test_2d_image_bytes_are_nibabels(tmp_path):
    volume = Volume(np.arange(20, dtype=np.float32).reshape(4, 5), spacing=(1.0, 0.5),
                    meta={"units": "raw"})
    ours = save_volume(volume, tmp_path / "ours.nii")
    theirs = save_volume(volume, tmp_path / "theirs.nii.gz")
    assert ours.read_bytes() == gzip.decompress(theirs.read_bytes())
