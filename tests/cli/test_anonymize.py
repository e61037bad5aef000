"""``medtool anonymize`` from the command line, and its output read by the peers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtool.formats import load_volume


@pytest.fixture(scope="module")
def ct_case(phantom_dir, tmp_path_factory) -> Path:
    """One phantom CT series copied (tests may write beside it)."""
    root = tmp_path_factory.mktemp("cli_anon") / "in"
    shutil.copytree(phantom_dir / "ct" / "case_003", root / "case_003")
    return root


@pytest.fixture(scope="module")
def anonymized(ct_case, tmp_path_factory):
    from typer.testing import CliRunner

    from medtool.cli import app

    key = tmp_path_factory.mktemp("key") / "site.key"
    key.write_text("a secret\n")
    out = ct_case.parent / "out"
    result = CliRunner().invoke(app, ["anonymize", str(ct_case), str(out), "--key-file", str(key),
                                      "--date-shift", "--json", "-j", "2"])
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_writes_a_pseudonymous_tree_and_json(ct_case, anonymized):
    """<pseudonym>/ST-<study>/SE<number>-<modality>-<series>/IM-<instance>.dcm, no input name."""
    out, report = anonymized
    sources = sorted(ct_case.rglob("*.dcm"))
    outputs = sorted(Path(w["output"]).relative_to(out) for w in report["written"])
    assert len(outputs) == len(sources) == 39
    first = pydicom.dcmread(out / outputs[0])
    folder = Path(first.PatientID, *outputs[0].parts[1:3])
    assert {p.parent for p in outputs} == {folder}          # one series, one folder
    assert folder.parts[1].startswith("ST-")
    assert folder.parts[2].startswith(f"SE{int(first.SeriesNumber):04d}-CT-")
    numbers = sorted(pydicom.dcmread(out / p).InstanceNumber for p in outputs)
    assert [p.name for p in outputs] == [f"IM-{n:04d}.dcm" for n in numbers]
    assert not any("case_003" in str(p) for p in outputs)
    assert report["failed"] == [] and report["refused_burned_in"] == []
    assert all(w["removed"] > 10 for w in report["written"])


def test_dicom2npy_gives_the_same_volume(cli, ct_case, anonymized, tmp_path):
    out, _ = anonymized
    assert cli("dicom2npy", ct_case, tmp_path / "a").exit_code == 0
    assert cli("dicom2npy", out, tmp_path / "b").exit_code == 0
    a = load_volume(tmp_path / "a" / "case_003.npy")
    converted = sorted((tmp_path / "b").rglob("*.npy"))
    assert len(converted) == 1 and "case_003" not in str(converted[0])
    b = load_volume(converted[0])
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.spacing, b.spacing)
    np.testing.assert_array_equal(a.origin, b.origin)
    np.testing.assert_array_equal(a.direction, b.direction)
    assert a.meta["dicom"]["series_uid"] != b.meta["dicom"]["series_uid"]
    assert b.meta["dicom"]["series_uid"].startswith("2.25.") and b.meta["dicom"]["files"] == 39


def test_check_is_clean_on_output_and_dirty_on_input(cli, ct_case, anonymized):
    out, _ = anonymized
    clean = cli("anonymize", "--check", out)
    assert clean.exit_code == 0 and clean.stdout == "" and "clean" in clean.stderr
    one = sorted(ct_case.rglob("*.dcm"))[0]
    dirty = cli("anonymize", "--check", one, "--json")
    assert dirty.exit_code == 1
    found = json.loads(dirty.stdout)
    assert found["dirty_files"] == [str(one)]
    assert {"(0010,0010)", "(0010,0030)", "(0009,1001)", "(0020,000E)"} <= {
        f["tag"] for f in found["findings"]}


def test_peers_read_the_output(anonymized, tmp_path, dcm2niix):
    out, _ = anonymized
    dcmdump = shutil.which("dcmdump")
    first = sorted(out.rglob("*.dcm"))[0]
    if dcmdump is not None:
        dumped = subprocess.run([dcmdump, "-E", str(first)], capture_output=True, text=True)
        assert dumped.returncode == 0 and "E:" not in dumped.stderr, dumped.stderr
        assert "(0012,0062) CS [YES]" in dumped.stdout
    converted = subprocess.run([dcm2niix, "-z", "n", "-o", str(tmp_path), "-f", "x",
                                str(first.parent)], capture_output=True, text=True)
    assert converted.returncode == 0, converted.stdout + converted.stderr
    assert (tmp_path / "x.nii").exists()


def test_usage_errors_and_warnings(cli, ct_case, tmp_path):
    assert cli("anonymize", ct_case).exit_code == 2                  # no output folder
    inside = cli("anonymize", ct_case, ct_case / "out", "--salt", "s")
    assert inside.exit_code == 2 and "inside the input folder" in inside.stderr
    both = cli("anonymize", ct_case, tmp_path / "o", "--date-shift", "--keep-dates", "--salt", "s")
    assert both.exit_code == 2 and "exclude each other" in both.stderr
    bad = cli("anonymize", ct_case, tmp_path / "o", "--keep-private", "ACME:0010,01")
    assert bad.exit_code == 2 and "odd group" in bad.stderr
    random = cli("anonymize", ct_case, tmp_path / "r", "--write-map", tmp_path / "map.csv")
    assert random.exit_code == 0
    assert "random salt" in random.stderr and "identifying" in random.stderr
    rows = (tmp_path / "map.csv").read_text().splitlines()
    assert rows[0] == "patient_id,pseudonym,date_shift_days" and len(rows) == 2
    again = cli("anonymize", ct_case, tmp_path / "r", "--salt", "s")
    assert again.exit_code == 0                     # another salt: another pseudonym's folder
    twice = cli("anonymize", ct_case, tmp_path / "r", "--salt", "s")
    assert twice.exit_code == 1 and "--force" in twice.stderr      # one rule: exit 1


def test_bad_file_gets_one_line_and_in_place_rewrites(cli, tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "a.dcm")
    (folder / "b.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    original = pydicom.dcmread(folder / "a.dcm")
    result = cli("anonymize", folder, "--in-place", "--salt", "s")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {folder / 'b.dcm'}: damaged or truncated")
    rewritten = pydicom.dcmread(folder / "a.dcm")
    assert rewritten.PatientIdentityRemoved == "YES"
    assert rewritten.PatientName != original.PatientName
    assert rewritten.PixelData == original.PixelData
    assert sorted(p.name for p in folder.iterdir()) == ["a.dcm", "b.dcm"]


def test_help_has_an_example(cli):
    result = cli("anonymize", "--help")
    assert result.exit_code == 0
    assert "medtool anonymize data/ct anon/" in result.stdout and "--check" in result.stdout


def test_help_paragraphs_wrap_cleanly_at_80_columns(runner, monkeypatch):
    """No hard line break inside a paragraph: rich keeps them, so at 80 columns they used to
    leave a short line in mid-sentence ("2.25.<HMAC-SHA256 of the" / "salt and the UID>")."""
    from medtool.cli import app

    monkeypatch.setenv("COLUMNS", "80")
    text = runner.invoke(app, ["anonymize", "--help"]).stdout
    lines = [line.strip() for line in text.split("╭")[0].splitlines()[2:]]   # the description
    assert max(len(line) for line in lines) <= 80
    assert any("2.25.<HMAC-SHA256 of the salt and the UID>" in line for line in lines)
    examples = lines.index("Examples:")
    for line, following in zip(lines[:examples], lines[1:examples]):
        if line and following:                       # a line inside a paragraph fills the width
            assert len(line) > 60, f"short line inside a paragraph: {line!r}"


def test_many_files_run_on_every_core_unless_workers_is_given(cli, tmp_path, monkeypatch):
    """Left to choose, a batch of many files runs one process per core and says so; a given
    --workers (even 1) is obeyed silently. The outputs are the same either way."""
    from pydicom.data import get_testdata_file

    from medtool import batch

    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)
    source = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(batch.AUTO_PARALLEL_ITEMS):
        (inputs / f"slice{k:03d}.dcm").write_bytes(source)
    chosen = cli("anonymize", inputs, tmp_path / "auto", "--salt", "s")
    assert chosen.exit_code == 0, chosen.stderr
    assert "note: 2 worker processes (one per core" in chosen.stderr
    given = cli("anonymize", inputs, tmp_path / "one", "--salt", "s", "--workers", "1")
    assert given.exit_code == 0 and "worker processes" not in given.stderr
    names = lambda root: sorted(p.relative_to(root) for p in root.rglob("*.dcm"))  # noqa: E731
    assert len(names(tmp_path / "auto")) == batch.AUTO_PARALLEL_ITEMS
    assert names(tmp_path / "auto") == names(tmp_path / "one")
    assert all((tmp_path / "auto" / n).read_bytes() == (tmp_path / "one" / n).read_bytes()
               for n in names(tmp_path / "one"))
