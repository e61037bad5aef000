import json
import logging

import nibabel as nib
import numpy as np
import pytest

from medtool import formats
from medtool.errors import InputError, OutputExistsError, UsageError
from medtool.formats import load_volume, save_volume
from medtool.volume import Volume

SUFFIXES = [".npy", ".npz", ".nii", ".nii.gz"]


def assert_same(a: Volume, b: Volume):
    assert a.array.dtype == b.array.dtype
    assert np.array_equal(a.array, b.array)
    assert a.spacing == b.spacing            # exact, not approximately
    assert a.origin == b.origin
    assert np.array_equal(a.direction, b.direction)
    assert a.meta == b.meta
    assert a.history == b.history


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "float64", "bool", "int32"])
def test_exact_round_trip(tmp_path, oblique_volume, suffix, dtype):
    array = oblique_volume.array
    array = array > 0 if dtype == "bool" else array.astype(dtype)
    if dtype.startswith("float"):
        array = array / np.asarray(7.0, dtype)
    volume = oblique_volume.with_array(array)
    path = save_volume(volume, tmp_path / f"v{suffix}")
    assert_same(load_volume(path), volume)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_2d(tmp_path, suffix):
    image = Volume(np.arange(12, dtype=np.uint8).reshape(3, 4), spacing=(0.139, 0.171),
                   origin=(1.5, -2.25, 0.0), meta={"modality": "CR"})
    assert_same(load_volume(save_volume(image, tmp_path / f"x{suffix}")), image)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_header_is_right_for_other_tools(tmp_path, oblique_volume, suffix):
    path = save_volume(oblique_volume, tmp_path / f"v{suffix}")
    image = nib.load(path)
    assert image.header["sform_code"] == 1 and image.header["qform_code"] == 1
    assert np.array_equal(np.asanyarray(image.dataobj), oblique_volume.array.T)
    assert "".join(nib.aff2axcodes(image.affine)) == oblique_volume.orientation
    # every voxel lands where medtool says it is (RAS = LPS with x, y negated)
    k, j, i = np.indices(oblique_volume.shape).reshape(3, -1)
    ras = nib.affines.apply_affine(image.affine, np.column_stack([i, j, k]))
    lps = oblique_volume.world(np.column_stack([k, j, i]))
    assert np.allclose(ras * [-1, -1, 1], lps, atol=1e-4)
    # the qform (what ITK-SNAP and SimpleITK read) agrees with the sform
    assert np.allclose(image.get_qform(), image.get_sform(), atol=1e-5)


def test_foreign_nifti_without_medtool_header(tmp_path):
    affine = np.array([[-0.8, 0, 0, 100], [0, 0.8, 0, -120], [0, 0, 3.0, -50], [0, 0, 0, 1]])
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)   # (i, j, k)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "f.nii.gz")
    volume = load_volume(tmp_path / "f.nii.gz")
    assert volume.shape == (4, 3, 2)
    assert np.allclose(volume.spacing, (3.0, 0.8, 0.8))
    assert np.allclose(volume.origin, (-100, 120, -50))
    assert volume.orientation == "LAS"
    assert volume.array[3, 2, 1] == data[1, 2, 3]


def test_scaled_nifti_gives_scaled_values(tmp_path):
    nib.save(nib.Nifti1Image(np.array([[[0, 10]]], dtype=np.int16), np.eye(4)), tmp_path / "s.nii")
    header = nib.load(tmp_path / "s.nii").header.copy()
    header["scl_slope"], header["scl_inter"] = 2.0, -1024.0   # as dcm2niix writes CT
    with open(tmp_path / "s.nii", "r+b") as handle:
        header.write_to(handle)
    volume = load_volume(tmp_path / "s.nii")
    assert volume.array.dtype == np.float32
    assert volume.array.ravel().tolist() == [-1024.0, -1004.0]  # 2 * [0, 10] - 1024


def test_nifti_edited_elsewhere_trusts_the_header(tmp_path, oblique_volume, caplog):
    path = save_volume(oblique_volume, tmp_path / "v.nii.gz")
    image = nib.load(path)
    moved = image.affine.copy()
    moved[:3, 3] += [5.0, 0.0, 0.0]
    image.set_sform(moved, code=1)
    image.set_qform(moved, code=1)
    nib.save(image, tmp_path / "moved.nii.gz")   # the medtool extension rides along, now stale
    with caplog.at_level(logging.WARNING):
        volume = load_volume(tmp_path / "moved.nii.gz")
    assert np.allclose(volume.origin, np.asarray(oblique_volume.origin) + [-5.0, 0, 0], atol=1e-3)
    assert "changed by another tool" in caplog.text


def test_npy_memory_map(tmp_path, oblique_volume):
    path = save_volume(oblique_volume, tmp_path / "v.npy")
    volume = load_volume(path, mmap=True)
    assert isinstance(volume.array, np.memmap)
    assert np.array_equal(volume.array, oblique_volume.array)


def test_sidecar_is_readable_json(tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "v.npy")
    header = json.loads((tmp_path / "v.json").read_text())
    assert header["spacing"] == [2.5, 0.703125, 0.9]
    assert header["meta"]["units"] == "HU" and header["history"][0]["command"] == "medtool test"


def test_existing_output_needs_force(tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "v.npy")
    (tmp_path / "v.npy").unlink()      # the sidecar alone still counts as the output
    with pytest.raises(OutputExistsError, match="--force"):
        save_volume(oblique_volume, tmp_path / "v.npy")
    save_volume(oblique_volume, tmp_path / "v.npy", force=True)
    assert (tmp_path / "v.npy").exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_write_leaves_nothing_behind(tmp_path, oblique_volume, monkeypatch, suffix):
    bad = oblique_volume.with_array(oblique_volume.array)
    bad.meta["not_json"] = object()          # fails while the header is serialised
    with pytest.raises(TypeError):
        save_volume(bad, tmp_path / f"v{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, oblique_volume, monkeypatch):
    path = save_volume(oblique_volume, tmp_path / "v.nii.gz")
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("nibabel.save", explode)
    with pytest.raises(OSError):
        save_volume(oblique_volume.with_array(oblique_volume.array * 0), path, force=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]


def test_unknown_output_suffix_is_a_usage_error(tmp_path, oblique_volume):
    with pytest.raises(UsageError, match="end the name"):
        save_volume(oblique_volume, tmp_path / "v.tiff")


# --- bad input: one clear message naming the file ------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file") as error:
        load_volume(tmp_path / "nope.nii.gz")
    assert error.value.path.endswith("nope.nii.gz")


def test_not_a_volume_suffix(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a volume file"):
        load_volume(tmp_path / "notes.txt")


def test_truncated_npy(tmp_path, oblique_volume):
    path = save_volume(oblique_volume, tmp_path / "v.npy")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(InputError, match="truncated") as error:
        load_volume(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".npz"])
def test_garbage_file(tmp_path, suffix):
    path = tmp_path / f"g{suffix}"
    path.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(InputError, match=f"cannot read {suffix.replace('.', '[.]')}"):
        load_volume(path)


def test_sidecar_that_does_not_match(tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "v.npy")
    np.save(tmp_path / "v.npy", np.zeros((2, 2, 2), np.int16))
    with pytest.raises(InputError, match=r"shape \[5, 7, 9\] but the array is \[2, 2, 2\]"):
        load_volume(tmp_path / "v.npy")


def test_sidecar_with_other_dtype(tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "v.npy")
    np.save(tmp_path / "v.npy", oblique_volume.array.astype(np.float32))
    with pytest.raises(InputError, match="dtype int16 but the array is float32"):
        load_volume(tmp_path / "v.npy")


def test_sidecar_not_json(tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "v.npy")
    (tmp_path / "v.json").write_text("{spacing: oops")
    with pytest.raises(InputError, match="not valid JSON") as error:
        load_volume(tmp_path / "v.npy")
    assert error.value.path.endswith("v.json")


def test_sidecar_with_bad_geometry(tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "v.npy")
    header = json.loads((tmp_path / "v.json").read_text())
    header["spacing"] = [1.0, -1.0, 1.0]
    (tmp_path / "v.json").write_text(json.dumps(header))
    with pytest.raises(InputError, match="bad geometry"):
        load_volume(tmp_path / "v.npy")


def test_npy_without_sidecar_assumes_unit_geometry(tmp_path, caplog):
    np.save(tmp_path / "plain.npy", np.ones((2, 3, 4), np.float32))
    with caplog.at_level(logging.WARNING):
        volume = load_volume(tmp_path / "plain.npy")
    assert volume.spacing == (1.0, 1.0, 1.0) and volume.meta["geometry"] == "assumed"
    assert "no sidecar" in caplog.text


def test_npz_without_array_key(tmp_path):
    np.savez(tmp_path / "x.npz", image=np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="no 'array' entry"):
        load_volume(tmp_path / "x.npz")


def test_4d_nifti_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(InputError, match="4D NIfTI"):
        load_volume(tmp_path / "t.nii")


def test_format_constants_are_consistent():
    assert formats.FORMAT_VERSION == 1
