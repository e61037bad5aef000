import json
from pathlib import Path

import numpy as np

from medtool.formats import save_volume


def test_info_table(cli, tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "ct.nii.gz")
    result = cli("info", tmp_path / "ct.nii.gz")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "5 x 7 x 9" in out and "int16" in out and oblique_volume.orientation in out
    assert "medtool test" in out and "HU" in out   # history and units


def test_info_json(cli, tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "a.npy")
    save_volume(oblique_volume.with_array(oblique_volume.array * 0 + 7), tmp_path / "b.npz")
    result = cli("info", "--json", tmp_path)         # a folder is walked
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["a.npy", "b.npz"]
    a, b = rows
    assert a["shape"] == [5, 7, 9] and a["spacing"] == [2.5, 0.703125, 0.9]
    assert a["min"] == int(oblique_volume.array.min()) and a["max"] == int(oblique_volume.array.max())
    assert b["min"] == b["max"] == 7
    assert a["orientation"] == oblique_volume.orientation and a["units"] == "HU"
    assert a["history"][0]["command"] == "medtool test"


def test_info_on_phantom_truth(cli, phantom_dir):
    result = cli("info", "--json", phantom_dir / "truth" / "case_001_lungs.nii.gz")
    row = json.loads(result.stdout)[0]
    assert row["orientation"] == "LPS" and row["min"] == 0 and row["max"] == 2
    assert row["history"][0]["command"] == "medtool phantom test"


def _one_error_line(result, name):
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert name in errors[0]
    assert "Traceback" not in result.stderr
    return errors[0]


def test_missing_file(cli, tmp_path):
    result = cli("info", tmp_path / "nope.nii.gz")
    assert result.exit_code == 1
    assert "no such file" in _one_error_line(result, "nope.nii.gz")


def test_not_an_image(cli, tmp_path):
    (tmp_path / "notes.nii.gz").write_bytes(b"hello, not gzip")
    (tmp_path / "readme.txt").write_text("hi")
    result = cli("info", tmp_path / "notes.nii.gz")
    assert result.exit_code == 1
    assert "cannot read .nii.gz" in _one_error_line(result, "notes.nii.gz")
    result = cli("info", tmp_path / "readme.txt")
    assert "not a volume or DICOM file" in _one_error_line(result, "readme.txt")


def test_truncated_npy(cli, tmp_path, oblique_volume):
    path = save_volume(oblique_volume, tmp_path / "v.npy")
    path.write_bytes(path.read_bytes()[:100])
    result = cli("info", path)
    assert result.exit_code == 1
    assert "truncated" in _one_error_line(result, "v.npy")


def test_sidecar_that_does_not_match(cli, tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "v.npy")
    np.save(tmp_path / "v.npy", np.zeros((3, 3, 3), np.int16))
    result = cli("info", tmp_path / "v.npy")
    assert result.exit_code == 1
    assert "[5, 7, 9]" in _one_error_line(result, "v.json")


def test_batch_goes_on_past_a_bad_file(cli, tmp_path, oblique_volume):
    save_volume(oblique_volume, tmp_path / "good.nii")
    (tmp_path / "bad.nii").write_bytes(b"\0" * 10)
    result = cli("info", "--json", tmp_path / "bad.nii", tmp_path / "good.nii")
    assert result.exit_code == 1
    assert [r["file"].rsplit("/", 1)[1] for r in json.loads(result.stdout)] == ["good.nii"]
    _one_error_line(result, "bad.nii")
    assert "1 of 2 inputs failed" in result.stderr


def test_folder_without_volumes_is_an_error(cli, tmp_path):
    (tmp_path / "IM-0001.dcm").write_bytes(b"\0" * 10)
    result = cli("info", tmp_path)
    assert result.exit_code == 1
    assert "no volume files or DICOM image series found" in _one_error_line(result, str(tmp_path))


def test_dicom_folders_give_one_row_per_series_from_the_headers(cli, phantom_dir):
    """What dicom2npy would write: its names, planned shape, spacing and orientation."""
    result = cli("info", "--json", phantom_dir / "ct", phantom_dir / "cxr")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    converted = cli("dicom2npy", phantom_dir / "ct", phantom_dir.parent / "info_volumes",
                    "--json")
    written = {Path(w["output"]).stem: w for w in json.loads(converted.stdout)["written"]}
    ct = {row["series"]: row for row in rows if row["modality"] == "CT"}
    assert set(ct) == set(written) and len(ct) == 4
    for name, row in ct.items():
        assert row["shape"] == written[name]["shape"]
        assert row["orientation"] == written[name]["orientation"] == "LPS"
        np.testing.assert_allclose(row["spacing"], written[name]["spacing"], atol=1e-6)
        assert row["files"] == written[name]["files"]
    assert sum(row["modality"] == "CR" for row in rows) == 4          # the X-rays
    table = cli("info", phantom_dir / "ct")
    assert "DICOM series" in table.stdout and "case_001" in table.stdout
