"""A minimal DICOM tag reader for the common case: uncompressed little-endian image files.

:func:`read_header` walks the raw bytes of a Part 10 file (``DICM`` magic, Explicit or
Implicit VR Little Endian) element by element with :mod:`struct`, from the file meta to the
pixel data, without pydicom and without building a data set. It keeps every top-level
element's position and converts the values of the attributes :mod:`medtool.dicom` reads (the
table :data:`TAGS`) only when asked, the way pydicom converts them, so that
:func:`medtool.dicom.read_frames` gives the same :class:`~medtool.dicom.Frame` records on
either path.

Anything it does not understand raises :class:`Fallback`, and the file is read by pydicom
instead; it never guesses: another transfer syntax, a bare data set, a VR it does not know or
that differs from the one expected, a value with non-ASCII bytes or a number pydicom would
only warn about, a sequence whose content is asked for (functional groups, detector
information), undefined lengths outside sequences, data after the pixel data.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from typing import Any

#: Where the ``DICM`` magic of a Part 10 file sits, and the magic itself.
MAGIC_OFFSET, MAGIC = 128, b"DICM"
#: Transfer syntaxes read here: UID -> (name as pydicom gives it, implicit VR).
SYNTAXES = {"1.2.840.10008.1.2": ("Implicit VR Little Endian", True),
            "1.2.840.10008.1.2.1": ("Explicit VR Little Endian", False)}
#: Values longer than this are not read by pydicom's header pass (``defer_size``); the pixel
#: data of :mod:`medtool.dicom` is then read from the file at its offset.
DEFER_BYTES = 2048
#: First read of a file; a header longer than this is read again in a larger prefix.
FIRST_READ_BYTES = 16384
PIXEL_DATA = 0x7FE00010
#: Item, item delimitation and sequence delimitation tags (group FFFE).
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Explicit VRs with a 2-byte reserved field and a 4-byte length; every VR this reader knows.
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
KNOWN_VRS = LONG_VRS | frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
#: struct formats of the binary number VRs.
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
#: Text VRs: split at backslashes, each value stripped of trailing spaces and NULs (pydicom's
#: ``convert_text``); string VRs: the whole value stripped, then split (``multi_string``).
TEXT_VRS = frozenset({"SH", "LO", "UC"})
STRING_VRS = frozenset({"CS", "AS", "DA", "DT", "TM", "UI"})
#: The numbers pydicom reads without a warning (IS and DS).
_IS_TEXT = re.compile(r"[+-]?\d+\Z")
_DS_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
#: Bytes that make a text value depend on the character set (beyond ASCII, ISO 2022 escapes).
_NOT_ASCII = re.compile(rb"[\x80-\xff\x1b]")

#: First bytes of a bare data set (no preamble): group 0002 or 0008, either byte order.
BARE_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a DICOM file (Part 10 magic, or a bare data set)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(MAGIC_OFFSET + 4)
    except OSError:
        return False
    if head[MAGIC_OFFSET:MAGIC_OFFSET + 4] == MAGIC:
        return True
    return len(head) >= 8 and head[:2] in BARE_STARTS


#: The attributes that can be asked for: keyword -> (tag, VRs accepted).
TAGS: dict[str, tuple[int, tuple[str, ...]]] = {
    keyword: (tag, tuple(vrs.split()))
    for keyword, tag, vrs in (
        ("TransferSyntaxUID", 0x00020010, "UI"), ("MediaStorageSOPClassUID", 0x00020002, "UI"),
        ("SpecificCharacterSet", 0x00080005, "CS"), ("ImageType", 0x00080008, "CS"),
        ("SOPClassUID", 0x00080016, "UI"), ("SOPInstanceUID", 0x00080018, "UI"),
        ("StudyDate", 0x00080020, "DA"), ("SeriesDate", 0x00080021, "DA"),
        ("AcquisitionDate", 0x00080022, "DA"), ("StudyTime", 0x00080030, "TM"),
        ("SeriesTime", 0x00080031, "TM"), ("AcquisitionTime", 0x00080032, "TM"),
        ("ContentTime", 0x00080033, "TM"), ("AccessionNumber", 0x00080050, "SH"),
        ("Modality", 0x00080060, "CS"), ("Manufacturer", 0x00080070, "LO"),
        ("InstitutionName", 0x00080080, "LO"), ("StudyDescription", 0x00081030, "LO"),
        ("SeriesDescription", 0x0008103E, "LO"), ("ManufacturerModelName", 0x00081090, "LO"),
        ("PatientID", 0x00100020, "LO"), ("PatientSex", 0x00100040, "CS"),
        ("PatientAge", 0x00101010, "AS"), ("PatientIdentityRemoved", 0x00120062, "CS"),
        ("BodyPartExamined", 0x00180015, "CS"), ("SliceThickness", 0x00180050, "DS"),
        ("KVP", 0x00180060, "DS"), ("EchoTime", 0x00180081, "DS"),
        ("EchoNumbers", 0x00180086, "IS"), ("SpacingBetweenSlices", 0x00180088, "DS"),
        ("ProtocolName", 0x00181030, "LO"), ("TriggerTime", 0x00181060, "DS"),
        ("GantryDetectorTilt", 0x00181120, "DS"), ("ImagerPixelSpacing", 0x00181164, "DS"),
        ("ConvolutionKernel", 0x00181210, "SH"), ("PatientPosition", 0x00185100, "CS"),
        ("ViewPosition", 0x00185101, "CS"), ("DiffusionBValue", 0x00189087, "FD"),
        ("StudyInstanceUID", 0x0020000D, "UI"), ("SeriesInstanceUID", 0x0020000E, "UI"),
        ("StudyID", 0x00200010, "SH"), ("SeriesNumber", 0x00200011, "IS"),
        ("AcquisitionNumber", 0x00200012, "IS"), ("InstanceNumber", 0x00200013, "IS"),
        ("PatientOrientation", 0x00200020, "CS"), ("ImagePositionPatient", 0x00200032, "DS"),
        ("ImageOrientationPatient", 0x00200037, "DS"), ("FrameOfReferenceUID", 0x00200052, "UI"),
        ("TemporalPositionIdentifier", 0x00200100, "IS"), ("SamplesPerPixel", 0x00280002, "US"),
        ("PhotometricInterpretation", 0x00280004, "CS"), ("NumberOfFrames", 0x00280008, "IS"),
        ("Rows", 0x00280010, "US"), ("Columns", 0x00280011, "US"),
        ("PixelSpacing", 0x00280030, "DS"), ("BitsAllocated", 0x00280100, "US"),
        ("BitsStored", 0x00280101, "US"), ("HighBit", 0x00280102, "US"),
        ("PixelRepresentation", 0x00280103, "US"), ("PixelPaddingValue", 0x00280120, "US SS"),
        ("PixelPaddingRangeLimit", 0x00280121, "US SS"), ("RescaleIntercept", 0x00281052, "DS"),
        ("RescaleSlope", 0x00281053, "DS"), ("RescaleType", 0x00281054, "LO"),
        ("GridFrameOffsetVector", 0x3004000C, "DS"), ("DetectorInformationSequence", 0x00540022, "SQ"),
        ("SharedFunctionalGroupsSequence", 0x52009229, "SQ"),
        ("PerFrameFunctionalGroupsSequence", 0x52009230, "SQ"),
        ("PixelData", PIXEL_DATA, "OB OW"),
    )
}
#: Tag -> the VR a file in Implicit VR means ("US SS": resolved by PixelRepresentation).
_IMPLICIT_VRS = {tag: " ".join(vrs) for tag, vrs in TAGS.values()}
_KEYWORDS = {tag: keyword for keyword, (tag, _) in TAGS.items()}
_EXPECTED_VRS = {tag: vrs for tag, vrs in TAGS.values()}
#: Tag of PixelRepresentation, which resolves the "US or SS" attributes of Implicit VR files.
_PIXEL_REPRESENTATION = 0x00280103


class Fallback(Exception):
    """The file is not the common case this reader handles: pydicom reads it."""


class _NeedMore(Exception):
    """The header runs past the bytes read so far."""


class _AsWritten:
    """A number that prints as written in the file (as pydicom's ``DSfloat`` and ``IS``)."""

    def __new__(cls, text: str):
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text


class DS(_AsWritten, float):
    """A DS number that prints as written (as pydicom's ``DSfloat``)."""


class IS(_AsWritten, int):
    """An IS number that prints as written (as pydicom's ``IS``)."""


class NativeSyntax(str):
    """The transfer syntax of a file read here, with the properties :mod:`medtool.dicom`
    asks of pydicom's ``UID``."""

    is_little_endian = True
    is_encapsulated = is_deflated = is_compressed = False

    @property
    def name(self) -> str:
        return SYNTAXES[str(self)][0]


class Element:
    """One top-level element: VR, length and where its value lies in the file.

    ``value`` is ``None`` for a value pydicom defers (longer than :data:`DEFER_BYTES`), else
    the converted value (pixel data: its bytes).
    """

    __slots__ = ("tag", "VR", "length", "value_tell", "value")

    def __init__(self, tag: int, vr: str, length: int, value_tell: int, value: Any):
        self.tag, self.VR, self.length, self.value_tell, self.value = tag, vr, length, value_tell, value


class Header:
    """The top-level attributes of one file, asked for as a pydicom ``Dataset`` is: ``get``,
    ``in``, ``[tag]``, attribute access, ``get_item`` and ``file_meta``."""

    def __init__(self, buffer: bytes, elements: dict[int, tuple[str, int, int]], *,
                 implicit: bool, meta: "Header | None" = None,
                 transfer_syntax: NativeSyntax | None = None):
        self._buffer, self._elements, self._implicit = buffer, elements, implicit
        self.file_meta = meta
        self.transfer_syntax = transfer_syntax
        self._cache: dict[int, Any] = {}

    def __contains__(self, key) -> bool:
        return _tag(key) in self._elements

    def get(self, key, default: Any = None) -> Any:
        tag = _tag(key)
        cache = self._cache
        if tag in cache:
            return cache[tag]
        if tag not in self._elements:
            return default
        value = cache[tag] = self._convert(tag)
        return value

    def __getitem__(self, key) -> Element:
        tag = _tag(key)
        vr, length, tell = self._elements[tag]
        return Element(tag, vr, length, tell, self.get(tag))

    def get_item(self, key, *, keep_deferred: bool = False) -> Element:
        """The element of ``key`` (its value ``None`` when deferred, as pydicom's)."""
        tag = _tag(key)
        vr, length, tell = self._elements[tag]
        value = None if length > DEFER_BYTES else self.get(tag)
        return Element(tag, vr, length, tell, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in TAGS or TAGS[name][0] not in self._elements:
            raise AttributeError(name)
        return self.get(name)

    def _convert(self, tag: int) -> Any:
        vr, length, tell = self._elements[tag]
        raw = self._buffer[tell:tell + length]
        if tag == PIXEL_DATA:
            return raw
        if vr == "US SS":
            representation = self.get(_PIXEL_REPRESENTATION)
            if representation not in (0, 1):
                raise Fallback("US or SS without PixelRepresentation")
            vr = "SS" if representation == 1 else "US"
        return convert(raw, vr)


def _tag(key) -> int:
    entry = TAGS.get(key)                               # (a keyword: the common call)
    if entry is not None:
        return entry[0]
    if isinstance(key, int):
        return key
    raise Fallback(f"{key} is not read by the fast path")


def convert(raw: bytes, vr: str) -> Any:
    """``raw`` as pydicom's value of that VR (``Fallback`` where it would warn or decode).

    The slices of a series repeat most values byte for byte, so conversions are remembered
    (a list comes back as a new list each time).
    """
    if len(raw) > _MEMO_BYTES:
        return _convert(raw, vr)
    value = _memo(raw, vr)
    return list(value) if isinstance(value, list) else value


#: Values up to this long are remembered by :func:`convert`.
_MEMO_BYTES = 256


@functools.lru_cache(maxsize=4096)
def _memo(raw: bytes, vr: str) -> Any:
    return _convert(raw, vr)


def _convert(raw: bytes, vr: str) -> Any:
    if vr in NUMBER_FORMATS:
        size = struct.calcsize(NUMBER_FORMATS[vr])
        if not raw:
            return None
        if len(raw) % size:
            raise Fallback(f"{vr} value of {len(raw)} bytes")
        numbers = struct.unpack(f"<{len(raw) // size}{NUMBER_FORMATS[vr]}", raw)
        return numbers[0] if len(numbers) == 1 else list(numbers)
    if _NOT_ASCII.search(raw):
        raise Fallback("text beyond ASCII")
    text = raw.decode("ascii")
    if vr in TEXT_VRS:
        values = [v.rstrip("\0 ") for v in text.split("\\")]
    elif vr in STRING_VRS:
        values = text.rstrip(" \0").split("\\")
    elif vr in ("DS", "IS"):
        values = text.strip().rstrip(" \0").split("\\")
        if values == [""]:
            return ""
        pattern, kind = (_DS_TEXT, DS) if vr == "DS" else (_IS_TEXT, IS)
        stripped = [v.strip() for v in values]
        if not all(pattern.match(v) for v in stripped):
            raise Fallback(f"{vr} value {text!r}")
        values = [kind(v) for v in stripped]
    else:
        raise Fallback(f"VR {vr} is not read by the fast path")
    return values[0] if len(values) == 1 else values


def read_header(path: str | os.PathLike) -> Header:
    """The top-level elements of the DICOM file at ``path`` (see :class:`Header`).

    Raises
    ------
    Fallback
        The file is not a Part 10 file in Explicit or Implicit VR Little Endian that this
        reader walks to its pixel data without doubt.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        buffer = handle.read(FIRST_READ_BYTES)
        while True:
            try:
                return _parse(buffer, size)
            except _NeedMore:
                if len(buffer) >= size:
                    raise Fallback("the header ends after the file") from None
                buffer += handle.read(max(len(buffer), FIRST_READ_BYTES))


def _parse(buffer: bytes, size: int) -> Header:
    if buffer[MAGIC_OFFSET:MAGIC_OFFSET + len(MAGIC)] != MAGIC:
        raise Fallback("no Part 10 preamble")
    meta_elements: dict[int, tuple[str, int, int]] = {}
    start = _walk(buffer, MAGIC_OFFSET + len(MAGIC), meta_elements, implicit=False,
                  top=True, group=0x0002)
    meta = Header(buffer, meta_elements, implicit=False)
    syntax = meta.get("TransferSyntaxUID")
    if not isinstance(syntax, str) or syntax not in SYNTAXES:
        raise Fallback(f"transfer syntax {syntax!r}")
    implicit = SYNTAXES[syntax][1]
    _check_encoding(buffer, start, implicit=implicit)
    elements: dict[int, tuple[str, int, int]] = {}
    _walk(buffer, start, elements, implicit=implicit, top=True)
    if PIXEL_DATA not in elements:
        raise Fallback("no pixel data")
    _, length, tell = elements[PIXEL_DATA]
    if tell + length < size:
        raise Fallback("data after the pixel data")
    return Header(buffer, elements, implicit=implicit, meta=meta,
                  transfer_syntax=NativeSyntax(syntax))


def _check_encoding(buffer: bytes, at: int, *, implicit: bool) -> None:
    """pydicom switches the VR encoding when the first element says otherwise: fall back."""
    if len(buffer) < at + 6:
        raise _NeedMore
    looks_explicit = buffer[at + 4:at + 6] in KNOWN_VRS
    if implicit and looks_explicit:
        raise Fallback("implicit VR data that looks explicit")


def _walk(buffer: bytes, at: int, elements: dict | None, *, implicit: bool, top: bool,
          group: int | None = None, stop: int | None = None) -> int:
    """Walk elements from ``at``; return where the walk ended.

    ``group``: stop at the first element of another group (the file meta). ``stop``: the
    delimitation tag that ends an item of undefined length. At the top level (``top``) the
    walk ends after the pixel data; elements are recorded in ``elements`` as
    ``tag -> (VR, length, value offset)``.
    """
    unpack, previous, size = struct.unpack_from, -1, len(buffer)
    explicit_header, implicit_header = EXPLICIT_HEADER.unpack_from, _IMPLICIT_HEADER.unpack_from
    while True:
        if size < at + 8:
            raise _NeedMore
        if implicit:
            first, second, length = implicit_header(buffer, at)
            code = b""
        else:                                           # tag, VR and a 16-bit length at once
            first, second, code, length = explicit_header(buffer, at)
        tag = first << 16 | second
        if group is not None and first != group:
            return at
        if stop is not None and tag == stop:
            return at + 8
        if first == 0xFFFE or tag <= previous:
            raise Fallback(f"unexpected tag {tag:08X}")
        previous = tag
        if implicit:
            vr, header = _IMPLICIT_VRS.get(tag, ""), 8
        else:
            vr = VR_NAMES.get(code)
            if vr is None:
                raise Fallback(f"VR {code!r}")
            if code in LONG_VRS:
                if size < at + 12:
                    raise _NeedMore
                length, header = unpack("<I", buffer, at + 8)[0], 12
            else:
                header = 8
        tell = at + header
        if length == UNDEFINED_LENGTH:
            if tag == PIXEL_DATA or (not implicit and vr != "SQ"):
                raise Fallback("undefined length outside a sequence")
            at = _skip_sequence(buffer, tell, implicit=implicit)
            if elements is not None:
                elements[tag] = ("SQ", UNDEFINED_LENGTH, tell)
            continue
        if not implicit and tag in _EXPECTED_VRS and vr not in _EXPECTED_VRS[tag]:
            raise Fallback(f"{_KEYWORDS[tag]} has VR {vr}")     # read as its expected VR only
        if elements is not None:
            elements[tag] = (vr, length, tell)
        if top and tag == PIXEL_DATA:
            if length <= DEFER_BYTES and len(buffer) < tell + length:
                raise _NeedMore             # pydicom reads a short pixel data value
            return tell + length
        if len(buffer) < tell + length:
            raise _NeedMore
        at = tell + length


#: Element headers: explicit VR (tag, VR, 16-bit length; for long VRs the reserved bytes) and
#: implicit VR (tag, 32-bit length).
EXPLICIT_HEADER = struct.Struct("<HH2sH")
_IMPLICIT_HEADER = struct.Struct("<HHI")
#: VR code -> VR name.
VR_NAMES = {code: code.decode() for code in KNOWN_VRS}


def _skip_sequence(buffer: bytes, at: int, *, implicit: bool) -> int:
    """Offset after the sequence of undefined length whose items start at ``at``."""
    unpack = struct.unpack_from
    while True:
        if len(buffer) < at + 8:
            raise _NeedMore
        first, second, length = unpack("<HHI", buffer, at)
        tag = first << 16 | second
        at += 8
        if tag == SEQUENCE_END:
            return at
        if tag != ITEM:
            raise Fallback(f"tag {tag:08X} inside a sequence")
        if length == UNDEFINED_LENGTH:
            _check_encoding(buffer, at, implicit=implicit)
            at = _walk(buffer, at, None, implicit=implicit, top=False, stop=ITEM_END)
        else:
            at += length

