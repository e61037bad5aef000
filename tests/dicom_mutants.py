"""Seeded, deterministic mutants of small DICOM files for the fuzz suite.

:func:`write_mutants` writes a few hundred damaged variants of seven small source files (a
phantom CT slice, pydicom's ``CT_small.dcm``, ``MR_small.dcm``, its RLE, JPEG 2000 and JPEG-LS
twins, and a JPEG baseline file built from ``MR_small.dcm``) into one folder, plus a
``manifest.json`` that records each mutant's source, kind and what was changed.

Byte-level mutations (truncation, flipped bytes, corrupt element lengths, a stripped preamble)
work on the file bytes; field edits (sizes, bits, geometry, unknown VRs and tags) splice a new
top-level data element into the bytes, so any value can be written as text, valid or not,
without pydicom's writer checking it. Element offsets come from parsing the source with
pydicom's :func:`~pydicom.filereader.data_element_generator`.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from pydicom.datadict import dictionary_VR
from pydicom.filereader import data_element_generator
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

#: Seed of the fuzz suite's mutants.
DEFAULT_SEED = 20260121
#: Name of the manifest written beside the mutants.
MANIFEST_NAME = "manifest.json"
#: pydicom test files used as sources, by source name.
PYDICOM_SOURCES = {
    "ct_small": "CT_small.dcm",
    "mr_small": "MR_small.dcm",
    "mr_rle": "MR_small_RLE.dcm",
    "mr_j2k": "MR_small_jp2klossless.dcm",
    "mr_jpeg_ls": "MR_small_jpeg_ls_lossless.dcm",
}
#: Name of the JPEG baseline source (MR_small.dcm scaled to 8 bits, encoded with Pillow).
JPEG_SOURCE = "mr_jpeg_baseline"
#: Name of the phantom CT source, and how it is made.
PHANTOM_SOURCE = "phantom_ct"
PHANTOM_SEED = 6
PHANTOM_SHAPE = 64
PHANTOM_SLICE = 37
#: JPEG quality of the baseline source.
JPEG_QUALITY = 90

#: Length of the preamble and of the preamble with the ``DICM`` magic.
PREAMBLE = 128
PREAMBLE_AND_MAGIC = 132
#: Tags, as ints.
PIXEL_DATA = 0x7FE00010
TRANSFER_SYNTAX = 0x00020010
ROWS, COLUMNS = 0x00280010, 0x00280011
NUMBER_OF_FRAMES = 0x00280008
SAMPLES_PER_PIXEL = 0x00280002
BITS_ALLOCATED, BITS_STORED, HIGH_BIT = 0x00280100, 0x00280101, 0x00280102
PIXEL_REPRESENTATION = 0x00280103
STATION_NAME = 0x00081010
DEVICE_SERIAL_NUMBER = 0x00181000
#: A public tag the data dictionary does not know, and the address it carries.
UNKNOWN_PUBLIC_TAG = 0x00101041
UNKNOWN_TAG_VALUE = "170 STATION ROAD, SPRINGFIELD"
#: The VR no standard defines.
UNKNOWN_VR = "ZZ"

#: Random truncations per source (on top of the fixed ones: after the preamble, after the
#: magic, inside the pixel data).
TRUNCATIONS = 10
#: Flipped-byte mutants per source, by region, and how many bytes each flips (1 .. MAX).
FLIPS = {"header": 6, "pixels": 6, "anywhere": 4}
MAX_FLIPPED_BYTES = 8
#: Elements (besides Pixel Data) whose length field is corrupted, per source.
CORRUPT_ELEMENTS = 3
#: Lengths written into a length field (clipped to 16 bits for short fields).
CORRUPT_LENGTHS = (0, 0xFFFF, 0xFFFFFFFF)
#: Absurd sizes; "half" and "double" are relative to the real image.
SIZES = ((0, 0), (1, 1), (3, 7), (65535, 65535), ("half", "half"), ("same", "half"),
         ("double", "same"))
FRAMES = ("100000", "0", "-1", "abc", "2")
#: Odd bit layouts: (attribute tag, value or a function of BitsAllocated, description).
BITS = (
    (BITS_STORED, lambda allocated: allocated + 4, "BitsStored > BitsAllocated"),
    (BITS_ALLOCATED, 12, "BitsAllocated 12"),
    (BITS_ALLOCATED, 0, "BitsAllocated 0"),
    (BITS_ALLOCATED, 64, "BitsAllocated 64"),
    (SAMPLES_PER_PIXEL, 0, "SamplesPerPixel 0"),
    (SAMPLES_PER_PIXEL, 3, "SamplesPerPixel 3 with MONOCHROME2"),
    (PIXEL_REPRESENTATION, 2, "PixelRepresentation 2"),
    (HIGH_BIT, lambda allocated: allocated + 7, "HighBit beyond BitsAllocated"),
)
#: Geometry attributes written as text: tag -> (keyword, value multiplicity).
GEOMETRY = {
    0x00280030: ("PixelSpacing", 2),
    0x00180050: ("SliceThickness", 1),
    0x00281053: ("RescaleSlope", 1),
    0x00281052: ("RescaleIntercept", 1),
    0x00200032: ("ImagePositionPatient", 3),
    0x00200037: ("ImageOrientationPatient", 6),
}
#: Text written into each value of a geometry attribute ("0" in ImageOrientationPatient is
#: the all-zero orientation).
GEOMETRY_VALUES = {"nan": "NaN", "inf": "inf", "zero": "0", "negative": "-2.5",
                   "huge": "1e308"}
#: The geometry values that cannot be right, per attribute (a zero or negative intercept or
#: position is ordinary, and so is a zero slice thickness on one slice; -2.5 direction
#: cosines are not unit vectors).
_NOT_FINITE = {"nan", "inf", "huge"}
IMPOSSIBLE_GEOMETRY = {
    "PixelSpacing": _NOT_FINITE | {"zero", "negative"},
    "SliceThickness": _NOT_FINITE | {"negative"},
    "RescaleSlope": _NOT_FINITE | {"zero"},
    "RescaleIntercept": _NOT_FINITE,
    "ImagePositionPatient": _NOT_FINITE,
    "ImageOrientationPatient": _NOT_FINITE | {"zero", "negative"},
}


@dataclass(frozen=True)
class Element:
    """Where one top-level data element lies in a file's bytes.

    Attributes
    ----------
    tag
        The element's tag as an int (group << 16 | element).
    vr
        Its VR as written (None in implicit VR).
    start, end
        Offsets of the element's first byte and of the byte after it.
    value_offset
        Offset of the value's first byte.
    length_offset, length_size
        Offset and width (2 or 4 bytes) of the length field.
    """

    tag: int
    vr: str | None
    start: int
    end: int
    value_offset: int
    length_offset: int
    length_size: int


@dataclass(frozen=True)
class Layout:
    """The top-level elements of a DICOM file and how its data set is encoded."""

    meta: tuple[Element, ...]
    dataset: tuple[Element, ...]
    implicit: bool
    little: bool

    @property
    def elements(self) -> tuple[Element, ...]:
        return self.meta + self.dataset

    def find(self, tag: int) -> Element | None:
        """The data set element with ``tag``, or None."""
        return next((e for e in self.dataset if e.tag == tag), None)

    @property
    def pixel(self) -> Element | None:
        return self.find(PIXEL_DATA)


def _element_at(data: bytes, start: int, end: int, *, implicit: bool, little: bool) -> Element:
    order = "<" if little else ">"
    group, number = struct.unpack_from(f"{order}HH", data, start)
    if implicit:
        return Element(group << 16 | number, None, start, end, start + 8, start + 4, 4)
    vr = data[start + 4:start + 6].decode("ascii", "replace")
    if vr in EXPLICIT_VR_LENGTH_32:
        return Element(group << 16 | number, vr, start, end, start + 12, start + 8, 4)
    return Element(group << 16 | number, vr, start, end, start + 8, start + 6, 2)


def _walk(data: bytes, fp: io.BytesIO, *, implicit: bool, little: bool,
          stop_when: Callable | None = None) -> list[Element]:
    elements = []
    start = fp.tell()
    for _ in data_element_generator(fp, implicit, little, stop_when=stop_when):
        end = fp.tell()
        elements.append(_element_at(data, start, end, implicit=implicit, little=little))
        start = end
    return elements


def parse_layout(data: bytes) -> Layout:
    """Top-level element offsets of a DICOM file with preamble, ``DICM`` and file meta.

    Raises
    ------
    ValueError
        ``data`` has no ``DICM`` magic or no transfer syntax.
    """
    if data[PREAMBLE:PREAMBLE_AND_MAGIC] != b"DICM":
        raise ValueError("not a DICOM file with a preamble")
    fp = io.BytesIO(data)
    fp.seek(PREAMBLE_AND_MAGIC)
    meta = _walk(data, fp, implicit=False, little=True,
                 stop_when=lambda tag, vr, length: tag >> 16 != 2)
    syntax = next((e for e in meta if e.tag == TRANSFER_SYNTAX), None)
    if syntax is None:
        raise ValueError("no transfer syntax in the file meta")
    uid = data[syntax.value_offset:syntax.end].rstrip(b"\0 ").decode("ascii")
    implicit, little = uid == ImplicitVRLittleEndian, uid != ExplicitVRBigEndian
    dataset = _walk(data, fp, implicit=implicit, little=little)
    return Layout(tuple(meta), tuple(dataset), implicit, little)


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2 == 0:
        return value
    return value + (b"\0" if vr in ("UI", "OB", "UN") or vr.startswith("O") else b" ")


def encode_element(layout: Layout, tag: int, vr: str, value: bytes) -> bytes:
    """The bytes of one data set element in ``layout``'s encoding (value padded to even)."""
    order = "<" if layout.little else ">"
    value = _pad(value, vr)
    head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
    if layout.implicit:
        return head + struct.pack(f"{order}L", len(value)) + value
    if vr in EXPLICIT_VR_LENGTH_32:
        return head + vr.encode("ascii") + b"\0\0" + struct.pack(f"{order}L", len(value)) + value
    return head + vr.encode("ascii") + struct.pack(f"{order}H", len(value)) + value


def set_elements(data: bytes, layout: Layout, edits: dict[int, tuple[str, bytes]]) -> bytes:
    """``data`` with each tag of ``edits`` set to ``(vr, value bytes)``: an element that is
    there is replaced, one that is not is inserted in tag order (top level of the data set)."""
    out = bytearray(data)
    for tag in sorted(edits, reverse=True):   # later offsets first: earlier ones stay valid
        vr, value = edits[tag]
        encoded = encode_element(layout, tag, vr, value)
        old = layout.find(tag)
        if old is not None:
            out[old.start:old.end] = encoded
            continue
        after = next((e for e in layout.dataset if e.tag > tag), None)
        at = after.start if after is not None else len(data)
        out[at:at] = encoded
    return bytes(out)


def _us(layout: Layout, value: int) -> bytes:
    return struct.pack("<H" if layout.little else ">H", value)


def _text(*values: str) -> bytes:
    return "\\".join(values).encode("ascii")


def _us_value(data: bytes, layout: Layout, tag: int, default: int) -> int:
    element = layout.find(tag)
    if element is None or element.end - element.value_offset < 2:
        return default
    return struct.unpack_from("<H" if layout.little else ">H", data, element.value_offset)[0]


@dataclass(frozen=True)
class Mutant:
    """One mutant before it is written: what was done, the resulting bytes, and whether its
    header states something that cannot be right for its pixel data (a reader must refuse
    it rather than convert it)."""

    kind: str
    detail: str
    data: bytes
    impossible: bool = False


def _truncations(data: bytes, layout: Layout, rng: np.random.Generator) -> Iterator[Mutant]:
    offsets = {PREAMBLE, PREAMBLE_AND_MAGIC}
    if layout.pixel is not None:
        offsets.add(layout.pixel.value_offset + 2)
    offsets.update(int(o) for o in rng.integers(1, len(data) - 1, size=TRUNCATIONS))
    for offset in sorted(offsets):
        yield Mutant("truncate", f"cut at byte {offset} of {len(data)}", data[:offset])


def _flips(data: bytes, layout: Layout, rng: np.random.Generator) -> Iterator[Mutant]:
    pixel = layout.pixel
    header_end = pixel.start if pixel is not None else len(data)
    regions = {"header": (PREAMBLE_AND_MAGIC, header_end),
               "pixels": (pixel.value_offset, pixel.end) if pixel is not None else None,
               "anywhere": (0, len(data))}
    for region, count in FLIPS.items():
        bounds = regions[region]
        if bounds is None or bounds[1] - bounds[0] < MAX_FLIPPED_BYTES:
            continue
        for _ in range(count):
            flipped = int(rng.integers(1, MAX_FLIPPED_BYTES + 1))
            offsets = sorted(int(o) for o in rng.choice(np.arange(*bounds), flipped,
                                                         replace=False))
            out = bytearray(data)
            for offset in offsets:
                out[offset] ^= int(rng.integers(1, 256))
            yield Mutant(f"flip_{region}", f"{flipped} byte(s) XORed at {offsets}", bytes(out))


def _corrupt_lengths(data: bytes, layout: Layout, rng: np.random.Generator) -> Iterator[Mutant]:
    candidates = [e for e in layout.elements if e.tag != PIXEL_DATA]
    picked = [candidates[int(i)] for i in
              sorted(rng.choice(len(candidates), CORRUPT_ELEMENTS, replace=False))]
    if layout.pixel is not None:
        picked.append(layout.pixel)
    for element in picked:
        meta = element.tag >> 16 == 2
        order = "<" if layout.little or meta else ">"
        limit = (1 << (8 * element.length_size)) - 1
        lengths = dict.fromkeys([*(min(v, limit) for v in CORRUPT_LENGTHS),
                                 int(rng.integers(1, limit))])
        for length in lengths:
            out = bytearray(data)
            code = "H" if element.length_size == 2 else "L"
            struct.pack_into(f"{order}{code}", out, element.length_offset, length)
            yield Mutant("corrupt_length",
                         f"({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) length field at "
                         f"byte {element.length_offset} set to 0x{length:X}", bytes(out))


def _pixel_lengths(data: bytes, layout: Layout) -> Iterator[Mutant]:
    pixel = layout.pixel
    if pixel is None:
        return
    out = bytearray(data)
    struct.pack_into(f"{'<' if layout.little else '>'}{'H' if pixel.length_size == 2 else 'L'}",
                     out, pixel.length_offset, 0)
    yield Mutant("zero_pixel_length", "Pixel Data length field 0, its bytes left after it",
                 bytes(out))
    yield Mutant("zero_pixel_length", "Pixel Data present with an empty value",
                 data[:pixel.start] + encode_element(layout, PIXEL_DATA, pixel.vr or "OW", b"")
                 + data[pixel.end:])


def _preambles(data: bytes) -> Iterator[Mutant]:
    yield Mutant("no_preamble", "first 132 bytes (preamble and DICM) stripped",
                 data[PREAMBLE_AND_MAGIC:])
    yield Mutant("no_preamble", "first 128 bytes stripped (file starts with DICM)",
                 data[PREAMBLE:])
    yield Mutant("no_preamble", "magic DICM replaced by DICX",
                 data[:PREAMBLE] + b"DICX" + data[PREAMBLE_AND_MAGIC:])


def _sizes(data: bytes, layout: Layout) -> Iterator[Mutant]:
    rows, columns = (_us_value(data, layout, ROWS, 0), _us_value(data, layout, COLUMNS, 0))
    relative = {"half": 0.5, "double": 2.0, "same": 1.0}
    for want_rows, want_columns in SIZES:
        new_rows = int(rows * relative[want_rows]) if isinstance(want_rows, str) else want_rows
        new_columns = (int(columns * relative[want_columns]) if isinstance(want_columns, str)
                       else want_columns)
        edits = {ROWS: ("US", _us(layout, new_rows)), COLUMNS: ("US", _us(layout, new_columns))}
        yield Mutant("rows_columns", f"Rows {new_rows} x Columns {new_columns} (data is {rows} x "
                     f"{columns})", set_elements(data, layout, edits), impossible=True)
    for frames in FRAMES:
        yield Mutant("frames", f"NumberOfFrames {frames!r}",
                     set_elements(data, layout, {NUMBER_OF_FRAMES: ("IS", _text(frames))}),
                     impossible=True)


def _bits(data: bytes, layout: Layout) -> Iterator[Mutant]:
    allocated = _us_value(data, layout, BITS_ALLOCATED, 16)
    for tag, value, description in BITS:
        value = value(allocated) if callable(value) else value
        yield Mutant("bits", f"{description} ({value})",
                     set_elements(data, layout, {tag: ("US", _us(layout, value))}),
                     impossible=True)


def _geometry(data: bytes, layout: Layout) -> Iterator[Mutant]:
    for tag, (keyword, multiplicity) in GEOMETRY.items():
        for name, text in GEOMETRY_VALUES.items():
            value = _text(*[text] * multiplicity)
            yield Mutant("geometry", f"{keyword} {name}: {value.decode()!r}",
                         set_elements(data, layout, {tag: ("DS", value)}),
                         impossible=name in IMPOSSIBLE_GEOMETRY[keyword])


def _unknowns(data: bytes, layout: Layout) -> Iterator[Mutant]:
    if not layout.implicit:
        for tag in (STATION_NAME, DEVICE_SERIAL_NUMBER):
            yield Mutant("unknown_vr",
                         f"({tag >> 16:04X},{tag & 0xFFFF:04X}) written with VR {UNKNOWN_VR}",
                         set_elements(data, layout, {tag: (UNKNOWN_VR, b"ZZ VALUE")}))
    yield Mutant("unknown_tag", f"(0010,1041) LO {UNKNOWN_TAG_VALUE!r}",
                 set_elements(data, layout, {UNKNOWN_PUBLIC_TAG: (
                     dictionary_VR(0x00101040), UNKNOWN_TAG_VALUE.encode("ascii"))}))


def mutate(data: bytes, rng: np.random.Generator) -> list[Mutant]:
    """Every mutant of one source file's bytes (the unchanged file first, as a control)."""
    layout = parse_layout(data)
    return [Mutant("original", "unchanged source", data),
            *_truncations(data, layout, rng), *_flips(data, layout, rng),
            *_corrupt_lengths(data, layout, rng), *_pixel_lengths(data, layout),
            *_preambles(data), *_sizes(data, layout), *_bits(data, layout),
            *_geometry(data, layout), *_unknowns(data, layout)]


def _phantom_slice() -> bytes:
    from medtool.phantom import write_dataset

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "phantom"
        write_dataset(out, cases=1, seed=PHANTOM_SEED, shape=PHANTOM_SHAPE, cxr=0,
                      step={"command": "medtool phantom (fuzz source)"})
        return sorted((out / "ct").rglob("*.dcm"))[PHANTOM_SLICE].read_bytes()


def _jpeg_baseline(mr_small: bytes) -> bytes:
    """``MR_small.dcm`` scaled to 8 bits and saved as JPEG Baseline (one Pillow fragment)."""
    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(io.BytesIO(mr_small))
    image = ds.pixel_array.astype(np.float64)
    scaled = np.round(255 * (image - image.min()) / max(np.ptp(image), 1)).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(scaled, mode="L").save(encoded, format="JPEG", quality=JPEG_QUALITY)
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter",
                    "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([encoded.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def source_files() -> dict[str, bytes]:
    """The bytes of every source file, by source name (same bytes on every call)."""
    from pydicom.data import get_testdata_file

    sources = {PHANTOM_SOURCE: _phantom_slice()}
    for name, file_name in PYDICOM_SOURCES.items():
        path = get_testdata_file(file_name, download=False)
        if path is None:
            raise FileNotFoundError(f"pydicom's test file {file_name} is not installed")
        sources[name] = Path(path).read_bytes()
    sources[JPEG_SOURCE] = _jpeg_baseline(sources["mr_small"])
    return sources


def write_mutants(out: str | Path, seed: int = DEFAULT_SEED) -> list[dict]:
    """Write every mutant of every source into ``out`` and its manifest; return the manifest.

    Parameters
    ----------
    out
        Folder to write into (created; the mutants are plain files, never links).
    seed
        Seed of the random choices: the same seed writes the same bytes.

    Returns
    -------
    list of dict
        One entry per mutant: ``file`` (name inside ``out``), ``source``, ``kind``,
        ``detail``, ``impossible`` (the header cannot be right: converting it is wrong) and
        ``size`` in bytes. The same list is written to ``out/manifest.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for index, (source, data) in enumerate(source_files().items()):
        rng = np.random.default_rng([seed, index])
        for mutant in mutate(data, rng):
            name = f"{len(manifest):04d}_{source}_{mutant.kind}.dcm"
            (out / name).write_bytes(mutant.data)
            manifest.append({"file": name, "source": source, "kind": mutant.kind,
                             "detail": mutant.detail, "impossible": mutant.impossible,
                             "size": len(mutant.data)})
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


if __name__ == "__main__":   # python -m tests.dicom_mutants OUT [SEED]
    import sys

    written = write_mutants(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_SEED)
    print(f"wrote {len(written)} mutants to {sys.argv[1]}")
