"""MetaImage (``.mha`` with the pixels inline, ``.mhd`` with a separate pixel file), ITK's
own format, read and written with exact geometry.

The header is ``Key = Value`` lines ending with ``ElementDataFile``: ``NDims``, ``DimSize``
(fastest axis first), ``ElementSpacing``, ``Offset`` (or ``Position``/``Origin``: the first
voxel's centre, LPS), ``TransformMatrix`` (the direction cosines, one axis after the other, as
ITK writes them), ``ElementType``, ``ElementByteOrderMSB``, ``CompressedData`` (zlib) and
``HeaderSize``. medtool's JSON header rides in a ``Medtool`` line, which ITK ignores.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .errors import InputError
from .volume import Volume

#: MetaIO element types -> NumPy dtypes.
TYPES = {"MET_CHAR": np.int8, "MET_UCHAR": np.uint8, "MET_SHORT": np.int16, "MET_USHORT": np.uint16,
         "MET_INT": np.int32, "MET_UINT": np.uint32, "MET_LONG": np.int32, "MET_ULONG": np.uint32,
         "MET_LONG_LONG": np.int64, "MET_ULONG_LONG": np.uint64, "MET_FLOAT": np.float32,
         "MET_DOUBLE": np.float64}
#: NumPy dtypes -> the element type medtool writes.
TYPE_NAMES = {np.dtype(np.int8): "MET_CHAR", np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.int16): "MET_SHORT",
              np.dtype(np.uint16): "MET_USHORT", np.dtype(np.int32): "MET_INT", np.dtype(np.uint32): "MET_UINT",
              np.dtype(np.int64): "MET_LONG_LONG", np.dtype(np.uint64): "MET_ULONG_LONG",
              np.dtype(np.float32): "MET_FLOAT", np.dtype(np.float64): "MET_DOUBLE"}
#: The header line that carries medtool's JSON header.
MEDTOOL_KEY = "Medtool"


def _header(path: Path) -> tuple[dict[str, str], int]:
    """The header's keys and the byte offset where inline data begin."""
    keys: dict[str, str] = {}
    with open(path, "rb") as handle:
        while True:
            raw = handle.readline()
            if not raw:
                break
            line = raw.decode("latin-1").strip()
            if not line:
                continue
            if "=" not in line:
                raise InputError(f"bad header line {line[:60]!r}", path=path,
                                 hint="not a MetaImage file, or a damaged one")
            key, value = (part.strip() for part in line.split("=", 1))
            keys[key] = value
            if key == "ElementDataFile":
                break
            if len(keys) > 200:
                raise InputError("no ElementDataFile line in the header", path=path,
                                 hint="not a MetaImage file, or a damaged one")
        return keys, handle.tell()


def _numbers(keys: dict[str, str], name: str, count: int, default: float | None = None) -> np.ndarray:
    if name not in keys:
        if default is None:
            raise KeyError(name)
        return np.full(count, default, dtype=np.float64)
    values = np.array([float(v) for v in keys[name].split()], dtype=np.float64)
    if len(values) < count:
        raise ValueError(f"{name} has {len(values)} values, {count} needed")
    return values[:count]


def load(path: str | Path) -> Volume:
    """Read a ``.mha`` or ``.mhd`` MetaImage.

    Raises
    ------
    InputError
        Not MetaImage, an unsupported element type, several channels, data that do not
        match the sizes.
    """
    from .formats import volume_from_file

    path = Path(path)
    keys, offset = _header(path)
    try:
        ndim = int(keys["NDims"])
        sizes = [int(v) for v in keys["DimSize"].split()][:ndim]
        kind = TYPES[keys["ElementType"]]
        spacing = _numbers(keys, "ElementSpacing", ndim, 1.0)
        origin_key = next((k for k in ("Offset", "Position", "Origin") if k in keys), None)
        origin = _numbers(keys, origin_key, ndim) if origin_key else np.zeros(ndim)
        matrix = _numbers(keys, "TransformMatrix", ndim * ndim) if "TransformMatrix" in keys \
            else np.eye(ndim).ravel()
    except (KeyError, ValueError) as exc:
        raise InputError(f"MetaImage header incomplete or unknown ({exc})", path=path,
                         hint="the header needs NDims, DimSize and a known ElementType") from None
    if ndim not in (2, 3) or int(keys.get("ElementNumberOfChannels", "1")) != 1:
        raise InputError(f"{ndim}D with {keys.get('ElementNumberOfChannels', '1')} channels", path=path,
                         hint="medtool reads scalar 2D and 3D volumes")
    big = keys.get("ElementByteOrderMSB", keys.get("BinaryDataByteOrderMSB", "False")).lower() == "true"
    dtype = np.dtype(kind).newbyteorder(">" if big else "<")
    data = _pixels(path, keys, offset)
    need = int(np.prod(sizes)) * dtype.itemsize
    if len(data) < need:
        raise InputError(f"{len(data)} bytes of pixels, DimSize needs {need}", path=path,
                         hint="the file is truncated")
    array = np.frombuffer(data, dtype=dtype, count=int(np.prod(sizes))).reshape(sizes[::-1])
    array = array.astype(dtype.newbyteorder("="), copy=True)
    # ITK writes the direction matrix one axis (column) after the other
    axes = matrix.reshape(ndim, ndim)                    # row i: the direction of axis i
    if ndim == 2:
        axes = np.array([[*axes[0], 0.0], [*axes[1], 0.0]])
        normal = np.cross(axes[0], axes[1])
        direction = np.column_stack([normal, axes[1], axes[0]])
        origin = np.array([*origin, 0.0])
    else:
        direction = axes[::-1].T                          # columns (z, y, x)
    return volume_from_file(array, spacing[::-1], origin, direction, keys.get(MEDTOOL_KEY), path)


def _pixels(path: Path, keys: dict[str, str], offset: int) -> bytes:
    source = keys.get("ElementDataFile", "LOCAL")
    try:
        if source == "LOCAL":
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        elif source.startswith("LIST") or "%" in source or " " in source:
            raise InputError("MetaImage pixels split over several files", path=path,
                             hint="join them into one file (e.g. with SimpleITK)")
        else:
            data = (path.parent / source).read_bytes()
        skip = int(keys.get("HeaderSize", "0"))
        if skip > 0:
            data = data[skip:]
        if keys.get("CompressedData", "False").lower() == "true":
            data = zlib.decompress(data)
    except (OSError, zlib.error) as exc:
        raise InputError(f"cannot read the MetaImage pixels ({exc})", path=path,
                         hint="the file is truncated or its pixel file is missing") from exc
    return data


def save(volume: Volume, path: str | Path, *, force: bool = False) -> None:
    """Write ``volume`` as MetaImage: ``.mha`` with the pixels inline (zlib), ``.mhd`` with
    them in ``<name>.raw`` beside it."""
    from .files import atomic_output, raw_path
    from .formats import header_text, writable_array

    path = Path(path)
    array = writable_array(volume, path, dtypes=TYPE_NAMES, format_name="MetaImage")
    ndim = array.ndim
    if ndim == 3:
        axes = volume.direction[:, ::-1].T               # row i: axis i (x, y, z) in LPS
        origin = np.asarray(volume.origin)
    else:
        axes = volume.direction[:2, 1:][:, ::-1].T        # in-plane only
        origin = np.asarray(volume.origin)[:2]
    spacing = list(volume.spacing)[::-1]
    inline = path.name.lower().endswith(".mha")
    pixels = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    if inline:
        pixels = zlib.compress(pixels, 1)
    lines = ["ObjectType = Image", f"NDims = {ndim}", "BinaryData = True", "BinaryDataByteOrderMSB = False",
             f"CompressedData = {'True' if inline else 'False'}"]
    if inline:
        lines.append(f"CompressedDataSize = {len(pixels)}")
    lines += ["TransformMatrix = " + " ".join(repr(float(v)) for v in axes.ravel()),
              "Offset = " + " ".join(repr(float(v)) for v in origin),
              "ElementSpacing = " + " ".join(repr(float(v)) for v in spacing),
              "DimSize = " + " ".join(str(n) for n in array.shape[::-1]),
              f"ElementType = {TYPE_NAMES[array.dtype]}",
              f"{MEDTOOL_KEY} = {header_text(volume)}",
              f"ElementDataFile = {'LOCAL' if inline else raw_path(path).name}"]
    text = ("\n".join(lines) + "\n").encode("latin-1", errors="replace")
    if inline:
        with atomic_output(path, force=force) as temp:
            temp.write_bytes(text + pixels)
        return
    with atomic_output(raw_path(path), force=force) as temp_raw, atomic_output(path, force=force) as temp:
        temp_raw.write_bytes(pixels)
        temp.write_bytes(text)
