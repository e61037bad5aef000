"""NRRD (``.nrrd``) and 3D Slicer's segmentation NRRD (``.seg.nrrd``), read and written with
exact geometry.

Reading takes the NRRD0001-0005 header: ``type``, ``dimension``, ``sizes``, ``space`` (LPS,
RAS or LAS, turned into LPS), ``space directions`` (one vector per axis, its length the
spacing) or ``spacings``, ``space origin``, ``endian``, ``encoding`` (raw, gzip, bzip2, ascii)
and attached or detached (``data file``) data. Axes are stored fastest first, so the array in
medtool's ``(z, y, x)`` order is the data reshaped to the reversed sizes. A segmentation's
``Segment<N>_Name`` and ``Segment<N>_LabelValue`` become the volume's label names; a segmentation
whose segments overlap (several layers) is refused. Writing gives gzip-encoded, attached,
little-endian NRRD0004 in LPS with medtool's JSON header in the ``medtool:=`` field, and for
``.seg.nrrd`` the segment fields 3D Slicer reads.
"""

from __future__ import annotations

import bz2
import gzip
import re
from pathlib import Path

import numpy as np

from .errors import InputError
from .volume import Volume

#: NRRD type names -> NumPy dtypes.
TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), np.int8),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), np.uint8),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), np.int16),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), np.uint16),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), np.int32),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), np.uint32),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int",
                     "int64", "int64_t"), np.int64),
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), np.uint64),
    "float": np.float32,
    "double": np.float64,
}
#: NumPy dtypes -> the NRRD type medtool writes.
TYPE_NAMES = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8", np.dtype(np.int16): "int16",
              np.dtype(np.uint16): "uint16", np.dtype(np.int32): "int32", np.dtype(np.uint32): "uint32",
              np.dtype(np.int64): "int64", np.dtype(np.uint64): "uint64", np.dtype(np.float32): "float",
              np.dtype(np.float64): "double"}
#: Sign flips of the axes of each NRRD space into LPS.
SPACES = {"left-posterior-superior": (1, 1, 1), "lps": (1, 1, 1),
          "right-anterior-superior": (-1, -1, 1), "ras": (-1, -1, 1),
          "left-anterior-superior": (1, -1, 1), "las": (1, -1, 1),
          "scanner-xyz": (1, 1, 1), "3d-right-handed": (1, 1, 1)}
#: The field that carries medtool's JSON header.
MEDTOOL_KEY = "medtool"
_VECTOR = re.compile(r"\(([^)]*)\)|none")


def _fields(path: Path) -> tuple[dict[str, str], dict[str, str], int]:
    """The header's fields, its key-value pairs and the byte offset of the attached data."""
    with open(path, "rb") as handle:
        magic = handle.readline()
        if not magic.startswith(b"NRRD000"):
            raise InputError("not an NRRD file (no NRRD000X magic line)", path=path,
                             hint="the file is damaged or in another format")
        fields: dict[str, str] = {}
        pairs: dict[str, str] = {}
        while True:
            raw = handle.readline()
            if not raw:
                break                                   # header only (detached data)
            line = raw.decode("latin-1").rstrip("\r\n")
            if line == "":
                break
            if line.startswith("#"):
                continue
            if ":=" in line:
                key, value = line.split(":=", 1)
                pairs[key] = value
            elif ": " in line:
                key, value = line.split(": ", 1)
                fields[key.strip().lower()] = value.strip()
            else:
                raise InputError(f"bad header line {line[:60]!r}", path=path, hint="the header is damaged")
        return fields, pairs, handle.tell()


def _vectors(text: str) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for match in _VECTOR.finditer(text):
        out.append(None if match.group(0) == "none" else np.array([float(v) for v in match.group(1).split(",")]))
    return out


def load(path: str | Path) -> Volume:
    """Read an NRRD or segmentation NRRD file.

    Raises
    ------
    InputError
        Not NRRD, an unsupported type or encoding, data that do not match the sizes, several
        non-spatial axes or overlapping segment layers.
    """
    from .formats import volume_from_file

    path = Path(path)
    fields, pairs, offset = _fields(path)
    try:
        kind = TYPES[fields["type"].lower()]
        sizes = [int(v) for v in fields["sizes"].split()]
    except KeyError as exc:
        raise InputError(f"NRRD type or sizes missing or unknown ({exc.args[0]})", path=path,
                         hint="the header needs type and sizes") from None
    dtype = np.dtype(kind).newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    raw = _read_data(path, fields, offset, dtype, int(np.prod(sizes)))
    array = raw.reshape(sizes[::-1]).astype(dtype.newbyteorder("="), copy=False)
    # space directions: one entry per axis (fastest first), "none" for a non-spatial axis
    flips = np.asarray(SPACES.get(fields.get("space", "left-posterior-superior").lower(), (1, 1, 1)), float)
    if "space directions" in fields:
        vectors = _vectors(fields["space directions"])
    else:
        spacings = [float(v) for v in fields.get("spacings", " ".join(["1"] * len(sizes))).split()]
        vectors = [np.eye(3)[i] * s if i < 3 else None for i, s in enumerate(spacings)]
    spatial = [i for i, v in enumerate(vectors) if v is not None]
    other = [i for i, v in enumerate(vectors) if v is None]
    if other:
        if other != [0]:
            raise InputError(f"non-spatial axes {other} of sizes {[sizes[i] for i in other]}", path=path,
                             hint="medtool reads scalar 2D and 3D volumes")
        if sizes[0] != 1 and _segment_labels(pairs):
            raise InputError(f"{sizes[0]} overlapping segment layers", path=path,
                             hint="export the segmentation as one labelmap (3D Slicer: Export to labelmap)")
        if sizes[0] != 1:
            raise InputError(f"{sizes[0]} components per voxel", path=path,
                             hint="medtool reads scalar volumes (export one component)")
        array = array.reshape([sizes[i] for i in spatial][::-1])
    columns = [vectors[i] * flips for i in spatial]              # LPS, fastest axis first
    spacing = [float(np.linalg.norm(c)) for c in columns][::-1]
    if len(columns) not in (2, 3) or min(spacing) <= 0:
        raise InputError(f"{len(columns)} spatial axes or a zero-length axis", path=path,
                         hint="medtool reads 2D and 3D volumes")
    origin_text = _vectors(fields.get("space origin", "(0,0,0)"))
    origin = (origin_text[0] if origin_text and origin_text[0] is not None else np.zeros(3)) * flips
    direction = np.stack([c / np.linalg.norm(c) for c in columns][::-1], axis=1)
    if direction.shape[1] == 2:                                  # 2D: the normal first
        normal = np.cross(direction[:, 1], direction[:, 0])
        direction = np.column_stack([normal, direction])
    volume = volume_from_file(array, spacing, origin, direction, pairs.get(MEDTOOL_KEY), path)
    labels = _segment_labels(pairs)
    if labels:
        volume.meta.setdefault("labels", labels)
        volume.meta.setdefault("units", "label")
    return volume


def _read_data(path: Path, fields: dict[str, str], offset: int, dtype: np.dtype, count: int) -> np.ndarray:
    encoding = fields.get("encoding", "raw").lower()
    source = fields.get("data file") or fields.get("datafile")
    try:
        if source:
            if source.startswith("LIST") or "%" in source:
                raise InputError("NRRD data split over several files", path=path,
                                 hint="join them into one file (e.g. with 3D Slicer)")
            data = (path.parent / source).read_bytes()
        else:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        if encoding in ("gzip", "gz"):
            data = gzip.decompress(data)
        elif encoding in ("bzip2", "bz2"):
            data = bz2.decompress(data)
        elif encoding in ("ascii", "text", "txt"):
            return np.array(data.split(), dtype=np.float64).astype(dtype)[:count]
        elif encoding != "raw":
            raise InputError(f"NRRD encoding {encoding!r} is not supported", path=path,
                             hint="save it as raw or gzip")
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read the NRRD data ({exc})", path=path,
                         hint="the file is truncated or damaged") from exc
    skip = int(fields.get("byte skip", "0"))
    need = count * dtype.itemsize
    if skip == -1:
        skip = len(data) - need
    if len(data) - skip < need:
        raise InputError(f"{len(data) - skip} bytes of data, the sizes need {need}", path=path,
                         hint="the file is truncated")
    return np.frombuffer(data, dtype=dtype, count=count, offset=skip)


def _segment_labels(pairs: dict[str, str]) -> dict[str, str]:
    """``{"1": name, ...}`` from a segmentation's ``Segment<N>_Name`` / ``_LabelValue`` pairs."""
    labels = {}
    for key, name in pairs.items():
        match = re.fullmatch(r"Segment(\d+)_Name", key)
        if match:
            value = pairs.get(f"Segment{match.group(1)}_LabelValue", str(int(match.group(1)) + 1))
            labels[str(int(value))] = name
    return dict(sorted(labels.items(), key=lambda item: int(item[0])))


def _vector(values) -> str:
    return "(" + ",".join(repr(float(v)) for v in values) + ")"


def save(volume: Volume, path: str | Path, *, force: bool = False) -> None:
    """Write ``volume`` as gzip-encoded NRRD (a ``.seg.nrrd`` with the segment fields)."""
    from .files import atomic_output
    from .formats import header_text, writable_array

    path = Path(path)
    array = writable_array(volume, path, dtypes=TYPE_NAMES, format_name="NRRD")
    columns = (volume.direction * volume.spacing3)[:, ::-1]     # (x, y, z) axis vectors in LPS
    if volume.ndim == 2:
        columns = columns[:, :2]
    lines = ["NRRD0004", "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html",
             f"type: {TYPE_NAMES[array.dtype]}", f"dimension: {array.ndim}",
             "space: left-posterior-superior", "sizes: " + " ".join(str(n) for n in array.shape[::-1]),
             "space directions: " + " ".join(_vector(c) for c in columns.T),
             "kinds: " + " ".join(["domain"] * array.ndim), "endian: little", "encoding: gzip",
             "space origin: " + _vector(volume.origin)]
    if path.name.lower().endswith(".seg.nrrd"):
        lines += _segment_fields(volume, array)
    lines.append(f"{MEDTOOL_KEY}:={header_text(volume)}")
    body = gzip.compress(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(), compresslevel=1)
    with atomic_output(path, force=force) as temp:
        with open(temp, "wb") as handle:
            handle.write(("\n".join(lines) + "\n\n").encode("latin-1", errors="replace"))
            handle.write(body)


def _segment_fields(volume: Volume, array: np.ndarray) -> list[str]:
    """The key-value pairs 3D Slicer needs to read a labelmap as segments."""
    names = {int(k): str(v) for k, v in (volume.meta.get("labels") or {}).items()}
    values = [int(v) for v in np.unique(array) if v != 0]
    lines = ["Segmentation_MasterRepresentation:=Binary labelmap",
             "Segmentation_ContainedRepresentationNames:=Binary labelmap|"]
    extent = " ".join(f"0 {n - 1}" for n in array.shape[::-1])
    for index, value in enumerate(values):
        colour = np.random.default_rng(value).uniform(0.2, 1.0, 3)
        lines += [f"Segment{index}_ID:=Segment_{value}", f"Segment{index}_Name:={names.get(value, f'label_{value}')}",
                  f"Segment{index}_LabelValue:={value}", f"Segment{index}_Layer:=0",
                  f"Segment{index}_Color:={' '.join(f'{c:.3f}' for c in colour)}",
                  f"Segment{index}_Extent:={extent}"]
    return lines
