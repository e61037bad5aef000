"""``medtool attach`` and seed S2's workflow from an LCTSC coursework export: Images/Case_NNN
(DICOM, shuffled file numbers, PHI) and Segmentations/Case_NNN.npz (one array under 'Masks',
rows flipped against the DICOM, no geometry)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medtool.formats import load_volume, save_volume
from medtool.volume import Volume


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def lctsc(tmp_path_factory) -> Path:
    """Six phantom cases laid out as the coursework export is."""
    from medtool.phantom import write_dataset

    root = tmp_path_factory.mktemp("lctsc")
    write_dataset(root / "phantom", cases=6, seed=43, shape=48, cxr=0)
    export = root / "export"
    (export / "Segmentations").mkdir(parents=True)
    for number, case in enumerate(sorted(p.name for p in (root / "phantom" / "ct").iterdir())):
        name = f"Case_{number:03d}"
        shutil.copytree(root / "phantom" / "ct" / case, export / "Images" / name)
        truth = load_volume(root / "phantom" / "truth" / f"{case}_lungs.nii.gz")
        np.savez_compressed(export / "Segmentations" / f"{name}.npz", Masks=truth.array[:, ::-1, :])
        save_volume(truth, root / "truth" / f"{name}_lungs.nii.gz")
    return root


def test_s2_from_an_lctsc_export_with_no_line_of_python(cli, tmp_path, lctsc):
    export, truth = lctsc / "export", lctsc / "truth"
    assert cli("dicom2npy", export / "Images", tmp_path / "raw").exit_code == 0
    assert cli("hu", tmp_path / "raw", tmp_path / "hu").exit_code == 0
    result = cli("attach", export / "Segmentations", tmp_path / "masks", "--like", tmp_path / "hu",
                 "--key", "Masks", "--flip", "y", "--suffix", "_lungs")
    assert result.exit_code == 0, result.stderr
    assert "warning:" not in result.stderr
    for number in range(6):
        attached = load_volume(tmp_path / "masks" / f"Case_{number:03d}_lungs.npy")
        expected = load_volume(truth / f"Case_{number:03d}_lungs.nii.gz")
        assert attached.same_grid(expected) and attached.units == "label"
        np.testing.assert_array_equal(attached.array, expected.array)

    result = cli("folds", tmp_path / "hu", tmp_path / "folds.csv", "--k", "2", "--test", "0.34")
    assert result.exit_code == 0, result.stderr
    test = sorted(r["case_id"] for r in _rows(tmp_path / "folds.csv") if r["fold"] == "test")
    assert len(test) == 2
    result = cli("train", "--task", "segment", "--images", tmp_path / "hu", "--masks", tmp_path / "masks",
                 "--mask-suffix", "_lungs", "--folds", tmp_path / "folds.csv", "--fold", "0", "--dim", "2d",
                 "--width", "4", "--depth", "2", "--epochs", "1", "--steps", "1", "--batch-size", "2",
                 "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    result = cli("predict", tmp_path / "run" / "last.pt", tmp_path / "hu", tmp_path / "pred", "--suffix",
                 "_lungs", "--folds", tmp_path / "folds.csv", "--fold", "test")
    assert result.exit_code == 0, result.stderr
    result = cli("score", "--truth", tmp_path / "masks", "--suffix", "_lungs", tmp_path / "pred",
                 "--metric", "dice", "--folds", tmp_path / "folds.csv", "--fold", "test", "--json",
                 "--per-case", tmp_path / "per_case.csv")
    assert result.exit_code == 0, result.stderr
    board = json.loads(result.stdout)["leaderboard"][0]
    assert board["cases"] == 2 and board["missing"] == []
    assert sorted({r["case_id"] for r in _rows(tmp_path / "per_case.csv")}) == test


def test_the_audit_names_the_flip_a_mask_needs(cli, tmp_path, lctsc):
    export = lctsc / "export"
    assert cli("dicom2npy", export / "Images" / "Case_000", tmp_path / "hu" / "Case_000.npy", "--hu").exit_code == 0
    result = cli("attach", export / "Segmentations" / "Case_000.npz", tmp_path / "masks", "--like",
                 tmp_path / "hu", "--key", "Masks")
    assert result.exit_code == 0, result.stderr
    line = " ".join(result.stderr.split())
    assert "warning:" in line and "fits the image better flipped along y" in line
    flipped = cli("attach", export / "Segmentations" / "Case_000.npz", tmp_path / "ok", "--like",
                  tmp_path / "hu", "--key", "Masks", "--flip", "y")
    assert flipped.exit_code == 0 and "warning:" not in flipped.stderr


def test_attach_errors_are_one_line_and_write_nothing(cli, tmp_path):
    image = Volume(np.zeros((4, 6, 8), np.int16), spacing=(2.0, 1.0, 1.0), origin=(1.0, 2.0, 3.0))
    save_volume(image, tmp_path / "img" / "a.nii.gz")
    (tmp_path / "src").mkdir()
    np.savez(tmp_path / "src" / "a.npz", Masks=np.zeros((8, 6, 4), np.uint8), Other=np.zeros(3))
    result = cli("attach", tmp_path / "src", tmp_path / "out", "--like", tmp_path / "img")
    assert result.exit_code == 1 and "holds 2 arrays (Masks, Other)" in result.stderr and "--key" in result.stderr
    result = cli("attach", tmp_path / "src", tmp_path / "out", "--like", tmp_path / "img", "--key", "Masks")
    line = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "shape [8, 6, 4] is not the image's [4, 6, 8]" in line and "--axes" in line
    result = cli("attach", tmp_path / "src", tmp_path / "out", "--like", tmp_path / "img", "--key", "Masks",
                 "--axes", "xyz")
    assert result.exit_code == 0, result.stderr
    out = load_volume(tmp_path / "out" / "a.nii.gz")
    assert out.same_grid(image) and out.array.dtype == np.uint8
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["a.npz"]     # input untouched
    bad = cli("attach", tmp_path / "src", tmp_path / "o2", "--like", tmp_path / "img", "--key", "Masks",
              "--flip", "w")
    assert bad.exit_code == 2 and "--flip w" in bad.stderr and not (tmp_path / "o2").exists()


def test_nothing_advises_what_destroys_a_mask_without_geometry(cli, tmp_path):
    """resample --like on a bare array would move it off its anatomy (11,803 -> 33 voxels on a
    real LCTSC mask): it is refused, and train's grid error advises attach instead."""
    image = Volume(np.full((6, 16, 16), -1000, np.int16), spacing=(3.0, 0.7, 0.7), origin=(-5.0, -5.0, -90.0),
                   meta={"units": "HU"})
    image.array[:, 4:12, 4:12] = 40
    save_volume(image, tmp_path / "images" / "a.nii.gz")
    (tmp_path / "masks").mkdir()
    bare = (image.array > 0).astype(np.uint8)
    np.save(tmp_path / "masks" / "a.npy", bare)                       # no sidecar: no geometry
    result = cli("resample", tmp_path / "masks" / "a.npy", tmp_path / "moved.npy", "--like",
                 tmp_path / "images" / "a.nii.gz")
    line = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "has no geometry" in line and "medtool attach" in line
    assert not (tmp_path / "moved.npy").exists()
    result = cli("train", "--task", "segment", "--images", tmp_path / "images", "--masks", tmp_path / "masks",
                 "--dim", "2d", "--epochs", "1", "--steps", "1", "--out", tmp_path / "run")
    line = " ".join(result.stderr.split())
    assert result.exit_code != 0 and "not on the grid of its image" in line
    assert "medtool attach" in line and "resample" not in line.split("not on the grid")[1]
