"""medtool.dicomfast: the struct tag reader gives the records pydicom's path gives, or steps aside.

Both paths of :func:`medtool.dicom.read_frames` run on every file of pydicom's test data (and
pydicom-data where installed), on fixtures written with pydicom (Explicit and Implicit VR,
padding values, odd numbers) and on the phantom; every record field must agree, and so must
the volumes assembled from them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from medtool import dicom, dicomfast
from medtool.errors import MedtoolError
from medtool.series import assemble, plan, planned_volume, read_slabs, scan

from .dicom_fixtures import write_series
from .test_corpus import corpus_files

#: Naming keywords asked for beside the case keywords (as a --name template would).
KEYWORDS = ("StudyDate", "AccessionNumber", "SeriesDescription")


def both(path: Path, keywords=KEYWORDS):
    """(fast records or None, pydicom records or the pydicom path's error)."""
    fast = dicom._read_frames_fast(Path(path), keywords)
    try:
        slow = dicom._read_frames_pydicom(Path(path), keywords)
    except MedtoolError as exc:
        slow = exc
    return fast, slow


def assert_same(fast, slow, path) -> None:
    assert not isinstance(slow, Exception), f"{path}: fast path read a file pydicom refuses: {slow}"
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        for item in dataclasses.fields(a):
            assert getattr(a, item.name) == getattr(b, item.name), (path, item.name)
            assert type(getattr(a, item.name)) is type(getattr(b, item.name)), (path, item.name)


def test_corpus_records_agree():
    taken = 0
    for path in corpus_files():
        fast, slow = both(path)
        if fast is None:
            continue
        taken += 1
        assert_same(fast, slow, path)
    assert taken >= 20, f"only {taken} corpus files took the fast path"


def test_corpus_volumes_agree(tmp_path):
    files = [p for p in corpus_files() if dicom._read_frames_fast(p, ()) is not None]
    for path in files:
        fast = scan([path])
        slow_frames = dicom._read_frames_pydicom(path, ())
        assert fast.frames == slow_frames
        for stack in plan(fast.frames).stacks:
            volume = assemble(stack)
            reference = assemble(dataclasses.replace(stack, frames=slow_frames))
            assert volume.array.dtype == reference.array.dtype
            np.testing.assert_array_equal(volume.array, reference.array)
            if planned_volume(stack) is not None:       # what dicom2npy streams to a .nii
                slabs = [s.copy() for s in read_slabs(stack, slices=3)]
                assert all(len(s) <= 3 for s in slabs)
                np.testing.assert_array_equal(np.concatenate(slabs), volume.array)
                assert planned_volume(stack).array.dtype == volume.array.dtype


def test_phantom_series_agree(phantom_dir):
    files = sorted((phantom_dir / "ct").rglob("*.dcm"))
    assert files
    for path in files:
        fast, slow = both(path)
        assert fast is not None, f"{path}: the phantom should take the fast path"
        assert_same(fast, slow, path)
    cxr = sorted((phantom_dir / "cxr").rglob("*.dcm"))
    for path in cxr:
        fast, slow = both(path)
        if fast is not None:
            assert_same(fast, slow, path)


def _stored(rng, shape=(4, 6, 5)):
    return rng.integers(-1000, 2000, size=shape).astype(np.int16)


def test_explicit_fixture_with_padding_and_odd_numbers(tmp_path):
    rng = np.random.default_rng(3)
    paths = write_series(tmp_path / "s", _stored(rng), padding=-2000, slope=" 1.50",
                         intercept="-1024.", extra=[{"KVP": "+120", "SeriesNumber": " 7",
                                                     "AcquisitionNumber": "0042"}] * 4)
    for path in paths:
        fast, slow = both(path)
        assert fast is not None
        assert_same(fast, slow, path)
        assert fast[0].padding == (-2000, None) and fast[0].slope == 1.5


def _to_implicit(source: Path, target: Path) -> Path:
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(target, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return target


@pytest.mark.parametrize("signed", [True, False])
def test_implicit_fixture_resolves_us_or_ss(tmp_path, signed):
    rng = np.random.default_rng(4)
    stored = _stored(rng) if signed else _stored(rng).view(np.uint16) & 0x0FFF
    paths = write_series(tmp_path / "s", stored, padding=-2000 if signed else 4000,
                         padding_limit=-1000 if signed else 4095)
    implicit = _to_implicit(paths[0], tmp_path / "implicit.dcm")
    fast, slow = both(implicit)
    assert fast is not None
    assert_same(fast, slow, implicit)
    assert fast[0].transfer_syntax == ImplicitVRLittleEndian
    assert fast[0].padding == ((-2000, -1000) if signed else (4000, 4095))


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_other_transfer_syntaxes_fall_back(name):
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file(name, download=False))
    with pytest.raises(dicomfast.Fallback, match="transfer syntax"):
        dicomfast.read_header(path)
    assert dicom.read_frames(path) == dicom._read_frames_pydicom(path, ())


def test_non_ascii_names_fall_back(tmp_path):
    rng = np.random.default_rng(6)
    path = write_series(tmp_path / "s", _stored(rng, (1, 6, 5)),
                        extra=[{"SpecificCharacterSet": "ISO_IR 100",
                                "SeriesDescription": "Thorax \u00e9"}])[0]
    assert dicom._read_frames_fast(path, ()) is None       # pydicom decodes the text
    assert dicom.read_frames(path)[0].naming["SeriesDescription"] == "Thorax \u00e9"


def test_unknown_naming_keyword_falls_back(tmp_path):
    rng = np.random.default_rng(7)
    path = write_series(tmp_path / "s", _stored(rng, (1, 6, 5)))[0]
    assert dicom._read_frames_fast(path, ("PatientName",)) is None
    assert dicom._read_frames_fast(path, ("StudyDate",)) is not None


def test_bare_and_truncated_files_fall_back(tmp_path):
    rng = np.random.default_rng(8)
    path = write_series(tmp_path / "s", _stored(rng, (1, 6, 5)))[0]
    data = path.read_bytes()
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(data[dicomfast.MAGIC_OFFSET + len(dicomfast.MAGIC):])
    with pytest.raises(dicomfast.Fallback):
        dicomfast.read_header(bare)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[:-7])
    assert dicom._read_frames_fast(truncated, ()) is None
    with pytest.raises(MedtoolError, match="truncated"):
        dicom.read_frames(truncated)                        # pydicom's error, one line


def test_sequence_content_falls_back(tmp_path):
    rng = np.random.default_rng(9)
    path = write_series(tmp_path / "s", _stored(rng, (1, 6, 5)),
                        omit=("ImageOrientationPatient",))[0]
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.DetectorInformationSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    header = dicomfast.read_header(path)                   # the walk skips the sequence
    with pytest.raises(dicomfast.Fallback):
        header.get("DetectorInformationSequence")
    assert dicom._read_frames_fast(path, ()) is None       # the orientation is in it
    assert dicom.read_frames(path)[0].orientation == (1, 0, 0, 0, 1, 0)


def test_convert_matches_pydicom_values():
    from pydicom.values import convert_value
    from pydicom.dataelem import RawDataElement

    cases = [("DS", b" 1.50\\-2 "), ("DS", b"+5"), ("IS", b" 0042"), ("CS", b"A\\B "),
             ("LO", b"SIEMENS "), ("UI", b"1.2.3\0"), ("US", b"\x01\x00\x02\x00"),
             ("SS", b"\x30\xf8"), ("FD", b"\x00\x00\x00\x00\x00\x00\xf0\x3f")]
    for vr, raw in cases:
        ours = dicomfast.convert(raw, vr)
        theirs = convert_value(vr, RawDataElement(0x00100010, vr, len(raw), raw, 0, False, True))
        listed = list(theirs) if type(theirs).__name__ == "MultiValue" else theirs
        assert ours == listed, (vr, raw)
        if isinstance(ours, list):
            assert [str(v) for v in ours] == [str(v) for v in listed]
        else:
            assert str(ours) == str(listed)


def test_empty_values_agree(tmp_path):
    rng = np.random.default_rng(10)
    paths = write_series(tmp_path / "s", _stored(rng, (2, 6, 5)),
                         extra=[{"SpacingBetweenSlices": "", "KVP": "", "SeriesNumber": "",
                                 "Manufacturer": "", "AcquisitionNumber": None}] * 2)
    for path in paths:
        fast, slow = both(path)
        assert fast is not None
        assert_same(fast, slow, path)
