"""The brain MRI phantom on disk: the BraTS layout, one exact grid for the five files of a
case (as nibabel reads them), the label conventions, determinism across workers."""

import nibabel as nib
import numpy as np
import pytest

from medtool.errors import OutputExistsError, UsageError
from medtool.formats import load_volume
from medtool.phantom.brain import MODALITIES, make_brain
from medtool.phantom.brats import case_files, write_brain_dataset


@pytest.fixture(scope="module")
def brats_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("brats") / "data"
    summary = write_brain_dataset(out, cases=2, seed=4, shape=48, step={"command": "medtool phantom test"})
    return out, summary


def test_layout_and_summary(brats_dir):
    out, summary = brats_dir
    assert sorted(p.name for p in out.iterdir()) == ["brain_001", "brain_002"]
    for case in ("brain_001", "brain_002"):
        names = sorted(p.name for p in (out / case).iterdir())
        assert names == sorted(f"{case}_{m}.nii.gz" for m in (*MODALITIES, "seg"))
    assert not list(out.rglob(".*")) and not list(out.rglob("dataset.json"))
    assert summary["cases"] == 2 and summary["spacing_mm"] == [4.0] * 3 and summary["files"] == 10
    assert summary["convention"] == "BraTS 2015" and set(summary["voxels"]["brain_001"]) == {"1", "2", "3", "4"}


def test_five_files_share_one_exact_grid(brats_dir):
    out, _ = brats_dir
    files = case_files(out, "brain_001")
    images = {name: nib.load(path) for name, path in files.items()}
    reference = images["seg"]
    for name, image in images.items():
        assert image.shape == (48, 48, 48)
        assert np.array_equal(image.affine, reference.affine), name
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")          # voxel axes of an LPS stack
    assert np.allclose(np.abs(np.diag(reference.affine)[:3]), 4.0)
    origin = load_volume(files["seg"]).origin                           # LPS; the affine is RAS
    assert np.allclose(reference.affine[:3, 3], [-origin[0], -origin[1], origin[2]])
    volumes = {name: load_volume(path) for name, path in files.items()}
    assert all(v.same_grid(volumes["seg"], atol=0) and v.orientation == "LPS" for v in volumes.values())
    assert {v.array.dtype for n, v in volumes.items() if n != "seg"} == {np.dtype(np.int16)}
    assert volumes["seg"].array.dtype == np.uint8 and volumes["seg"].meta["units"] == "label"
    assert volumes["t1ce"].meta["modality"] == "MR" and volumes["t1ce"].meta["sequence"] == "T1c"


def test_files_hold_the_generated_case(brats_dir):
    """What is on disk is make_brain's case of the first child seed, seg in BraTS 2015 labels."""
    out, summary = brats_dir
    case = make_brain(np.random.default_rng(np.random.SeedSequence(4).spawn(2)[0]), shape=48)
    files = case_files(out, "brain_001")
    for name in MODALITIES:
        assert np.array_equal(load_volume(files[name]).array, case.images[name])
    seg = load_volume(files["seg"]).array
    assert np.array_equal(seg, case.seg("2015"))
    counts = np.bincount(seg.ravel(), minlength=5)
    assert {k: int(counts[int(k)]) for k in ("1", "2", "3", "4")} == summary["voxels"]["brain_001"]


def test_conventions_relabel_the_same_tumour(tmp_path, brats_dir):
    out, _ = brats_dir
    seg2015 = load_volume(case_files(out, "brain_001")["seg"]).array
    for convention, mapping in (("2017", {1: 1, 2: 2, 3: 1, 4: 4}), ("2023", {1: 1, 2: 2, 3: 1, 4: 3})):
        other = tmp_path / convention
        write_brain_dataset(other, cases=1, seed=4, shape=48, convention=convention)
        seg = load_volume(case_files(other, "brain_001")["seg"])
        lookup = np.zeros(5, np.uint8)
        for old, new in mapping.items():
            lookup[old] = new
        assert np.array_equal(seg.array, lookup[seg2015])
        assert seg.meta["convention"] == f"BraTS {convention}"


def test_workers_do_not_change_the_files(tmp_path, brats_dir):
    out, _ = brats_dir
    write_brain_dataset(tmp_path / "two", cases=2, seed=4, shape=48, workers=2)
    for case in ("brain_001", "brain_002"):
        for name, path in case_files(out, case).items():
            assert np.array_equal(load_volume(path).array, load_volume(case_files(tmp_path / "two", case)[name]).array)


def test_existing_cases_and_bad_options_are_refused_before_any_work(tmp_path):
    write_brain_dataset(tmp_path / "d", cases=1, seed=1, shape=32)
    with pytest.raises(OutputExistsError):
        write_brain_dataset(tmp_path / "d", cases=1, seed=2, shape=32)
    with pytest.raises(UsageError, match="2015, 2017, 2023"):
        write_brain_dataset(tmp_path / "e", cases=1, convention="2021")
    with pytest.raises(UsageError, match="at least 32"):
        write_brain_dataset(tmp_path / "e", cases=1, shape=24)
    assert not (tmp_path / "e").exists()
