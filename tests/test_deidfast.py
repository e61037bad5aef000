"""medtool.deidfast: anonymize's raw-element path writes the bytes pydicom's path writes, or steps aside.

Every file of pydicom's test data (and pydicom-data where installed) and of the phantom (with
its clutter: dose screens, reports, localizers, secondary captures) is anonymized both ways
under several option sets; the outputs must be byte-identical and the results equal. Value
rules are checked against pydicom's own converters and writers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medtool import anonymize, deidfast
from medtool.errors import MedtoolError

from .test_corpus import corpus_files

SALT = b"deidfast-test"
OPTION_SETS = (frozenset({"modified_dates"}), frozenset(),
               frozenset({"full_dates", "patient", "device", "institution"}))


def both_ways(source: Path, folder: Path, options=frozenset(), **settings):
    """(fast output bytes or error, pydicom output bytes or error, the path the fast run took)."""
    fast = anonymize.Settings(salt=SALT, options=options, allow_burned_in=True, **settings)
    slow = dataclasses.replace(fast, fast=False)
    took = []
    original = anonymize._anonymize_dataset

    def spy(job, ds):
        took.append(type(ds).__name__)
        return original(job, ds)

    outputs = []
    for name, chosen in (("fast", fast), ("slow", slow)):
        target = folder / f"{source.name}.{name}.dcm"
        anonymize._anonymize_dataset = spy if name == "fast" else original
        try:
            result = anonymize._anonymize_file(anonymize._Job(source, target, chosen, True, True))
            result.pop("output")
            outputs.append((target.read_bytes(), result))
        except MedtoolError as exc:
            outputs.append((type(exc).__name__, str(exc)))
        finally:
            anonymize._anonymize_dataset = original
    return outputs[0], outputs[1], took[-1] if took else None


def _compare(files, tmp_path, options):
    fast_files = 0
    for source in files:
        fast, slow, took = both_ways(source, tmp_path, options)
        assert fast == slow, source
        fast_files += took == "RawFile"
    return fast_files


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "+".join(sorted(o)) or "basic")
def test_corpus_outputs_are_byte_identical(tmp_path, options):
    files = [f for f in corpus_files() if anonymize.is_dicom(f)]
    fast_files = _compare(files, tmp_path, options)
    assert fast_files >= 100          # most of pydicom's Explicit VR Little Endian files


def test_phantom_outputs_are_byte_identical(tmp_path):
    from medtool.phantom import write_dataset

    data = tmp_path / "data"
    write_dataset(data, cases=2, seed=3, shape=32, cxr=0, clutter=True)
    files = sorted(p for p in data.rglob("*.dcm"))
    out = tmp_path / "out"
    out.mkdir()
    assert len(files) > 20 and _compare(files, out, frozenset({"modified_dates"})) == len(files)


def _explicit(tmp_path: Path, name: str, **values) -> Path:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "MRN123"
    ds.StudyDate = "20200102"
    ds.Modality = "CT"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def test_sequences_and_private_blocks_are_rewritten_like_pydicom(tmp_path):
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.9"
    item.add_new(0x00090010, "LO", "ACME")
    item.add_new(0x00091001, "LO", "DOE^JANE")
    path = _explicit(tmp_path, "seq.dcm", ReferencedImageSequence=[item, Dataset()],
                     ImageComments="Seen by Dr. Who", OtherPatientIDs=["A1", "B2"])
    fast, slow, took = both_ways(path, tmp_path, frozenset({"modified_dates"}))
    assert took == "RawFile" and fast == slow
    assert b"DOE" not in fast[0] and b"MRN123" not in fast[0] and b"1.2.3.9" not in fast[0]


@pytest.mark.parametrize("case", ["implicit", "non-ascii kept", "odd padding"])
def test_what_it_cannot_promise_goes_through_pydicom(tmp_path, case):
    if case == "implicit":
        ds = pydicom.dcmread(_explicit(tmp_path, "x.dcm"))
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        path = tmp_path / "implicit.dcm"
        ds.save_as(path, enforce_file_format=True)
    elif case == "non-ascii kept":
        path = _explicit(tmp_path, "x.dcm", SpecificCharacterSet="ISO_IR 100",
                         Manufacturer="Ärzte GmbH")
    else:                                               # pydicom reads "AB  " as "AB"
        path = _explicit(tmp_path, "x.dcm", Manufacturer="AB  ")
    fast, slow, took = both_ways(path, tmp_path, frozenset({"modified_dates"}))
    assert took in (None, "FileDataset")    # read by pydicom, not the raw path
    assert fast == slow


@pytest.mark.parametrize("vr, raw", [
    ("LO", b"ABC "), ("LO", b"A \\B "), ("CS", b"CT"), ("CS", b"A\\B "), ("UI", b"1.2.3\x00"),
    ("PN", b"DOE^J "), ("DS", b"1.5 "), ("DS", b"-0.25\\3e2 "), ("IS", b"12"), ("AE", b" AE1"),
    ("DA", b"20200101"), ("LT", b"line one\r\nline two  "), ("UR", b"http://a.b/c "),
])
def test_decoded_values_are_pydicoms(vr, raw):
    from pydicom.dataelem import RawDataElement, convert_raw_data_element

    elem = convert_raw_data_element(RawDataElement(0x00091001, vr, len(raw), raw, 0, False, True))
    value = elem.value
    expected = [str(v) for v in value] if isinstance(value, pydicom.multival.MultiValue) else str(value)
    assert deidfast._decoded(vr, raw) == expected


@pytest.mark.parametrize("vr, raw, kept", [
    ("LO", b"ABC ", True), ("LO", b"ABCD", True), ("LO", b"AB  ", False), ("UI", b"1.2 ", False),
    ("UI", b"1.23", True), ("CS", b"A\x00", False), ("DS", b" 1.5", False), ("DS", b"1.50", True),
    ("IS", b"+5", False), ("SH", b"A \\B", False), ("LT", b"x\ny ", True), ("PN", b"\xc4R", False),
])
def test_a_value_is_copied_only_where_pydicom_writes_it_back_unchanged(vr, raw, kept):
    from pydicom.dataelem import RawDataElement, convert_raw_data_element
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    elem = convert_raw_data_element(RawDataElement(0x00091001, vr, len(raw), raw, 0, False, True))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_data_element(buffer, elem)
    rewritten = buffer.getvalue()[8:]
    try:
        deidfast._check_kept(vr, raw)
        copied = True
    except deidfast.Fallback:
        copied = False
    assert copied == kept
    if copied:                                          # what it copies, pydicom writes too
        assert rewritten == raw
