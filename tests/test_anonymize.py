"""De-identification core: the table, leaks in the raw bytes, UIDs, dates, pixels, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from medtool.anonymize import (UUID_ROOT, BurnedInError, SafePrivate, Settings, anonymize, check,
                               check_dataset, deidentify, read_pseudonym_map, write_map)
from medtool.deid_table import COMPOUND_RESOLUTION, load_table, resolve
from medtool.errors import InputError, UsageError

SALT = b"test-salt"
#: Rows quoted from PS3.15 Table E.1-1 (2024c): tag, name, Basic Profile action, and option
#: columns that the standard's text gives for them.
STANDARD_ROWS = [
    ("(0008,0050)", "Accession Number", "Z", {}),
    ("(0008,0020)", "Study Date", "Z", {"full_dates": "K", "modified_dates": "C"}),
    ("(0008,0021)", "Series Date", "X/D", {"full_dates": "K", "modified_dates": "C"}),
    ("(0008,002A)", "Acquisition DateTime", "X/Z/D", {"full_dates": "K", "modified_dates": "C"}),
    ("(0008,0080)", "Institution Name", "X/Z/D", {"institution": "K"}),
    ("(0008,0090)", "Referring Physician's Name", "Z", {}),
    ("(0010,0010)", "Patient's Name", "Z", {}),
    ("(0010,0030)", "Patient's Birth Date", "Z", {}),
    ("(0010,0032)", "Patient's Birth Time", "X", {}),
    ("(0010,1010)", "Patient's Age", "X", {"patient": "K"}),
    ("(0010,1030)", "Patient's Weight", "X", {"patient": "K"}),
    ("(0018,1000)", "Device Serial Number", "X/Z/D", {"device": "K"}),
    ("(0020,000D)", "Study Instance UID", "U", {"uids": "K"}),
    ("(0020,000E)", "Series Instance UID", "U", {"uids": "K"}),
    ("(0008,1140)", "Referenced Image Sequence", "X/Z/U*", {"uids": "K"}),
    ("(0040,0275)", "Request Attributes Sequence", "X", {"clean_desc": "C"}),
    ("(0088,0200)", "Icon Image Sequence", "X", {}),
    ("(0070,0084)", "Content Creator's Name", "Z/D", {}),
    ("(60xx,3000)", "Overlay Data", "X", {"clean_graphics": "C"}),
    ("(50xx,xxxx)", "Curve Data", "X", {"clean_graphics": "C"}),
    ("(gggg,eeee)", "Private Attributes", "X", {"safe_private": "C"}),
]


# ------------------------------------------------------------------ the table


def test_table_has_every_row_of_the_standard():
    table = load_table()
    assert len(table) >= 600
    tags = [row.tag for row in table.rows]
    assert len(tags) == len(set(tags))
    assert {row.basic for row in table.rows} == {"D", "Z", "X", "U", "X/Z", "X/D", "X/Z/D", "Z/D",
                                                 "X/Z/U*"}


@pytest.mark.parametrize("tag, name, basic, options", STANDARD_ROWS)
def test_table_rows_quoted_from_the_standard(tag, name, basic, options):
    row = next(r for r in load_table().rows if r.tag == tag)
    assert (row.name, row.basic) == (name, basic)
    for column, action in options.items():
        assert row.options[column] == action


def test_repeating_groups_and_private_tags_match_by_pattern():
    table = load_table()
    assert table.row(0x60003000).name == "Overlay Data"
    assert table.row(0x601E3000).name == "Overlay Data"
    assert table.row(0x60024000).name == "Overlay Comments"
    assert table.row(0x60020010) is None                  # overlay rows: not in the table
    assert table.row(0x50101234).name == "Curve Data"
    assert table.row(0x00091001).name == "Private Attributes"
    assert table.row(0x00291010).name == "Private Attributes"
    assert table.row(0x00280010) is None                  # Rows: kept


def test_compound_actions_resolve_to_a_valid_alternative():
    assert {a: resolve(a) for a in COMPOUND_RESOLUTION} == {
        "X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U"}
    row = load_table().by_name("Study Date")
    assert row.action() == "Z"
    assert row.action(frozenset({"full_dates"})) == "K"
    assert row.action(frozenset({"modified_dates"})) == "C"
    assert load_table().by_name("Patient's Age").action(frozenset({"patient"})) == "K"


# ------------------------------------------------------------------ phantom data


def _identity(path: Path) -> list[str]:
    """Every identifying value of a phantom file: names, IDs, dates, places, UIDs."""
    ds = pydicom.dcmread(path)
    name = str(ds.PatientName)
    keywords = ("PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientBirthTime",
                "PatientAddress", "PatientTelephoneNumbers", "InstitutionName",
                "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
                "OperatorsName", "AccessionNumber", "StationName", "DeviceSerialNumber", "StudyID",
                "StudyDate", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                "FrameOfReferenceUID")
    values = [name, *name.split("^")[:2], *(ds.get(k) for k in keywords),
              ds.file_meta.MediaStorageSOPInstanceUID,
              ds.RequestAttributesSequence[0].RequestedProcedureID]
    return sorted({str(v) for v in values if v})


def _copy(phantom_dir: Path, tmp_path: Path, *cases: str) -> Path:
    src = tmp_path / "in"
    for case in cases:
        shutil.copytree(phantom_dir / "ct" / case, src / case)
    return src


@pytest.fixture(scope="module")
def anonymized(phantom_dir, tmp_path_factory):
    """The whole phantom (CT and X-rays) anonymized once with date shifts."""
    out = tmp_path_factory.mktemp("anon") / "out"
    report = anonymize([phantom_dir], out, settings=Settings(SALT, frozenset({"modified_dates"})),
                       workers=2)
    assert not report.failures
    return report, out


def test_no_identifying_value_in_the_output_bytes(phantom_dir, anonymized):
    report, out = anonymized
    sources = sorted(Path(w["source"]) for w in report.written)
    assert len(sources) == 270 + 4                        # every CT slice and X-ray
    identity = set()
    for source in sources:
        identity.update(_identity(source))
    assert len(identity) > 100                            # names, dates and many UIDs
    for w in report.written:
        data = Path(w["output"]).read_bytes()
        leaks = [v for v in identity if v.encode() in data]
        assert not leaks, f"{w['output']} leaks {leaks}"
    # non-DICOM files of the phantom (tables, NIfTI truth) were skipped, not copied
    assert {reason for _, reason in report.skipped} == {"not DICOM"}


def test_pixels_are_byte_identical_and_check_is_clean(anonymized):
    report, out = anonymized
    for w in report.written[::7]:
        a = pydicom.dcmread(w["source"])
        b = pydicom.dcmread(w["output"])
        assert a.PixelData == b.PixelData
        assert b.PatientIdentityRemoved == "YES"
        codes = [item.CodeValue for item in b.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107"]
        assert b.LongitudinalTemporalInformationModified == "MODIFIED"
    clean = check([out])
    assert clean.checked == 274 and clean.findings == []
    dirty = check([report.written[0]["source"]])
    names = {f["name"] for f in dirty.findings}
    assert {"Patient's Name", "Patient's Birth Date", "Private Attribute", "Study Instance UID",
            "Request Attributes Sequence", "Institution Name"} <= names


def test_one_series_keeps_one_series_uid_and_dates_keep_intervals(phantom_dir, anonymized):
    report, out = anonymized
    by_case: dict[str, set] = {}
    studies = {}
    for w in report.written:
        if "/ct/" not in w["source"]:
            continue
        a, b = pydicom.dcmread(w["source"]), pydicom.dcmread(w["output"])
        case = Path(w["source"]).parent.name
        by_case.setdefault(case, set()).add(b.SeriesInstanceUID)
        assert b.SeriesInstanceUID.startswith(UUID_ROOT) and len(b.SeriesInstanceUID) <= 64
        assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID != a.SOPInstanceUID
        assert b.SOPClassUID == a.SOPClassUID
        assert b.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID
        studies[case] = (a.PatientID, a.StudyDate, b.StudyDate, b.PatientID, b.StudyTime)
    assert all(len(uids) == 1 for uids in by_case.values()) and len(by_case) == 4
    import datetime as dt

    def day(text):
        return dt.datetime.strptime(text, "%Y%m%d").date()

    # P001 has two studies (case_001, case_002): one pseudonym, one shift, same interval
    (pa, a1, b1, pseud1, _), (pb, a2, b2, pseud2, _) = studies["case_001"], studies["case_002"]
    assert pa == pb and pseud1 == pseud2 and pseud1 != pa
    assert day(a1) != day(b1)
    assert day(b2) - day(b1) == day(a2) - day(a1)
    shift = (day(b1) - day(a1)).days
    assert -3652 <= shift <= -1
    # another patient gets another shift (derived from their ID)
    p2 = studies["case_003"]
    assert (day(p2[2]) - day(p2[1])).days != shift


def test_separate_batches_with_one_salt_agree(phantom_dir, tmp_path, anonymized):
    _, out_all = anonymized
    first = _copy(phantom_dir, tmp_path, "case_002")
    settings = Settings(SALT, frozenset({"modified_dates"}))
    anonymize([first], tmp_path / "a", settings=settings)
    alone_files = sorted((tmp_path / "a").rglob("*.dcm"))
    assert len(alone_files) == len(list(first.rglob("*.dcm")))
    for path in alone_files[:5]:                # same salt: same names, same values
        again = pydicom.dcmread(out_all / path.relative_to(tmp_path / "a"))
        alone = pydicom.dcmread(path)
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                        "FrameOfReferenceUID", "PatientID", "StudyDate"):
            assert alone.get(keyword) == again.get(keyword), keyword
    other = Settings(b"another salt", frozenset({"modified_dates"}))
    anonymize([first], tmp_path / "b", settings=other)
    a = pydicom.dcmread(alone_files[0])
    b = pydicom.dcmread(sorted((tmp_path / "b").rglob("*.dcm"))[0])
    assert a.InstanceNumber == b.InstanceNumber
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.PatientID != b.PatientID


def test_basic_profile_removes_dates_and_times(phantom_dir, tmp_path):
    src = _copy(phantom_dir, tmp_path, "case_004")
    source = sorted(src.rglob("*.dcm"))[0]
    original = pydicom.dcmread(source)
    report = anonymize([src], tmp_path / "out", settings=Settings(SALT))
    out = Path(next(w["output"] for w in report.written if w["source"] == str(source)))
    data = out.read_bytes()
    assert original.StudyDate.encode() not in data and original.StudyTime.encode() not in data
    ds = pydicom.dcmread(out)
    assert ds.StudyDate == "" and ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert "PatientAge" not in ds and ds.PatientSex == ""
    kept = anonymize([src], tmp_path / "kept", settings=Settings(SALT, frozenset({"patient", "device",
                                                                                  "full_dates"})))
    ds = pydicom.dcmread(kept.written[0]["output"])
    first = pydicom.dcmread(kept.written[0]["source"])
    assert (ds.PatientAge, ds.PatientSex, ds.PatientWeight) == (first.PatientAge, first.PatientSex,
                                                                first.PatientWeight)
    assert ds.StudyDate == first.StudyDate and ds.DeviceSerialNumber == first.DeviceSerialNumber
    assert ds.InstitutionName != first.InstitutionName
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == [
        "113100", "113109", "113108", "113106"]


# ------------------------------------------------------------------ sequences, private, UIDs


def _dataset(**extra) -> Dataset:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.PatientName, ds.PatientID = "DOE^JANE", "ID42"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, "1.2.3.4.5"
    ds.StudyDate = "20200229"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def test_nested_sequences_references_and_private_blocks():
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.4.6"
    inner = Dataset()
    inner.PatientName = "DOE^JANE"
    inner.InstitutionName = "SECRET HOSPITAL"
    inner.ContentDate = "20200301"
    ref.PurposeOfReferenceCodeSequence = DicomSequence([inner])
    ds = _dataset(ReferencedImageSequence=DicomSequence([ref]))
    block = ds.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "DOE JANE")
    block.add_new(0x02, "DS", "1.5")
    ds.add_new(0x60003000, "OW", b"\x00\x01")
    ds.add_new(0x60000010, "US", 4)
    settings = Settings(SALT, frozenset({"modified_dates", "safe_private"}),
                        safe_private=(SafePrivate.parse("ACME 1.0:0011,02"),))
    outcome = deidentify(ds, settings)
    item = ds.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == settings.uid("1.2.3.4.6")
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    nested = item.PurposeOfReferenceCodeSequence[0]
    assert nested.PatientName == outcome.pseudonym
    assert nested.InstitutionName == "ANONYMIZED"      # X/Z/D -> dummy
    assert nested.ContentDate != "20200301" and len(nested.ContentDate) == 8
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == settings.uid("1.2.3.4.5")
    assert 0x00111002 in ds and 0x00110010 in ds and 0x00111001 not in ds
    assert 0x60003000 not in ds and 0x60000010 not in ds
    assert check_dataset(ds) == []
    # the 2020 leap day moves by the patient's shift
    import datetime as dt

    assert ds.StudyDate == (dt.date(2020, 2, 29) + dt.timedelta(days=outcome.date_shift)).strftime("%Y%m%d")


def test_free_text_in_a_replaced_sequence_gets_a_dummy(tmp_path):
    """The SR Content Sequence is D: its Text Value (not in the table) must not survive."""
    def item(**values):
        found = Dataset()
        for key, value in values.items():
            setattr(found, key, value)
        return found

    concept = item(CodeValue="121071", CodingSchemeDesignator="DCM", CodeMeaning="Finding")
    text = item(ValueType="TEXT", TextValue="Mr Zebulon of 12 Elm Street has a mass",
                ConceptNameCodeSequence=DicomSequence([concept]))
    nested = item(ValueType="CONTAINER", ContentSequence=DicomSequence([
        item(ValueType="TEXT", TextValue="seen by Dr Quixote")]))
    ds = _dataset(ContentSequence=DicomSequence([text, nested,
                                                 item(ValueType="PNAME", PersonName="ROE^RICHARD")]))
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    flagged = {(f["name"], f["where"]) for f in check_dataset(pydicom.dcmread(tmp_path / "sr.dcm"))}
    assert ("Text Value", "ContentSequence[0]/") in flagged
    assert ("Text Value", "ContentSequence[1]/ContentSequence[0]/") in flagged
    report = anonymize([tmp_path / "sr.dcm"], tmp_path / "out.dcm", settings=Settings(SALT))
    assert not report.failures
    raw = (tmp_path / "out.dcm").read_bytes()
    for secret in (b"Zebulon", b"Elm Street", b"Quixote", b"ROE"):
        assert secret not in raw
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.ContentSequence[0].TextValue == out.ContentSequence[2].PersonName == "ANONYMIZED"
    assert out.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning == "Finding"  # codes stay
    assert check_dataset(out) == []


def test_check_finds_what_is_left():
    ds = _dataset(PatientIdentityRemoved="YES", AccessionNumber="A1")
    ds.OtherPatientIDs = "X9"
    ds.add_new(0x00091001, "LO", "leftover")
    found = {(f["name"], f["action"]) for f in check_dataset(ds)}
    assert found == {("Accession Number", "Z"), ("Other Patient IDs", "X"),
                     ("Private Attribute", "X"), ("Study Date", "Z")}


def test_pseudonym_map_and_write_map(tmp_path):
    (tmp_path / "map.csv").write_text("patient_id,pseudonym\nID42,SUBJ-007\n")
    mapping = read_pseudonym_map(tmp_path / "map.csv")
    ds = _dataset()
    assert deidentify(ds, Settings(SALT, pseudonyms=mapping)).pseudonym == "SUBJ-007"
    assert ds.PatientName == ds.PatientID == "SUBJ-007"
    with pytest.raises(InputError, match="not in the --pseudonym-map"):
        deidentify(_dataset(PatientID="OTHER"), Settings(SALT, pseudonyms=mapping))
    (tmp_path / "bad.csv").write_text("id,name\n1,2\n")
    with pytest.raises(UsageError, match="patient_id,pseudonym"):
        read_pseudonym_map(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("patient_id,pseudonym\n")
    with pytest.raises(UsageError, match="has no patients"):
        read_pseudonym_map(tmp_path / "empty.csv")


# ------------------------------------------------------------------ compressed, burned-in, bad files


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "JPEG2000.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_pixel_data_is_copied_not_decoded(tmp_path, name):
    source = Path(get_testdata_file(name))
    # JPEG2000.dcm is a secondary capture: allowed here, its pixels are a test pattern
    report = anonymize([source], tmp_path / "out" / name,
                       settings=Settings(SALT, allow_burned_in=True))
    assert not report.failures
    a, b = pydicom.dcmread(source), pydicom.dcmread(tmp_path / "out" / name)
    assert a.PixelData == b.PixelData
    assert b.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID
    assert (a.pixel_array == b.pixel_array).all()


def test_burned_in_annotation_is_refused_unless_allowed(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tmp_path / "burned.dcm")
    sc = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    sc.save_as(tmp_path / "capture.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "fine.dcm")
    report = anonymize([tmp_path], tmp_path.parent / "out_burn", settings=Settings(SALT))
    assert sorted(Path(p).name for p in report.refused) == ["burned.dcm", "capture.dcm"]
    assert all(isinstance(e, BurnedInError) for _, e in report.failures)
    assert [Path(w["source"]).name for w in report.written] == ["fine.dcm"]
    allowed = anonymize([tmp_path], tmp_path.parent / "out_allowed",
                        settings=Settings(SALT, allow_burned_in=True))
    assert len(allowed.written) == 3 and not allowed.failures


def test_bad_files_fail_alone_and_leave_nothing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = Path(get_testdata_file("CT_small.dcm"))
    shutil.copy(good, src / "good.dcm")
    data = good.read_bytes()
    (src / "truncated.dcm").write_bytes(data[: len(data) - 5000])
    (src / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 50)
    (src / "notes.txt").write_text("not dicom")
    report = anonymize([src], tmp_path / "out", settings=Settings(SALT))
    failed = {Path(name).name: str(error) for name, error in report.failures}
    assert set(failed) == {"truncated.dcm", "garbage.dcm"}
    assert "truncated" in failed["truncated.dcm"] and "copy the file again" in failed["truncated.dcm"]
    assert report.skipped == [(str(src / "notes.txt"), "not DICOM")]
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert [str(p) for p in written] == [report.written[0]["output"]]   # no temp files
    again = anonymize([src], tmp_path / "out", settings=Settings(SALT))   # one rule: exit 1
    assert [(Path(name).name, type(error).__name__) for name, error in again.failures
            if "exists" in str(error)] == [("good.dcm", "OutputExistsError")]
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == written
    with pytest.raises(InputError, match="not a DICOM file"):
        from medtool.anonymize import read_dicom

        read_dicom(src / "notes.txt")


@pytest.mark.parametrize("cut", ["after_meta", "in_header", "in_value"])
def test_files_cut_before_the_pixel_data_are_truncated(tmp_path, cut):
    """pydicom reads a file cut off in its header section without complaint (an empty data set,
    or the last element header silently dropped); each is refused as truncated."""
    import pydicom

    from medtool.anonymize import read_dicom

    good = Path(get_testdata_file("CT_small.dcm"))
    data = good.read_bytes()
    ds = pydicom.dcmread(good)
    raw = pydicom.dcmread(good, stop_before_pixels=True)
    meta_end = 132 + 12 + raw.file_meta.FileMetaInformationGroupLength
    third = list(pydicom.dcmread(good)._dict.values())[2]    # after two whole elements
    ends = {"after_meta": meta_end, "in_header": third.value_tell - 3, "in_value": third.value_tell + 1}
    assert ds.SOPInstanceUID                              # the full file reads
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: ends[cut]])
    with pytest.raises(InputError, match="truncated"):
        read_dicom(path)


@pytest.mark.parametrize("name", ["SC_ybr_full_422_uncompressed.dcm", "ExplVR_BigEndNoMeta.dcm"])
def test_odd_but_valid_encodings_are_written(tmp_path, name):
    """YBR_FULL_422 pixel data is 2/3 of a full RGB frame (not truncated); a big endian data set
    without file meta stays big endian (pydicom cannot swap its byte order)."""
    source = Path(get_testdata_file(name))
    report = anonymize([source], tmp_path / name, settings=Settings(SALT, allow_burned_in=True))
    assert not report.failures
    a, b = pydicom.dcmread(source, force=True), pydicom.dcmread(tmp_path / name)
    assert b.PatientIdentityRemoved == "YES" and b.SOPClassUID == a.SOPClassUID
    assert b.get("PixelData") == a.get("PixelData")
    assert b.file_meta.TransferSyntaxUID.is_little_endian == a.original_encoding[1]


def test_pydicom_warnings_on_odd_values_are_not_printed(tmp_path):
    """rtdose.dcm has an invalid UID (a component with a leading zero): it is remapped quietly."""
    import warnings

    source = get_testdata_file("rtdose.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = anonymize([source], tmp_path / "o.dcm", settings=Settings(SALT))
        found = check([tmp_path / "o.dcm"])
    assert not report.failures and found.checked == 1
    assert [str(w.message) for w in caught] == []
    assert b"1.2.123.456.78.9.0123" not in (tmp_path / "o.dcm").read_bytes()


def test_an_output_never_overwrites_an_input(tmp_path):
    source = tmp_path / "a.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), source)
    before = source.read_bytes()
    for inputs, out in (([source], source), ([source], tmp_path / "." / "a.dcm"),
                        ([source, get_testdata_file("MR_small.dcm")], tmp_path)):
        with pytest.raises(UsageError, match="would overwrite an input"):
            anonymize(inputs, out, settings=Settings(SALT), force=True, keep_names=True)
    assert source.read_bytes() == before


def test_write_map_is_private(tmp_path):
    report = anonymize([get_testdata_file("CT_small.dcm")], tmp_path / "o", settings=Settings(SALT))
    assert write_map(tmp_path / "map.csv", report) == 1
    text = (tmp_path / "map.csv").read_text().splitlines()
    assert text[0] == "patient_id,pseudonym,date_shift_days"
    assert text[1].startswith(pydicom.dcmread(get_testdata_file("CT_small.dcm")).PatientID + ",ANON")
    assert (tmp_path / "map.csv").stat().st_mode & 0o077 == 0
