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


@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32", "float64"])
def test_a_volume_written_in_slabs_is_the_file_written_whole(tmp_path, dtype):
    """save_volume_slabs (voxels as they are read, a few slices at a time, one buffer reused)
    writes the same bytes as save_volume of the whole array; a wrong slab is refused and
    leaves nothing behind."""
    from medtool.formats import save_volume_slabs, writes_slabs

    volume = Volume(np.repeat(ARRAYS[dtype], 3, axis=0), spacing=(2.0, 0.7, 0.3),
                    origin=(1.5, -3.0, 7.25), meta={"units": "raw"},
                    direction=DIRECTIONS["oblique"])
    whole = save_volume(volume, tmp_path / "whole.nii")
    stand_in = Volume(np.broadcast_to(np.zeros((), volume.array.dtype), volume.shape),
                      volume.spacing, volume.origin, volume.direction, volume.meta)
    assert writes_slabs(tmp_path / "slabs.nii", volume.array.dtype)
    assert not writes_slabs(tmp_path / "slabs.nii.gz", volume.array.dtype)
    buffer = np.empty((2, *volume.shape[1:]), volume.array.dtype)

    def slabs():                                        # 2, 2, ..., then the rest
        for start in range(0, volume.shape[0], 2):
            part = volume.array[start:start + 2]
            buffer[:len(part)] = part
            yield buffer[:len(part)]

    save_volume_slabs(stand_in, tmp_path / "slabs.nii", slabs())
    assert (tmp_path / "slabs.nii").read_bytes() == whole.read_bytes()
    with pytest.raises(ValueError, match="slices written"):
        save_volume_slabs(stand_in, tmp_path / "short.nii", iter([volume.array[:1]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slabs.nii", "whole.nii"]
