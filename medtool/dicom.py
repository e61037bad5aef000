"""Reading DICOM files: one :class:`Frame` record per 2D image, and its stored pixel values.

A file holds one image (classic CT/MR/CR) or many frames (enhanced multi-frame CT/MR, plain
multi-frame NM/RTDOSE). Either way :func:`read_frames` returns one header record per 2D image
with everything :mod:`medtool.series` needs to stack images into volumes: where the image lies
in the patient (per-frame functional groups first, then the shared groups, then the top-level
attributes), its rescale, padding and storage. Pixels are read later, by :func:`read_pixels`,
so that a series is assembled with one output volume plus a window of slices in memory.

Uncompressed little- or big-endian pixel data is read straight from the file at the offset the
header pass recorded; everything else is decoded by pydicom's pixel plugins (pylibjpeg for
JPEG, JPEG-LS, JPEG 2000 and RLE; pydicom itself for Deflate).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .dicomfast import is_dicom  # noqa: F401  (a file check that needs no numpy)
from .errors import InputError, MedtoolError, reason
#: Uncompressed transfer syntaxes: Implicit VR Little, Explicit VR Little and Big Endian.
NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
#: Values at least this large are not read in the header pass (pixel data is read later).
_DEFER_BYTES = 2048
#: Modalities of objects that are never images (PS3.3 C.7.3.1.1.1), named as such when skipped.
NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "RTPLAN", "RTSTRUCT", "RTRECORD",
                                  "REG", "FID", "RWV", "ECG", "HD", "AU", "RAW", "PLAN",
                                  "SMR", "M3D", "RESP", "EPS", "BI", "BDUS", "DMS"})
#: SOP Class of a DICOMDIR (an index, not an image).
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: SOP Classes of label objects (read by :mod:`medtool.dicomlabels`, not stacked as images):
#: RT Structure Set, Segmentation, Label Map Segmentation -> the kind they are skipped as.
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
LABEL_CLASSES = {RTSTRUCT_CLASS: "RTSTRUCT", SEG_CLASS: "SEG", LABELMAP_SEG_CLASS: "SEG"}
#: A pixel spacing above this (mm) cannot be right (a metre per pixel).
MAX_PIXEL_SPACING_MM = 1000.0
#: Compressed pixel data may decode to at most this many times its size once the image is
#: larger than :data:`DECODE_CHECK_BYTES` (a blank frame compresses well, but not 10,000-fold
#: at that size); beyond it the header's Rows x Columns x frames cannot be right.
MAX_DECODE_RATIO = 10_000
DECODE_CHECK_BYTES = 256 * 2**20
#: Coordinates (mm) and rescale values beyond these cannot be right (a kilometre; 1e12).
MAX_COORDINATE_MM = 1e6
MAX_RESCALE = 1e12
#: Direction cosines must be unit vectors at right angles within this tolerance.
COSINE_TOLERANCE = 0.01
#: GDCM aborts the whole process (an uncaught C++ exception) on pixel data shorter than the
#: header says; it is only used where no other decoder reads the transfer syntax.
_LAST_RESORT_PLUGINS = ("gdcm",)
#: RLE Lossless, and the length of the header of each of its frames (segment count, offsets).
RLE_LOSSLESS, RLE_HEADER_BYTES = "1.2.840.10008.1.2.5", 64
#: Start of a JPEG codestream (SOI) and of a JPEG 2000 codestream (SOC + SIZ).
_JPEG_SOI, _J2K_SIZ = b"\xff\xd8", b"\xff\x4f\xff\x51"
#: Native pixel data longer than the header says by more than this fraction (and a row) is not
#: padding: Rows, Columns or NumberOfFrames do not describe it (pydicom's test data pads by a
#: row, 1.6 %).
MAX_EXCESS_FRACTION = 0.05
#: Item and sequence delimitation tags of encapsulated pixel data, as stored (little endian).
_ITEM_TAG, _SEQUENCE_END = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"
#: ImageType values of scouts / localizers / projection images, never part of a volume.
LOCALIZER_TYPES = ("LOCALIZER", "SCOUT", "PROJECTION IMAGE")
#: Attributes that tell images at one position apart (phases, echoes, repeats), in the order
#: they are tried when a stack holds several images per position.
PHASE_KEYS = ("TemporalPositionIdentifier", "TemporalPositionIndex", "TriggerTime",
              "EchoNumbers", "EchoTime", "DiffusionBValue", "AcquisitionNumber", "StackID",
              "ImageType", "AcquisitionTime", "ContentTime")
#: Non-identifying series-level facts kept in the output metadata (DICOM keyword -> meta key).
SOURCE_FACTS = {
    "SeriesInstanceUID": "series_uid",
    "StudyInstanceUID": "study_uid",
    "FrameOfReferenceUID": "frame_of_reference_uid",
    "SOPClassUID": "sop_class_uid",
    "SeriesNumber": "series_number",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
    "ConvolutionKernel": "kernel",
    "KVP": "kvp",
    "BodyPartExamined": "body_part",
    "PatientPosition": "patient_position",
    "SliceThickness": "slice_thickness",
    "SpacingBetweenSlices": "spacing_between_slices",
    "GantryDetectorTilt": "gantry_detector_tilt",
    "ViewPosition": "view_position",
    "PhotometricInterpretation": "photometric",
    "BitsStored": "bits_stored",
    "PixelRepresentation": "pixel_representation",
    "RescaleType": "rescale_type",
}


#: Source facts that are lengths along the slice normal (mm).
_SPACING_FACTS = ("slice_thickness", "spacing_between_slices")


#: Identifying attributes kept per image for naming cases and for ``cases.csv`` only: they
#: never reach a volume's metadata.
CASE_KEYWORDS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
                 "SeriesDescription", "Modality", "PatientIdentityRemoved")


class SkippedFile(InputError):
    """A file that is not part of any image volume: skipped and counted, not an error.

    ``kind`` names what it is in the summary ("not DICOM", "SR", "colour image", ...).
    """

    kind = "other"

    def __init__(self, what: str, *, path=None, hint=None, kind: str | None = None):
        super().__init__(what, path=path, hint=hint)
        if kind is not None:
            self.kind = kind

    def __reduce__(self):
        return (_rebuild_skipped, (type(self), self.what, self.path, self.hint, self.kind))


def _rebuild_skipped(cls, what, path, hint, kind):
    return cls(what, path=path, hint=hint, kind=kind)


class NotDicomError(SkippedFile):
    """The file is not a DICOM file (or is a DICOMDIR index)."""

    kind = "not DICOM"


class NotImageError(SkippedFile):
    """A DICOM object that is no image volume: SR (dose reports), presentation states, RT
    plans and structure sets, key objects, raw data, waveforms (no pixel data), colour images
    (dose screens and exam summaries saved as secondary captures)."""


@dataclass
class Frame:
    """One 2D image of a DICOM file: where it lies, how its values are stored and scaled.

    ``position`` is ImagePositionPatient (LPS mm of the centre of the first pixel),
    ``orientation`` ImageOrientationPatient (row cosine then column cosine), ``pixel_spacing``
    (row spacing, column spacing) = (dy, dx) in mm. Missing values are ``None``.
    """

    path: str
    frame: int | None
    series_uid: str
    sop_uid: str
    instance: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    spacing_source: str | None
    slope: float
    intercept: float
    has_rescale: bool
    padding: tuple[int, int | None] | None
    dtype: str
    bits_stored: int
    transfer_syntax: str
    pixel_offset: int | None
    image_type: tuple[str, ...]
    modality: str
    patient_orientation: tuple[str, ...] | None
    phase: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    frame_count: int = 1
    naming: dict[str, str] = field(default_factory=dict)   # CASE_KEYWORDS and --name's: PHI

    @property
    def is_localizer(self) -> bool:
        return any(t in self.image_type for t in LOCALIZER_TYPES)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.columns


def read_frames(path: str | os.PathLike, *, keywords: Sequence[str] = (),
                fast: bool = True) -> list[Frame]:
    """Header records of every image in the DICOM file at ``path`` (one per frame).

    ``keywords`` are DICOM keywords (of a ``--name`` template) whose values each record keeps
    in ``naming``, beside :data:`CASE_KEYWORDS`. With ``fast`` (the default), a plain
    uncompressed little-endian image file is read by :mod:`medtool.dicomfast` without
    pydicom; every other file, and every file that fails there, by pydicom. Both give the same
    records.

    Raises
    ------
    NotDicomError
        Not a DICOM file, or a DICOMDIR index (callers skip and count these).
    NotImageError
        A DICOM object that is no image volume: no pixel data (SR, RTSTRUCT, ...) or a colour
        image (callers skip and count these).
    InputError
        A damaged image: unreadable or truncated, a header that cannot be right, a compressed
        transfer syntax no installed decoder reads.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    if fast:
        frames = _read_frames_fast(path, keywords)
        if frames is not None:
            return frames
    return _read_frames_pydicom(path, keywords)


def _read_frames_fast(path: Path, keywords: Sequence[str]) -> list[Frame] | None:
    """The records read by :mod:`medtool.dicomfast`, or ``None`` where pydicom must read the
    file (it is not the common case, or something is wrong with it: pydicom says what)."""
    from .dicomfast import Fallback, read_header

    try:
        header = read_header(path)
        sop_class = str(header.get("SOPClassUID")
                        or header.file_meta.get("MediaStorageSOPClassUID", ""))
        if (sop_class == _DICOMDIR_CLASS or sop_class in LABEL_CLASSES
                or header.get("Modality") == "SEG"):
            return None
        frames = _frames(header, path, header.transfer_syntax)
        _name(frames, header, keywords)
    except (Fallback, MedtoolError, OSError, ValueError):
        return None
    return frames


def _read_frames_pydicom(path: Path, keywords: Sequence[str]) -> list[Frame]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import UID, ImplicitVRLittleEndian

    if not is_dicom(path):
        raise NotDicomError("not a DICOM file", path=path)
    try:
        with warnings.catch_warnings():   # pydicom warns about fixable quirks; we read on
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
        sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    except InvalidDicomError as exc:
        raise NotDicomError(f"not a DICOM file ({exc})", path=path) from None
    except Exception as exc:  # pydicom raises many types on broken files
        raise InputError(f"cannot read the DICOM header ({reason(exc)})", path=path,
                         hint="the file is damaged or truncated; copy it again from the source") from None
    if sop_class == _DICOMDIR_CLASS:
        raise NotDicomError("DICOMDIR index, not an image", path=path, kind="DICOMDIR")
    if sop_class in LABEL_CLASSES or str(ds.get("Modality", "") or "") == "SEG":
        kind = LABEL_CLASSES.get(sop_class, "SEG")
        raise NotImageError(f"{kind} (labels, not an image)", path=path, kind=kind)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
            frames = _frames(ds, path, ts)
            _name(frames, ds, keywords)
            return frames
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"invalid DICOM header ({reason(exc)})", path=path,
                         hint="fix the file with dcmodify / dciodvfy, or leave it out") from None


def _name(frames: list[Frame], ds, keywords: Sequence[str]) -> None:
    """Give every record the naming values (:data:`CASE_KEYWORDS` and ``keywords``) of ``ds``."""
    naming = {keyword: _naming_value(ds.get(keyword))
              for keyword in dict.fromkeys((*CASE_KEYWORDS, *keywords))}
    for frame in frames:
        frame.naming = naming


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C decoders that print to file descriptor 2 (errors reach the user as one line)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _frames(ds, path: Path, ts) -> list[Frame]:
    """One record per frame of ``ds`` (a pydicom data set or a :class:`medtool.dicomfast.Header`),
    whose transfer syntax is ``ts``."""
    pixels = _pixel_layout(ds, path, ts)
    common = _common_values(ds, path, ts, pixels.count)
    return [_frame_record(ds, path, ts, pixels, common, index) for index in range(pixels.count)]


@dataclass
class _PixelLayout:
    """How the pixels of one grayscale image file are stored, shared by its frame records.

    ``dtype`` is the stored type (big-endian where the native pixels are), ``offset`` the byte
    offset of the first frame's native pixels in the file (``None``: encapsulated, or not
    where they can be read directly).
    """

    modality: str
    rows: int
    columns: int
    count: int
    dtype: np.dtype
    bits_stored: int
    offset: int | None


def _pixel_layout(ds, path: Path, ts) -> _PixelLayout:
    """The checked pixel description of ``ds``: an image with pixel data (else
    :class:`NotImageError`), grayscale, with a decoder for ``ts`` and a sane header (else
    :class:`~medtool.errors.InputError`)."""
    modality = str(ds.get("Modality", "") or "")
    pixel_tag = _grayscale_pixel_tag(ds, path, modality)
    _check_decoder(ts, path)
    rows, columns = _header_int(ds, "Rows", None, path), _header_int(ds, "Columns", None, path)
    if rows < 1 or columns < 1:
        raise InputError(f"the image is {rows} x {columns} pixels (Rows x Columns)", path=path,
                         hint="the header is damaged; fix it or leave the file out")
    count = _frame_count(ds, path)
    bits_allocated = _header_int(ds, "BitsAllocated", 16, path)
    bits_stored = _header_int(ds, "BitsStored", bits_allocated, path) or bits_allocated
    representation = _header_int(ds, "PixelRepresentation", 0, path)
    if representation not in (0, 1):
        raise InputError(f"PixelRepresentation {representation} is neither 0 (unsigned) nor 1 "
                         "(signed)", path=path, hint="fix the header or leave the file out")
    signed = representation == 1
    dtype = _stored_dtype(pixel_tag, bits_allocated, signed, path)
    high_bit = _header_int(ds, "HighBit", bits_stored - 1, path)
    if pixel_tag == 0x7FE00010 and not (1 <= bits_stored <= bits_allocated
                                        and 0 <= high_bit < bits_allocated):
        raise InputError(f"BitsStored {bits_stored} / HighBit {high_bit} do not fit "
                         f"BitsAllocated {bits_allocated}", path=path,
                         hint="fix the header or leave the file out")
    offset = _pixel_offset(ds, pixel_tag, ts, rows * columns * count * dtype.itemsize, path,
                           frames=count, row_bytes=columns * dtype.itemsize)
    if not ts.is_little_endian and offset is not None:
        dtype = dtype.newbyteorder(">")
    return _PixelLayout(modality=modality, rows=rows, columns=columns, count=count, dtype=dtype,
                        bits_stored=bits_stored, offset=offset)


def _grayscale_pixel_tag(ds, path: Path, modality: str) -> int:
    """The pixel data tag of ``ds`` (PixelData, FloatPixelData or DoubleFloatPixelData), once
    ``ds`` is known to be a grayscale image with Rows and Columns."""
    pixel_tag = next((t for t in (0x7FE00010, 0x7FE00008, 0x7FE00009) if t in ds), None)
    if pixel_tag is None:
        kind = (modality if modality in NON_IMAGE_MODALITIES
                else f"{modality or _class_name(ds) or 'object'} without pixel data")
        raise NotImageError(f"{kind} (not an image)", path=path, kind=kind)
    samples = _header_int(ds, "SamplesPerPixel", 1, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    if samples < 1:
        raise InputError(f"SamplesPerPixel is {samples}", path=path,
                         hint="an image has at least one sample per pixel; fix the header")
    if samples != 1 or photometric in ("PALETTE COLOR", "RGB") or photometric.startswith("YBR"):
        raise NotImageError(f"colour image ({photometric}, {samples} samples per pixel; "
                            f"{_class_name(ds) or 'unknown SOP class'}): medtool converts "
                            "grayscale images", path=path, kind="colour image")
    missing = [k for k in ("Rows", "Columns") if ds.get(k) in (None, "")]
    if missing:
        raise InputError(f"has pixel data but no {' or '.join(missing)}", path=path,
                         hint="the image header is incomplete; fix it or leave the file out")
    return pixel_tag


@dataclass
class _CommonValues:
    """The header values every frame record of one file starts from: the functional groups
    (shared, per frame), plain multi-frame positions, image type, patient orientation, the
    source facts and the pixel padding."""

    shared: Any
    per_frame: Any
    positions: list | None
    image_type: tuple[str, ...]
    patient_orientation: tuple[str, ...] | None
    facts: dict[str, Any]
    padding: tuple[int, int | None] | None


def _common_values(ds, path: Path, ts, count: int) -> _CommonValues:
    """The :class:`_CommonValues` of ``ds`` (``count`` frames)."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    positions = _plain_multiframe_positions(ds, count)
    image_type = tuple(str(v).upper() for v in _as_list(ds.get("ImageType")))
    patient_orientation = tuple(str(v) for v in _as_list(ds.get("PatientOrientation"))) or None
    facts = {key: value for keyword, key in SOURCE_FACTS.items()
             if ds.get(keyword) not in (None, "")
             and (value := _json_value(ds.get(keyword))) is not None}
    for key in _SPACING_FACTS:                      # a thickness of 0 or less is no fact
        if key in facts and not (isinstance(facts[key], (int, float))
                                 and 0 < facts[key] <= MAX_PIXEL_SPACING_MM):
            del facts[key]
    facts["transfer_syntax"] = ts.name
    padding_value = _header_int(ds, "PixelPaddingValue", None, path, required=False)
    padding = None
    if padding_value is not None:
        padding = (padding_value,
                   _header_int(ds, "PixelPaddingRangeLimit", None, path, required=False))
    return _CommonValues(shared=shared, per_frame=per_frame, positions=positions,
                         image_type=image_type, patient_orientation=patient_orientation,
                         facts=facts, padding=padding)


def _frame_record(ds, path: Path, ts, pixels: _PixelLayout, common: _CommonValues,
                  index: int) -> Frame:
    """The :class:`Frame` of frame ``index`` of ``ds``: its per-frame functional groups first,
    then the shared ones, then the plain header."""
    per_frame, count = common.per_frame, pixels.count
    groups = [per_frame[index] if per_frame is not None and index < len(per_frame) else None,
              common.shared]

    def find(sequence: str, keyword: str, default: Any = None, groups=groups) -> Any:
        for group in groups:
            if group is not None and sequence in group and group[sequence].value:
                item = group[sequence].value[0]
                if keyword in item and item[keyword].value not in (None, ""):
                    return item[keyword].value
        return default

    position = find("PlanePositionSequence", "ImagePositionPatient")
    if position is None:
        positions = common.positions
        position = positions[index] if positions is not None else ds.get("ImagePositionPatient")
    orientation = find("PlaneOrientationSequence", "ImageOrientationPatient",
                       ds.get("ImageOrientationPatient") or _detector(ds, "ImageOrientationPatient"))
    spacing, spacing_source = find("PixelMeasuresSequence", "PixelSpacing"), "PixelSpacing"
    if spacing is None:
        spacing = ds.get("PixelSpacing")
    spacing = _usable_spacing(spacing, "PixelSpacing", path, frame_facts := dict(common.facts))
    if spacing is None and ds.get("ImagerPixelSpacing") is not None:
        spacing, spacing_source = _usable_spacing(ds.ImagerPixelSpacing, "ImagerPixelSpacing",
                                                  path, frame_facts), "ImagerPixelSpacing"
    slope = find("PixelValueTransformationSequence", "RescaleSlope", ds.get("RescaleSlope"))
    intercept = find("PixelValueTransformationSequence", "RescaleIntercept",
                     ds.get("RescaleIntercept"))
    slope, intercept = _rescale(slope, intercept, path)
    phase = {key: str(value) for key in PHASE_KEYS
             if (value := _phase_value(ds, key, find)) not in (None, "")}
    thickness = _finite(find("PixelMeasuresSequence", "SliceThickness"))
    if thickness is not None and 0 < thickness <= MAX_PIXEL_SPACING_MM:
        frame_facts["slice_thickness"] = thickness
    rows, columns, dtype, offset = pixels.rows, pixels.columns, pixels.dtype, pixels.offset
    return Frame(
        path=str(path),
        frame=index if count > 1 or per_frame is not None else None,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        instance=_int_or_none(ds.get("InstanceNumber")),
        position=_position(position, path),
        orientation=_orientation(orientation, path),
        rows=rows,
        columns=columns,
        pixel_spacing=_floats(spacing, 2, spacing_source, path),
        spacing_source=spacing_source if spacing is not None else None,
        slope=1.0 if slope is None else slope,
        intercept=0.0 if intercept is None else intercept,
        has_rescale=slope is not None or intercept is not None,
        padding=common.padding,
        dtype=dtype.str,
        bits_stored=pixels.bits_stored,
        transfer_syntax=str(ts),
        pixel_offset=None if offset is None else offset + index * rows * columns * dtype.itemsize,
        image_type=common.image_type,
        modality=pixels.modality,
        patient_orientation=common.patient_orientation,
        phase=phase,
        facts=frame_facts,
        frame_count=count,
    )


def _naming_value(value) -> str:
    """A header value as text for a name (multiple values joined with ``\\``)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _class_name(ds) -> str:
    """The SOP class of ``ds`` by name, without " Storage" ("X-Ray Radiation Dose SR")."""
    from pydicom.uid import UID

    uid = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    name = UID(uid).name if uid else ""
    return name.removesuffix(" Storage") if name != uid else uid


def _header_int(ds, keyword: str, default: int | None, path: Path, *,
                required: bool = True) -> int | None:
    """An integer attribute of the header; :class:`InputError` naming it when it is not one."""
    value = ds.get(keyword)
    if value in (None, ""):
        if default is None and required:
            raise InputError(f"has pixel data but no {keyword}", path=path,
                             hint="the image header is incomplete; fix it or leave the file out")
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"invalid {keyword} {value!r}", path=path,
                         hint="fix the header or leave the file out") from None


def _finite(value) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, not a number, NaN, infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _usable_spacing(value, keyword: str, path: Path, facts: dict) -> Any:
    """``value`` unless it is a spacing of zero or less (real exports write ``0\\0`` for
    unknown); then ``None`` and the value in ``facts`` so the user is told. An absurd or
    non-numeric spacing is an error."""
    if value in (None, ""):
        return None
    numbers = _floats(value, 2, keyword, path)
    if numbers is not None and min(numbers) <= 0:
        facts[f"invalid_{keyword}"] = list(numbers)
        return None
    if numbers is not None and max(numbers) > MAX_PIXEL_SPACING_MM:
        raise InputError(f"{keyword} {list(numbers)} mm cannot be right (over "
                         f"{MAX_PIXEL_SPACING_MM:g} mm per pixel)", path=path,
                         hint="fix the header or leave the file out")
    return value


def _rescale(slope, intercept, path: Path) -> tuple[float | None, float | None]:
    """RescaleSlope and RescaleIntercept as finite numbers (``None`` when absent)."""
    numbers = []
    for keyword, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        if value in (None, ""):
            numbers.append(None)
            continue
        number = _finite(value)
        if (number is None or (keyword == "RescaleSlope" and number == 0)
                or abs(number) > MAX_RESCALE):
            raise InputError(f"{keyword} {value!r} is not a usable number", path=path,
                             hint="fix the header or leave the file out")
        numbers.append(number)
    return numbers[0], numbers[1]


def _check_decoder(ts, path: Path) -> None:
    """Fail in the header pass if no installed plugin can decode the transfer syntax."""
    if not ts.is_compressed or not ts.is_encapsulated:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise InputError(f"pixel data in transfer syntax {ts.name} ({ts}) has no Python decoder",
                         path=path, hint="decompress it first, e.g. `gdcmconv --raw IN OUT` or "
                                         "`dcmdjpeg IN OUT`") from None
    if not decoder.is_available:
        needed = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise InputError(f"no installed decoder reads transfer syntax {ts.name} ({ts})", path=path,
                         hint=f"install one of: {needed}")


def _frame_count(ds, path: Path) -> int:
    value = ds.get("NumberOfFrames", 1)
    try:
        count = int(value if value not in (None, "") else 1)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"invalid NumberOfFrames {value!r}", path=path,
                         hint="fix the header (e.g. with dcmodify) or leave the file out") from None
    if count < 1:
        raise InputError(f"NumberOfFrames is {count}", path=path, hint="the file holds no image")
    return count


def _stored_dtype(pixel_tag: int, bits_allocated: int, signed: bool, path: Path) -> np.dtype:
    if pixel_tag == 0x7FE00008:
        return np.dtype("<f4")
    if pixel_tag == 0x7FE00009:
        return np.dtype("<f8")
    if bits_allocated == 1:
        return np.dtype(np.uint8)
    if bits_allocated not in (8, 16, 32):
        raise InputError(f"BitsAllocated {bits_allocated} is not supported", path=path,
                         hint="DICOM images use 1, 8, 16 or 32 bits per pixel")
    return np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")


def _pixel_offset(ds, pixel_tag: int, ts, nbytes: int, path: Path, *, frames: int,
                  row_bytes: int) -> int | None:
    """File offset of native pixel data that can be read directly, else ``None``.

    Checks the header's size (``nbytes`` = Rows x Columns x frames x bytes) against the pixel
    data before anything is allocated. Raises :class:`InputError` when the file is shorter
    than its pixel data, when the data is at least a row longer than the header describes, or
    when compressed data holds fewer fragments than frames or could not decode to ``nbytes``.
    """
    element = ds.get_item(pixel_tag, keep_deferred=True)
    deferred = getattr(element, "value", b"") is None and getattr(element, "value_tell", None) is not None
    if ts.is_encapsulated:
        _check_encapsulated(ds, pixel_tag, element, deferred, nbytes, frames, path)
        return None
    if ts.is_deflated:
        return None
    if deferred:
        offset = element.value_tell
        available = min(os.path.getsize(path) - offset, element.length)
    else:
        offset = None
        value = ds[pixel_tag].value
        available = len(value) if value is not None else 0
    one_bit = int(ds.get("BitsAllocated", 16) or 16) == 1
    if available < nbytes and not one_bit:
        raise InputError(f"truncated: pixel data has {available} of {nbytes} bytes", path=path,
                         hint="the file is incomplete; copy it again from the source")
    if available - nbytes > max(row_bytes, MAX_EXCESS_FRACTION * nbytes) and not one_bit:
        raise InputError(f"pixel data has {available} bytes, but Rows x Columns x frames x "
                         f"bytes per pixel is {nbytes}: the header does not describe the data",
                         path=path, hint="fix Rows, Columns or NumberOfFrames, or leave the "
                                         "file out")
    native = str(ts) in NATIVE_SYNTAXES
    if deferred and native and pixel_tag == 0x7FE00010 and int(ds.get("BitsAllocated", 16)) in (8, 16, 32):
        return offset
    return None


def _check_encapsulated(ds, pixel_tag: int, element, deferred: bool, nbytes: int, frames: int,
                        path: Path) -> None:
    """Compressed pixel data: at least one fragment per frame, and a plausible decoded size."""
    if deferred:
        with open(path, "rb") as handle:
            handle.seek(element.value_tell)
            fragments, compressed = _count_fragments(handle, os.path.getsize(path), path)
    else:
        from pydicom.encaps import parse_fragments

        value = ds[pixel_tag].value or b""
        try:
            fragments = max(0, parse_fragments(value)[0] - 1)   # the first is the offset table
        except (ValueError, TypeError):
            raise InputError("damaged compressed pixel data (its items cannot be read)",
                             path=path, hint="copy the file again from the source") from None
        compressed = len(value)
    if fragments < frames:
        raise InputError(f"the header says {frames} frame(s) but the compressed pixel data "
                         f"holds {fragments} fragment(s)", path=path,
                         hint="fix NumberOfFrames or copy the file again from the source")
    if nbytes > DECODE_CHECK_BYTES and nbytes > MAX_DECODE_RATIO * max(1, compressed):
        raise InputError(f"Rows x Columns x frames ({nbytes / 2**20:.0f} MiB decoded) cannot "
                         f"come from {compressed} bytes of compressed pixel data", path=path,
                         hint="the header is damaged; fix Rows, Columns or NumberOfFrames")


def _count_fragments(handle, size: int, path: Path) -> tuple[int, int]:
    """Fragments (after the basic offset table) and their bytes, read from the item headers."""
    count = compressed = 0
    first = True
    while True:
        header = handle.read(8)
        if len(header) < 8 or header[:4] == _SEQUENCE_END:
            break
        if header[:4] != _ITEM_TAG:
            raise InputError("damaged compressed pixel data (an item tag is missing)", path=path,
                             hint="copy the file again from the source")
        length = int.from_bytes(header[4:], "little")
        if length == 0xFFFFFFFF or handle.tell() + length > size:
            raise InputError("truncated: a compressed pixel data fragment ends after the file",
                             path=path, hint="copy the file again from the source")
        handle.seek(length, os.SEEK_CUR)
        if not first:
            count += 1
            compressed += length
        first = False
    return count, compressed


def _plain_multiframe_positions(ds, count: int) -> list | None:
    """Frame positions of a plain multi-frame file (RTDOSE, NM) from its offsets, if any."""
    if count == 1 or "PerFrameFunctionalGroupsSequence" in ds:
        return None
    origin = ds.get("ImagePositionPatient") or _detector(ds, "ImagePositionPatient")
    cosines = ds.get("ImageOrientationPatient") or _detector(ds, "ImageOrientationPatient")
    if origin is None or cosines is None:
        return None
    offsets = ds.get("GridFrameOffsetVector")
    if offsets is not None and len(offsets) == count:
        steps = np.asarray([float(v) for v in offsets])
    else:
        spacing = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        if spacing in (None, ""):
            return None
        steps = np.arange(count) * float(spacing)
    cosines = np.asarray([float(v) for v in cosines])
    normal = np.cross(cosines[:3], cosines[3:])
    base = np.asarray([float(v) for v in origin])
    return [tuple(base + step * normal) for step in steps]


def _detector(ds, keyword: str):
    """``keyword`` from the first DetectorInformationSequence item (NM images)."""
    item = _first_item(ds, "DetectorInformationSequence")
    return None if item is None else item.get(keyword)


def _first_item(ds, keyword: str):
    sequence = ds.get(keyword)
    return sequence[0] if sequence else None


def _phase_value(ds, key: str, find) -> Any:
    if key == "TemporalPositionIndex":
        return find("FrameContentSequence", "TemporalPositionIndex")
    if key == "StackID":
        return find("FrameContentSequence", "StackID")
    if key == "EchoTime":
        return find("MREchoSequence", "EffectiveEchoTime", ds.get("EchoTime"))
    if key == "DiffusionBValue":
        return find("MRDiffusionSequence", "DiffusionBValue", ds.get("DiffusionBValue"))
    if key == "ImageType":
        value = find("CTImageFrameTypeSequence", "FrameType") or find("MRImageFrameTypeSequence", "FrameType")
        value = value if value is not None else ds.get("ImageType")
        return "\\".join(map(str, _as_list(value))) if value is not None else None
    return ds.get(key)


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _floats(value, count: int, keyword: str, path: Path) -> tuple[float, ...] | None:
    if value in (None, ""):
        return None
    try:
        numbers = tuple(float(v) for v in _as_list(value))
    except (TypeError, ValueError):
        raise InputError(f"invalid {keyword} {value!r}", path=path,
                         hint="fix the header or leave the file out") from None
    if len(numbers) != count or not np.all(np.isfinite(numbers)):
        raise InputError(f"{keyword} needs {count} numbers, got {list(numbers)}", path=path,
                         hint="fix the header or leave the file out")
    return numbers


def _position(value, path: Path) -> tuple[float, ...] | None:
    numbers = _floats(value, 3, "ImagePositionPatient", path)
    if numbers is not None and max(abs(v) for v in numbers) > MAX_COORDINATE_MM:
        raise InputError(f"ImagePositionPatient {list(numbers)} mm cannot be right", path=path,
                         hint="fix the header or leave the file out")
    return numbers


def _orientation(value, path: Path) -> tuple[float, ...] | None:
    """ImageOrientationPatient: two unit vectors at right angles (within
    :data:`COSINE_TOLERANCE`), else :class:`InputError`."""
    numbers = _floats(value, 6, "ImageOrientationPatient", path)
    if numbers is None:
        return None
    row, column = np.asarray(numbers[:3]), np.asarray(numbers[3:])
    if (abs(np.linalg.norm(row) - 1) > COSINE_TOLERANCE
            or abs(np.linalg.norm(column) - 1) > COSINE_TOLERANCE
            or abs(float(row @ column)) > COSINE_TOLERANCE):
        raise InputError(f"ImageOrientationPatient {list(numbers)} is not two unit vectors at "
                         "right angles", path=path, hint="fix the header or leave the file out")
    return numbers


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _json_value(value) -> Any:
    """A pydicom value as plain JSON (numbers, strings, lists); ``None`` for NaN or infinity."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        values = [_json_value(v) for v in value]
        return None if any(v is None for v in values) else values
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    return str(value)


# -- pixels --------------------------------------------------------------------------------

def read_pixels(frames: Sequence[Frame], *, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values of ``frames`` (all from one file), stacked as ``(len(frames), rows, cols)``.

    Values are the stored integers (no rescale), sign-extended or masked to ``BitsStored`` as
    the standard says; the dtype is the stored one in native byte order. ``out`` (of that
    shape and dtype) receives them, read straight from the file where they are stored
    uncompressed, and is returned.

    Raises
    ------
    InputError
        The file cannot be decoded (naming its transfer syntax) or no longer matches its header.
    """
    first = frames[0]
    path = first.path
    if any(f.path != path for f in frames):
        raise ValueError("read_pixels reads frames of one file")
    dtype = np.dtype(first.dtype)
    shape = (len(frames), first.rows, first.columns)
    native = dtype.newbyteorder("=")
    if out is None:
        out = np.empty(shape, native)
    elif out.dtype != native or out.shape != shape:
        out[...] = read_pixels(frames)
        return out
    if all(f.pixel_offset is not None for f in frames):
        _read_native(frames, out, dtype)
        return _fix_bits(out, first.bits_stored)
    out[...] = _decode(frames)
    return out


def _read_native(frames: Sequence[Frame], out: np.ndarray, dtype: np.dtype) -> None:
    """Uncompressed pixel data read from the file into ``out`` (one read per frame, no copy
    unless the bytes must be swapped)."""
    path = frames[0].path
    swap = not dtype.isnative and dtype.itemsize > 1
    try:
        with open(path, "rb", buffering=0) as handle:
            for index, frame in enumerate(frames):
                target = out[index]
                handle.seek(frame.pixel_offset)
                if swap:
                    values = np.frombuffer(handle.read(target.nbytes), dtype=dtype)
                    got = values.nbytes
                    if got == target.nbytes:
                        target[...] = values.reshape(target.shape)
                else:
                    got = handle.readinto(memoryview(target).cast("B"))
                if got != target.nbytes:
                    raise InputError("truncated: pixel data ends early", path=path,
                                     hint="the file is incomplete; copy it again from the source")
    except OSError as exc:
        raise InputError(f"cannot read pixel data ({reason(exc)})", path=path) from None


def _fix_bits(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """Sign-extend (signed) or mask (unsigned) values stored in fewer bits than allocated."""
    bits = pixels.dtype.itemsize * 8
    if pixels.dtype.kind not in "iu" or bits_stored >= bits or bits_stored <= 0:
        return pixels
    if pixels.dtype.kind == "u":
        pixels &= np.array((1 << bits_stored) - 1, dtype=pixels.dtype)
    else:
        shift = bits - bits_stored
        pixels <<= shift
        pixels >>= shift
    return pixels


def _decode(frames: Sequence[Frame]) -> np.ndarray:
    import pydicom
    from pydicom.uid import UID

    first = frames[0]
    ts = UID(first.transfer_syntax)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(first.path, force=True)
            _check_codestream(ds, first)
            with _quiet_stderr():
                images = np.asarray(_decoded(ds, ts))
    except InputError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:            # the Rust RLE decoder panics on some damage
        raise InputError(f"cannot decode {ts.name} pixel data ({reason(exc)})", path=first.path,
                         hint="the pixel data is damaged, or re-save it uncompressed "
                              "(`gdcmconv --raw`) and try again") from None
    if images.ndim == 2:
        images = images[np.newaxis]
    if images.shape[0] == first.frame_count and first.frame_count > 1:
        images = images[[f.frame for f in frames]]
    if images.shape[1:] != (first.rows, first.columns) or images.shape[0] != len(frames):
        raise InputError(f"decoded pixel data has shape {images.shape}, the header says "
                         f"{len(frames)} x {first.rows} x {first.columns}", path=first.path,
                         hint="the file is damaged; leave it out")
    return images.astype(np.dtype(first.dtype).newbyteorder("="), copy=False)


class DecodeError(Exception):
    """Every decoder plugin failed; the message is the most telling failure."""


def _decoded(ds, ts):
    """The pixels of ``ds``, trying each installed decoder plugin in turn (GDCM last, only where
    nothing else reads ``ts``). A plugin that panics is passed over for one that says why."""
    from pydicom.pixels import get_decoder, pixel_array

    if not ts.is_encapsulated:
        return ds.pixel_array
    plugins = list(get_decoder(ts).available_plugins)
    preferred = [p for p in plugins if p not in _LAST_RESORT_PLUGINS]
    failures: list[BaseException] = []
    for plugin in preferred or plugins:
        try:
            return pixel_array(ds, decoding_plugin=plugin)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            failures.append(exc)
    telling = [e for e in failures if isinstance(e, Exception)] or failures
    if not telling:
        raise DecodeError("no decoder plugin is available")
    if not isinstance(telling[0], Exception):       # only panics: the data is damaged
        raise DecodeError("the decoder stopped on damaged data")
    raise telling[0]


def _check_codestream(ds, frame: Frame) -> None:
    """The first JPEG or JPEG 2000 frame holds an image of Rows x Columns (a decoder given the
    wrong size writes past its buffer, or crops the image without a word)."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import UID

    if not UID(frame.transfer_syntax).is_encapsulated:
        return
    try:
        data = next(generate_frames(ds.PixelData, number_of_frames=frame.frame_count))
    except Exception as exc:
        raise InputError(f"damaged compressed pixel data ({reason(exc)})", path=frame.path,
                         hint="copy the file again from the source") from None
    if UID(frame.transfer_syntax) == RLE_LOSSLESS:
        plane = _rle_plane_bytes(bytes(data))
        expected = frame.rows * frame.columns
        if plane is not None and not expected <= plane <= expected + max(1, frame.columns):
            raise InputError(f"the RLE data holds {plane} pixels a plane, Rows x Columns is "
                             f"{frame.rows} x {frame.columns} = {expected}", path=frame.path,
                             hint="fix Rows and Columns or copy the file again from the source")
        return
    size = _codestream_size(bytes(data[:4096]))
    if size is not None and size != (frame.rows, frame.columns):
        raise InputError(f"the compressed image is {size[0]} x {size[1]} pixels, the header says "
                         f"{frame.rows} x {frame.columns} (Rows x Columns)", path=frame.path,
                         hint="fix Rows and Columns or copy the file again from the source")


def _rle_plane_bytes(data: bytes) -> int | None:
    """Decoded length of the first segment (one byte plane) of an RLE frame, from its runs
    (PS3.5 G.3.1: n < 128 copies n + 1 bytes, n > 128 repeats one byte 257 - n times)."""
    if len(data) < RLE_HEADER_BYTES:
        return None
    header = np.frombuffer(data, dtype="<u4", count=RLE_HEADER_BYTES // 4)
    segments = int(header[0])
    if not 1 <= segments <= 15:
        return None
    start = int(header[1])
    end = int(header[2]) if segments > 1 else len(data)
    if not RLE_HEADER_BYTES <= start < end <= len(data):
        return None
    total, at = 0, start
    while at < end:
        n = data[at]
        if n < 128:
            total += n + 1
            at += n + 2
        elif n > 128:
            total += 257 - n
            at += 2
        else:
            at += 1
    return total


def _codestream_size(head: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG SOF or JPEG 2000 SIZ marker; ``None`` when not found."""
    if head.startswith(_JPEG_SOI):
        from pydicom.pixels.utils import _get_jpg_parameters

        try:
            found = _get_jpg_parameters(head)
        except Exception:
            return None
        height, width = found.get("height"), found.get("width")
        return (height, width) if height and width else None
    at = head.find(_J2K_SIZ)
    if 0 <= at and len(head) >= at + 24:
        fields = np.frombuffer(head, dtype=">u4", count=4, offset=at + 8)
        width, height = int(fields[0] - fields[2]), int(fields[1] - fields[3])
        return (height, width) if height > 0 and width > 0 else None
    return None
