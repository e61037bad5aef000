"""Identity through side doors: the preamble, attributes nobody knows, file and folder names,
links in place and links inside the output folder, and checking nothing.

Each carrier is planted in a file made from pydicom's CT_small, the raw output bytes and the
output paths are grepped for it, and ``--check`` is shown to catch it planted by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement

from medtool.anonymize import PREAMBLE_BYTES, Settings, anonymize, check

SALT = b"side-door-salt"
NAME, FAMILY, GIVEN = "MULLER^AHMED^O", "MULLER", "AHMED"
MRN, BIRTH = "MRN4845069", "19500101"
PREAMBLE = f"PATIENT {NAME} {MRN} DOB {BIRTH}".encode().ljust(PREAMBLE_BYTES, b" ")
#: (0010,1041) is not in the data dictionary (Patient's Address is (0010,1040)).
UNKNOWN_TAG, ADDRESS = 0x00101041, "170 STATION ROAD, SPRINGFIELD"
IDENTITY = [FAMILY, GIVEN, MRN, BIRTH, "STATION ROAD", "SPRINGFIELD"]


def _carrier(path: Path, *, preamble: bytes | None = PREAMBLE, unknown: bool = True) -> Path:
    """CT_small as patient MULLER^AHMED^O with the preamble and the unknown attribute planted."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, MRN, BIRTH
    if unknown:
        ds.add(DataElement(UNKNOWN_TAG, "LO", ADDRESS))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    if preamble is not None:
        data = bytearray(path.read_bytes())
        data[:PREAMBLE_BYTES] = preamble
        path.write_bytes(bytes(data))
    return path


def _leaks(root: Path) -> list[str]:
    """Identity found in the bytes or the relative paths of every file under ``root``."""
    found = []
    for path in root.rglob("*"):
        relative = str(path.relative_to(root)).upper()
        found += [f"{path}: name holds {v}" for v in IDENTITY if v in relative]
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: bytes hold {v}" for v in IDENTITY if v.encode() in data]
    return found


@pytest.fixture
def patient_tree(tmp_path) -> Path:
    """``MRN4845069_MULLER^AHMED/MULLER_AHMED_19500101.dcm``, every carrier planted."""
    root = tmp_path / "in"
    _carrier(root / f"{MRN}_{FAMILY}^{GIVEN}" / f"{FAMILY}_{GIVEN}_{BIRTH}.dcm")
    return root


def test_no_carrier_reaches_the_output(patient_tree, tmp_path):
    source = next(patient_tree.rglob("*.dcm"))
    before = source.read_bytes()
    assert _leaks(patient_tree)                         # the carriers are there to find
    out = tmp_path / "out"
    report = anonymize([patient_tree], out, settings=Settings(SALT))
    assert not report.failures and len(report.written) == 1
    assert _leaks(out) == []
    written = Path(report.written[0]["output"])
    assert written.read_bytes()[:PREAMBLE_BYTES] == b"\0" * PREAMBLE_BYTES
    assert UNKNOWN_TAG not in pydicom.dcmread(written)
    assert report.unknown == 1
    assert source.read_bytes() == before                # the input is untouched
    clean = check([out])
    assert clean.checked == 1 and clean.findings == []


def test_check_flags_each_carrier_in_the_input(patient_tree):
    found = check([patient_tree]).findings
    tags = {f["tag"] for f in found}
    assert {"(preamble)", "(0010,1041)", "(path)"} <= tags
    paths = sorted(f["where"] for f in found if f["tag"] == "(path)")
    assert paths == [f"{MRN}_{FAMILY}^{GIVEN}: ", f"{FAMILY}_{GIVEN}_{BIRTH}.dcm: "]
    holds = {f["where"]: f["name"] for f in found if f["tag"] == "(path)"}
    assert "Patient ID" in holds[f"{MRN}_{FAMILY}^{GIVEN}: "]
    assert "Patient's Birth Date" in holds[f"{FAMILY}_{GIVEN}_{BIRTH}.dcm: "]


def test_check_catches_carriers_planted_by_hand_into_a_clean_output(patient_tree, tmp_path):
    out = tmp_path / "out"
    written = Path(anonymize([patient_tree], out, settings=Settings(SALT)).written[0]["output"])
    assert check([out]).findings == []
    # the preamble
    data = bytearray(written.read_bytes())
    data[:PREAMBLE_BYTES] = PREAMBLE
    written.write_bytes(bytes(data))
    assert [f["tag"] for f in check([written]).findings] == ["(preamble)"]
    # an attribute the dictionary does not know
    ds = pydicom.dcmread(written)
    ds.preamble = b"\0" * PREAMBLE_BYTES
    ds.add(DataElement(UNKNOWN_TAG, "LO", ADDRESS))
    ds.save_as(written)
    assert [(f["tag"], f["name"]) for f in check([written]).findings] == [
        ("(0010,1041)", "Unknown public attribute")]
    # a folder named after a value the file still holds
    del ds[UNKNOWN_TAG]
    ds.OtherPatientIDs = MRN
    named = tmp_path / "hand" / f"{MRN}_scan" / "IM-0001.dcm"
    named.parent.mkdir(parents=True)
    ds.save_as(named)
    found = check([named]).findings
    assert ("(path)", f"{MRN}_scan: ") in {(f["tag"], f["where"]) for f in found}
    assert "Other Patient IDs" in next(f["name"] for f in found if f["tag"] == "(path)")


def test_outputs_are_named_by_pseudonym_and_keep_names_opts_out(patient_tree, tmp_path):
    settings = Settings(SALT)
    report = anonymize([patient_tree], tmp_path / "out", settings=settings)
    relative = Path(report.written[0]["output"]).relative_to(tmp_path / "out")
    pseudonym = settings.pseudonym(MRN)
    assert relative.parts[0] == pseudonym and relative.name == "IM-0001.dcm"
    assert pydicom.dcmread(report.written[0]["output"]).PatientID == pseudonym
    kept = anonymize([patient_tree], tmp_path / "kept", settings=settings, keep_names=True)
    assert Path(kept.written[0]["output"]).relative_to(tmp_path / "kept") == \
        next(patient_tree.rglob("*.dcm")).relative_to(patient_tree)


def test_case_folders_with_the_same_file_names_go_into_one_output(tmp_path):
    """Two patients' folders both holding IM-0001.dcm: no 'same output file' refusal."""
    first = _carrier(tmp_path / "in" / "a" / "IM-0001.dcm")
    second = tmp_path / "in" / "b" / "IM-0001.dcm"
    ds = pydicom.dcmread(first)
    ds.PatientID, ds.SOPInstanceUID = "OTHER1", pydicom.uid.generate_uid()
    second.parent.mkdir(parents=True)
    ds.save_as(second)
    report = anonymize([tmp_path / "in" / "a", tmp_path / "in" / "b"], tmp_path / "out",
                       settings=Settings(SALT))
    assert not report.failures and len(report.written) == 2
    assert len({Path(w["output"]).parts[-4] for w in report.written}) == 2   # two pseudonyms


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_in_place_through_a_link_is_refused(cli, tmp_path, link):
    target = _carrier(tmp_path / "store" / "scan.dcm")
    before = target.read_bytes()
    named = tmp_path / "named" / "scan.dcm"
    named.parent.mkdir()
    (os.symlink if link == "symbolic" else os.link)(target, named)
    result = cli("anonymize", named, "--in-place", "--salt", "s")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1
    assert errors[0].startswith(f"error: {named}: ") and "identifiable" in errors[0]
    assert target.read_bytes() == before and named.read_bytes() == before
    assert "anonymized 0" in result.stdout


def test_a_link_inside_the_output_folder_is_not_followed(tmp_path):
    source = _carrier(tmp_path / "in" / "case" / "scan.dcm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = Settings(SALT)
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / settings.pseudonym(MRN))     # where the layout would write
    report = anonymize([tmp_path / "in"], out, settings=settings)
    assert not report.written and len(report.failures) == 1
    assert "outside" in str(report.failures[0][1]) and report.failures[0][0] == str(source)
    os.symlink(elsewhere, out / "case")                      # where --keep-names would write
    kept = anonymize([tmp_path / "in"], out, settings=settings, keep_names=True)
    assert not kept.written and "outside" in str(kept.failures[0][1])
    assert list(elsewhere.iterdir()) == []



def test_folders_are_checked_again_on_every_run_in_one_process(tmp_path):
    """The first file of a series checks its folder for the others; a second run in the same
    process checks again: a folder removed since is made again, one replaced by a link out of
    the output folder is refused."""
    import shutil

    _carrier(tmp_path / "in" / "case" / "scan.dcm")
    settings = Settings(SALT)
    out = tmp_path / "out"
    first = anonymize([tmp_path / "in"], out, settings=settings)
    assert len(first.written) == 1
    shutil.rmtree(out)
    again = anonymize([tmp_path / "in"], out, settings=settings)
    assert len(again.written) == 1 and Path(again.written[0]["output"]).is_file()
    series = Path(again.written[0]["output"]).parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(series)
    os.symlink(elsewhere, series)
    linked = anonymize([tmp_path / "in"], out, settings=settings, force=True)
    assert not linked.written and "outside" in str(linked.failures[0][1])
    assert list(elsewhere.iterdir()) == []

def test_checking_nothing_is_a_failure(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("no dicom here")
    for target in (tmp_path / "missing", tmp_path / "empty", tmp_path / "text"):
        result = cli("anonymize", "--check", target)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 1 and len(errors) == 1, result.stderr
        assert str(target) in errors[0] and "clean" not in result.stderr.replace(
            "not a clean result", "")
