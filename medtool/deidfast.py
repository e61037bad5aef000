"""anonymize's fast path: Explicit VR Little Endian files rewritten from their raw elements.

:func:`read` parses a Part 10 file (``DICM``, Explicit VR Little Endian file meta and data
set, sequences included) into :class:`RawDataset` trees: the part of pydicom's ``Dataset`` API
that :mod:`medtool.anonymize` uses (``keys``, ``ds[tag]``, ``del``, ``get``, keyword
attributes), so that one walker applies the PS3.15 table on either path. :meth:`RawDataset.save_as`
writes the bytes pydicom's ``save_as(enforce_file_format=True)`` would write for the same data
set: elements in tag order, values pydicom would write back unchanged copied as read, changed
values encoded and padded as pydicom encodes them, sequence and item lengths recomputed
(undefined lengths kept), the file meta group length recomputed.

Anything it cannot promise to write exactly as pydicom would raises :class:`Fallback` before
an output is touched, and the file goes through pydicom instead: another transfer syntax, no
preamble, a VR it does not know or ``UN``, odd lengths, tags out of order, bytes beyond ASCII
(or an escape) in a text value that is kept or read, a value pydicom would rewrite (spaces it
strips, a number it reads differently), a truncated file, an unknown pixel layout, data after
the pixel data.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

from . import dicomdict
from .dicomfast import (EXPLICIT_HEADER, ITEM, ITEM_END, LONG_VRS, MAGIC, MAGIC_OFFSET,
                        NUMBER_FORMATS, PIXEL_DATA, SEQUENCE_END, TEXT_VRS, UNDEFINED_LENGTH,
                        VR_NAMES)
from .dicomfast import KNOWN_VRS as HEADER_VRS

#: The one transfer syntax of this path.
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
#: Every VR this path reads: dicomfast's but ``UN`` (pydicom may give it the dictionary's VR).
KNOWN_VRS = HEADER_VRS - {b"UN"}
#: Values pydicom decodes as text: split at backslashes, each part stripped at the end
#: (``convert_text``: dicomfast's TEXT_VRS); the whole value stripped at the end, then split
#: (``multi_string`` and PN); the whole value stripped, never split (LT, ST, UT, UR).
SPLIT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "PN", "TM", "UI"})
SINGLE_VRS = frozenset({"LT", "ST", "UT", "UR"})
STRING_VRS = TEXT_VRS | SPLIT_VRS | SINGLE_VRS
#: struct codes of the binary number VRs (dicomfast's and the 64-bit ones).
NUMBER_CODES = {**NUMBER_FORMATS, "SV": "q", "UV": "Q"}
#: The numbers pydicom writes back exactly as read (its original string is kept).
_IS_TEXT = re.compile(rb"-?\d+\Z")
_DS_TEXT = re.compile(rb"-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
#: Bytes a kept text value may hold: printable ASCII, and line breaks and tabs in the long
#: texts; anything else may depend on the character set.
_PLAIN = re.compile(rb"[\x20-\x7e]*\Z")
_PLAIN_LONG = re.compile(rb"[\x20-\x7e\t\n\r\f]*\Z")
#: File meta elements pydicom's enforce_file_format needs (it adds only the first two and
#: the version name) and the file meta group length.
META_LENGTH, META_VERSION, META_IMPLEMENTATION = 0x00020000, 0x00020001, 0x00020012
META_REQUIRED = (0x00020002, 0x00020003, 0x00020010)
#: Attributes of the pixel layout, for the completeness check of the pixel data.
_LAYOUT = {"Rows": 0x00280010, "Columns": 0x00280011, "SamplesPerPixel": 0x00280002,
           "BitsAllocated": 0x00280100, "NumberOfFrames": 0x00280008,
           "PhotometricInterpretation": 0x00280004}


class Fallback(Exception):
    """This file goes through pydicom (the reason is the message)."""


class RawElement:
    """One element: its VR and its value, the raw bytes until a new value is given."""

    __slots__ = ("tag", "VR", "raw", "items", "undefined", "_value", "changed", "whole")

    def __init__(self, tag: int, vr: str, raw: bytes | memoryview | None,
                 whole: memoryview | None = None, items: list["RawDataset"] | None = None,
                 undefined: bool = False) -> None:
        # (positional: one is made per element read, and keywords cost a third of the call)
        self.tag = tag
        self.VR = vr
        self.raw = raw
        self.whole = whole              # header and value as read (written as is when kept)
        self.items = items
        self.undefined = undefined
        self._value: Any = None
        self.changed = False

    @property
    def keyword(self) -> str:
        return dicomdict.keyword(self.tag)

    @property
    def value(self) -> Any:
        if self.VR == "SQ":
            return self.items
        if self.changed:
            return self._value
        if self.VR in STRING_VRS:
            return _decoded_once(self.VR, bytes(self.raw))
        if self.VR in NUMBER_CODES:
            values = _numbers(self.VR, self.raw)
            return None if not values else values[0] if len(values) == 1 else values
        return bytes(self.raw)

    @value.setter
    def value(self, value: Any) -> None:
        if self.VR == "SQ":                             # a list of items (empty: [])
            self.items = list(value or ())
        else:
            self._value, self.changed = value, True

    @property
    def VM(self) -> int:
        value = self.value
        if value is None or value == "" or value == b"":
            return 0
        return len(value) if isinstance(value, list) else 1


class RawDataset:
    """A data set (or sequence item, or file meta) of raw elements, in tag order."""

    def __init__(self, elements: dict[int, RawElement] | None = None, *,
                 undefined: bool = False) -> None:
        object.__setattr__(self, "_elements", elements if elements is not None else {})
        object.__setattr__(self, "undefined", undefined)     # an item of undefined length

    # -- the Dataset API anonymize uses ------------------------------------------------------
    def keys(self) -> list[int]:
        return list(self._elements)

    def __getitem__(self, tag: int) -> RawElement:
        return self._elements[int(tag)]

    def __delitem__(self, tag: int) -> None:
        del self._elements[int(tag)]

    def __setitem__(self, tag: int, elem: RawElement) -> None:
        self._elements[int(tag)] = elem

    def __contains__(self, key: int | str) -> bool:
        return self._tag(key) in self._elements

    def get(self, key: int | str, default: Any = None) -> Any:
        elem = self._elements.get(self._tag(key))
        return default if elem is None else elem.value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name[:1].islower():
            raise AttributeError(name)
        try:
            return self._elements[dicomdict.tag_for(name)].value
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name[:1].islower():
            object.__setattr__(self, name, value)
            return
        tag = dicomdict.tag_for(name)
        elem = self._elements.get(tag)
        if elem is None:
            entry = dicomdict.entry(tag)
            vr = entry[0] if entry else ""
            if vr.encode() not in KNOWN_VRS:
                raise Fallback(f"new {name} has VR {vr!r}")
            elem = self._elements[tag] = RawElement(tag, vr, None, None, [] if vr == "SQ" else None)
        elem.value = value

    @staticmethod
    def _tag(key: int | str) -> int:
        if not isinstance(key, str):
            return int(key)
        try:
            return dicomdict.tag_for(key)
        except KeyError:
            return -1                   # no such keyword: never present (as in pydicom)

    # -- writing -------------------------------------------------------------------------------
    def encode(self) -> bytes:
        """The elements as Explicit VR Little Endian, the way pydicom's ``write_dataset`` does."""
        return b"".join(self.pieces())

    def pieces(self) -> list[bytes | memoryview]:
        """:meth:`encode` in pieces (the pixel data not copied)."""
        out: list[bytes | memoryview] = []
        elements = self._elements
        for tag in sorted(elements):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:      # retired group lengths: never written
                continue
            elem = elements[tag]
            if elem.changed or elem.VR == "SQ":
                out += _element(elem)
            else:                                       # as read: header and value copied
                _check_kept(elem.VR, elem.raw)
                out.append(elem.whole)
        return out


class RawFile(RawDataset):
    """A whole Part 10 file: the data set, with ``file_meta`` and ``preamble``."""

    def __init__(self, elements: dict[int, RawElement], meta: RawDataset, preamble: bytes) -> None:
        super().__init__(elements)
        object.__setattr__(self, "file_meta", meta)
        object.__setattr__(self, "preamble", preamble)
        object.__setattr__(self, "_payload", None)

    def prepare(self) -> None:
        """Encode the file now (:class:`Fallback` if it cannot be written as pydicom would)."""
        meta = self.file_meta
        for tag in (*META_REQUIRED, META_IMPLEMENTATION):
            if tag not in meta or meta.get(tag) in (None, "", b""):
                raise Fallback(f"file meta without ({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if meta.get(META_VERSION) in (None, b""):
            raise Fallback("file meta without its version")
        if meta.get(0x00020010) != EXPLICIT_LITTLE:
            raise Fallback("the transfer syntax changed")
        if META_LENGTH not in meta:
            meta[META_LENGTH] = RawElement(META_LENGTH, "UL", None)
        group = meta[META_LENGTH]
        group.value = 0
        body = meta.encode()
        group.value = len(body) - 12                     # pydicom: bytes after this element
        preamble = self.preamble if self.preamble else b"\0" * MAGIC_OFFSET
        object.__setattr__(self, "_payload", [preamble, MAGIC, meta.encode(), *self.pieces()])

    def save_as(self, path: str | Path | BinaryIO, *, enforce_file_format: bool = True) -> None:
        """Write the file to ``path`` (or into the open binary file ``path``)."""
        if self._payload is None:
            self.prepare()
        if hasattr(path, "write"):
            path.writelines(self._payload)
            return
        with open(path, "wb") as handle:
            handle.writelines(self._payload)


# -- reading ----------------------------------------------------------------------------------


def read(path: str | Path) -> RawFile:
    """The file at ``path`` as a :class:`RawFile`; :class:`Fallback` when pydicom must read it."""
    try:
        with open(path, "rb", buffering=0) as handle:
            head = handle.read(MAGIC_OFFSET + 4)
            if len(head) < MAGIC_OFFSET + 4 or head[MAGIC_OFFSET:] != MAGIC:
                raise Fallback("no Part 10 preamble")     # (a large other file is not read)
            handle.seek(0)
            data = handle.readall()                     # one copy, as bytes
    except OSError as exc:
        raise Fallback(f"cannot read ({exc})") from None
    meta, at = _parse(data, MAGIC_OFFSET + 4, len(data), group=2)
    if meta.get(0x00020010) != EXPLICIT_LITTLE:
        raise Fallback("not Explicit VR Little Endian")
    elements, end = _parse(data, at, len(data))
    if end != len(data):
        raise Fallback("data after the data set")
    if any(tag >> 16 == 2 for tag in elements.keys()):
        raise Fallback("file meta elements in the data set")
    raw = RawFile(elements._elements, meta, data[:MAGIC_OFFSET])
    _check_pixels(raw)
    return raw


#: VR code -> VR name of the VRs this path reads.
_VR_NAMES = {code: name for code, name in VR_NAMES.items() if code in KNOWN_VRS}
#: The 32-bit length of a long VR (after dicomfast's EXPLICIT_HEADER).
_LONG_LENGTH = struct.Struct("<I")


def _parse(data: bytes, at: int, end: int, *, group: int | None = None,
           item_end: bool = False) -> tuple[RawDataset, int]:
    """Elements of the file ``data`` from ``at`` up to ``end`` (or the item delimiter, or the
    end of ``group``)."""
    view = memoryview(data)
    header, long_length = EXPLICIT_HEADER.unpack_from, _LONG_LENGTH.unpack_from
    elements: dict[int, RawElement] = {}
    previous = -1
    while at < end:
        if at + 8 > end:
            raise Fallback("truncated element header")
        first, second, code, length = header(data, at)
        tag, start = first << 16 | second, at
        if group is not None and first != group:
            break
        if item_end and tag == ITEM_END:
            if long_length(data, at + 4)[0] != 0:
                raise Fallback("item delimiter with a length")
            return RawDataset(elements, undefined=True), at + 8
        if first == 0xFFFE or tag <= previous:
            raise Fallback(f"tag {tag:08X} out of place")
        previous = tag
        vr = _VR_NAMES.get(code)
        if vr is None:
            raise Fallback(f"VR {code!r}")
        if code in LONG_VRS:
            if at + 12 > end:
                raise Fallback("truncated element header")
            if length:
                raise Fallback("reserved bytes that are not zero")   # pydicom writes zeros
            length, at = long_length(data, at + 8)[0], at + 12
        else:
            at += 8
        if vr == "SQ":
            items, at = _sequence(data, at, end, length)
            elements[tag] = RawElement(tag, vr, None, None, items, length == UNDEFINED_LENGTH)
            continue
        if length == UNDEFINED_LENGTH or length % 2 or at + length > end:
            raise Fallback(f"({first:04X},{second:04X}) has length {length}")
        elements[tag] = RawElement(tag, vr, view[at:at + length], view[start:at + length])
        at += length
    if item_end:
        raise Fallback("item without its delimiter")
    return RawDataset(elements), at


def _sequence(data: bytes, at: int, end: int, length: int) -> tuple[list[RawDataset], int]:
    """The items of a sequence whose value starts at ``at``; where the sequence ends."""
    unpack = struct.unpack_from
    stop = end if length == UNDEFINED_LENGTH else at + length
    if stop > end:
        raise Fallback("sequence longer than the file")
    items: list[RawDataset] = []
    while at < stop:
        if at + 8 > stop:
            raise Fallback("truncated item header")
        first, second, size = unpack("<HHI", data, at)
        tag = first << 16 | second
        at += 8
        if tag == SEQUENCE_END and length == UNDEFINED_LENGTH:
            if size != 0:
                raise Fallback("sequence delimiter with a length")
            return items, at
        if tag != ITEM:
            raise Fallback(f"tag {tag:08X} inside a sequence")
        if size == UNDEFINED_LENGTH:
            item, at = _parse(data, at, stop, item_end=True)
        else:
            if at + size > stop:
                raise Fallback("item longer than its sequence")
            item, done = _parse(data, at, at + size)
            if done != at + size:
                raise Fallback("item content does not fill it")
            at += size
        items.append(item)
    if length == UNDEFINED_LENGTH:
        raise Fallback("sequence without its delimiter")
    return items, at


def _check_pixels(raw: RawFile) -> None:
    """Pixel data at least as long as its layout says (pydicom's path reports a short one)."""
    if PIXEL_DATA not in raw._elements:
        return
    values = {name: raw.get(tag) for name, tag in _LAYOUT.items()}
    if values["Rows"] is None:
        return
    bits = values["BitsAllocated"]
    if not isinstance(bits, int) or bits % 8 or not isinstance(values["Rows"], int) \
            or not isinstance(values["Columns"], int) \
            or str(values["PhotometricInterpretation"] or "").startswith("YBR_FULL_422"):
        raise Fallback("pixel layout")
    frames = values["NumberOfFrames"] or "1"
    if not _IS_TEXT.match(str(frames).encode()):
        raise Fallback("NumberOfFrames")
    expected = (values["Rows"] * values["Columns"] * (values["SamplesPerPixel"] or 1)
                * int(frames) * bits // 8)
    if len(raw[PIXEL_DATA].raw) < expected:
        raise Fallback("short pixel data")


# -- values -----------------------------------------------------------------------------------


#: Most values repeat from file to file of a series: string values decoded and values checked
#: (``(vr, raw)`` keys) are remembered, up to this many of each (then forgotten and begun again),
#: values up to :data:`MEMO_VALUE_BYTES` long.
MEMO_SIZE = 65536
MEMO_VALUE_BYTES = 256
_DECODED: dict[tuple[str, bytes], str | list[str]] = {}
_KEPT: set[tuple[str, bytes]] = set()


def _decoded_once(vr: str, raw: bytes) -> str | list[str]:
    """:func:`_decoded`, remembered (a list is copied: the caller may change it)."""
    if len(raw) > MEMO_VALUE_BYTES:
        return _decoded(vr, raw)
    key = (vr, raw)
    found = _DECODED.get(key)
    if found is None:
        if len(_DECODED) >= MEMO_SIZE:
            _DECODED.clear()
        found = _DECODED[key] = _decoded(vr, raw)
    return list(found) if isinstance(found, list) else found


def _decoded(vr: str, raw: bytes) -> str | list[str]:
    """A string value as pydicom decodes it (ASCII only; anything else falls back)."""
    plain = _PLAIN_LONG if vr in SINGLE_VRS else _PLAIN
    if not plain.match(raw.rstrip(b"\0")):
        raise Fallback(f"{vr} value beyond ASCII")
    text = raw.decode("ascii")
    if vr in SINGLE_VRS:
        return text.rstrip() if vr == "UR" else text.rstrip("\0 ")
    if vr in TEXT_VRS:
        parts = [part.rstrip("\0 ") for part in text.split("\\")]
    elif vr == "AE":
        parts = [part.strip() for part in text.split("\\")]
    else:
        parts = text.rstrip(" \0").split("\\")
    return parts[0] if len(parts) == 1 else parts


def _numbers(vr: str, raw: bytes | memoryview) -> list:
    size = struct.calcsize(NUMBER_CODES[vr])
    if len(raw) % size:
        raise Fallback(f"{vr} length {len(raw)}")
    return list(struct.unpack(f"<{len(raw) // size}{NUMBER_CODES[vr]}", raw))


def _check_kept(vr: str, raw: bytes | memoryview) -> None:
    """Fall back unless pydicom writes this value back exactly as it was read."""
    if vr == "AT" and len(raw) % 4:
        raise Fallback("AT length")
    if vr in NUMBER_CODES:
        if vr in ("FL", "FD"):
            values = _numbers(vr, raw)
            if any(v != v for v in values):             # NaN payloads may not survive
                raise Fallback("NaN")
        return
    if vr not in STRING_VRS:
        return                                          # OB, OW, ...: written as read
    value = bytes(raw)
    if len(value) > MEMO_VALUE_BYTES:
        _check_kept_text(vr, value)
        return
    key = (vr, value)
    if key in _KEPT:
        return
    _check_kept_text(vr, value)
    if len(_KEPT) >= MEMO_SIZE:
        _KEPT.clear()
    _KEPT.add(key)


def _check_kept_text(vr: str, value: bytes) -> None:
    """:func:`_check_kept` of a string value."""
    pad = b"\0" if vr == "UI" else b" "
    stripped = value.rstrip() if vr == "UR" else value.rstrip(b" \0")
    if value != stripped + (pad if len(stripped) % 2 else b""):
        raise Fallback(f"{vr} padding pydicom would rewrite")
    if not (_PLAIN_LONG if vr in SINGLE_VRS else _PLAIN).match(stripped):
        raise Fallback(f"{vr} value beyond ASCII")
    if vr in TEXT_VRS or vr in ("AE", "DS", "IS"):
        for part in stripped.split(b"\\"):
            if part != (part.strip() if vr in ("AE", "DS", "IS") else part.rstrip(b" \0")):
                raise Fallback(f"{vr} spaces pydicom would strip")
            if part and vr == "IS" and not _IS_TEXT.match(part):
                raise Fallback("IS value")
            if part and vr == "DS" and not _DS_TEXT.match(part):
                raise Fallback("DS value")


def _encode(vr: str, value: Any) -> bytes:
    """A new value encoded as pydicom's writers encode it."""
    if value is None or value == "" or value == b"" or value == []:
        return b""
    if vr in NUMBER_CODES:
        values = value if isinstance(value, list) else [value]
        return struct.pack(f"<{len(values)}{NUMBER_CODES[vr]}", *values)
    if vr in STRING_VRS:
        values = value if isinstance(value, list) else [value]
        text = "\\".join(str(v) for v in values)
        if not text.isascii():
            raise Fallback(f"new {vr} value beyond ASCII")
        data = text.encode("ascii")
        return data + (b"\0" if vr == "UI" else b" ") * (len(data) % 2)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return data + b"\0" * (len(data) % 2)
    raise Fallback(f"new {vr} value {type(value).__name__}")


def _element(elem: RawElement) -> list[bytes | memoryview]:
    """A sequence or a changed element encoded (header and value), as a list of pieces (kept
    elements are copied as read by :meth:`RawDataset.pieces`)."""
    tag = struct.pack("<HH", elem.tag >> 16, elem.tag & 0xFFFF)
    code = elem.VR.encode()
    if elem.VR == "SQ":
        body: list[bytes | memoryview] = []
        for item in elem.items or ():
            content = item.encode()
            if item.undefined:
                body += [_delimiter(ITEM, UNDEFINED_LENGTH), content, _delimiter(ITEM_END, 0)]
            else:
                body += [_delimiter(ITEM, len(content)), content]
        if elem.undefined:
            return [tag, code, b"\0\0", struct.pack("<I", UNDEFINED_LENGTH), *body,
                    _delimiter(SEQUENCE_END, 0)]
        return [tag, code, b"\0\0", struct.pack("<I", sum(len(b) for b in body)), *body]
    value = _encode(elem.VR, elem._value)
    if code in LONG_VRS:
        return [tag, code, b"\0\0", struct.pack("<I", len(value)), value]
    if len(value) > 0xFFFF:
        raise Fallback("value too long for its VR")     # pydicom would write it as UN
    return [tag, code, struct.pack("<H", len(value)), value]


def _delimiter(tag: int, length: int) -> bytes:
    """An item, item delimitation or sequence delimitation header."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, length)
