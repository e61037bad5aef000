"""Reading and writing volume files, the format chosen by the file name.

=============  ===================================================================================
``.npy``       the array, plus a ``<same stem>.json`` sidecar holding geometry, meta and history
``.npz``       the array under ``array`` and geometry under ``spacing``, ``origin``,
               ``direction``; meta and history as a JSON string under ``header`` (no pickles)
``.nii[.gz]``  NIfTI-1 with the RAS affine in both qform and sform (code 1, scanner), so the file
               opens aligned in 3D Slicer / ITK-SNAP; the exact float64 geometry, meta and
               history ride along in a JSON header extension (NIfTI stores float32)
=============  ===================================================================================

Every format round-trips the array (values and dtype) and the geometry exactly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import InputError, UsageError, reason
from .files import VOLUME_SUFFIXES, atomic_output, check_writable, sidecar_path, volume_suffix
from .volume import Volume, from_nifti, to_nifti

log = logging.getLogger(__name__)

#: Identifies medtool's JSON (sidecar, npz header, NIfTI extension) and its layout version.
FORMAT_NAME = "medtool-volume"
FORMAT_VERSION = 1
#: NIfTI extension code used for medtool's JSON header (NIFTI_ECODE_COMMENT: free text).
NIFTI_ECODE_COMMENT = 6
#: Geometry in a NIfTI header is float32; a JSON extension that disagrees with the header by
#: more than this (mm) was not written for this header (the file was edited by another tool)
#: and is ignored in favour of the header.
NIFTI_HEADER_TOLERANCE_MM = 1e-3
#: dtypes NIfTI-1 cannot hold, stored as the listed type and restored from the JSON header.
_NIFTI_STAND_INS = {np.dtype(bool): np.dtype(np.uint8)}


def load_volume(path: str | os.PathLike, *, mmap: bool = False) -> Volume:
    """Read a volume file.

    Parameters
    ----------
    path
        ``.npy`` (with its ``.json`` sidecar), ``.npz``, ``.nii`` or ``.nii.gz``.
    mmap
        Memory-map the array instead of reading it (``.npy`` and uncompressed ``.nii`` only;
        ignored for the others).

    Raises
    ------
    InputError
        The file is missing, not a volume, truncated, or its sidecar does not match it.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise InputError(
            "not a volume file", path=path,
            hint=f"medtool reads {', '.join(VOLUME_SUFFIXES)}",
        )
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    reader = {".npy": _load_npy, ".npz": _load_npz, ".nii": _load_nifti, ".nii.gz": _load_nifti,
              ".nrrd": _load_nrrd, ".seg.nrrd": _load_nrrd, ".mha": _load_metaimage, ".mhd": _load_metaimage}
    try:
        return reader[suffix](path, mmap=mmap)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"cannot read {suffix} file ({reason(exc, typed=False)})", path=path,
            hint="the file is truncated or not in this format; re-create it",
        ) from exc


def save_volume(volume: Volume, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``volume`` to ``path`` atomically, the format chosen by the suffix.

    An existing file is only replaced with ``force=True``. Returns ``path``.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise UsageError(
            f"cannot tell the output format of {path.name}",
            path=path, hint=f"end the name in one of {', '.join(VOLUME_SUFFIXES)}",
        )
    check_writable(path, force=force)
    writer = {".npy": _save_npy, ".npz": _save_npz, ".nii": _save_nifti, ".nii.gz": _save_nifti,
              ".nrrd": _save_nrrd, ".seg.nrrd": _save_nrrd, ".mha": _save_metaimage, ".mhd": _save_metaimage}
    writer[suffix](volume, path, force=force)
    return path


# -- the JSON header shared by every format ---------------------------------------------------
def _header(volume: Volume) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "shape": list(volume.shape),
        "dtype": volume.array.dtype.str,
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": volume.direction.tolist(),
        "meta": volume.meta,
        "history": volume.history,
    }


def _dumps(header: dict[str, Any]) -> str:
    return json.dumps(header, indent=1, allow_nan=False, default=json_default)


def json_default(value: Any) -> Any:
    """``json.dumps`` hook for NumPy scalars and arrays; anything else is an error."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value {value!r} is not JSON-serialisable")


def header_text(volume: Volume) -> str:
    """medtool's JSON header of ``volume`` on one line (geometry, meta, history), as the
    formats with a free-text field carry it (NRRD, MetaImage)."""
    return json.dumps(_header(volume), allow_nan=False, default=json_default, separators=(",", ":"))


def writable_array(volume: Volume, path: Path, *, dtypes, format_name: str) -> np.ndarray:
    """``volume``'s array as a format with a fixed set of ``dtypes`` stores it: contiguous,
    booleans as uint8.

    Raises
    ------
    InputError
        The format cannot hold the array's dtype.
    """
    array = np.ascontiguousarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype not in dtypes:
        raise InputError(f"{format_name} cannot hold {array.dtype} values", path=path, hint="write another format")
    return array


def volume_from_file(array: np.ndarray, spacing, origin, direction, text: str | None, path: Path) -> Volume:
    """The volume of a file whose own header gave ``spacing``, ``origin`` and ``direction``
    and which may carry medtool's JSON header ``text``: that header's exact geometry, meta
    and history when its geometry agrees with the file's, else the file's geometry (with a
    warning when another tool changed it)."""
    header = None
    if text:
        try:
            header = json.loads(text)
        except ValueError:
            header = None
        if not (isinstance(header, dict) and header.get("format") == FORMAT_NAME):
            header = None
    if header is not None and _agrees(header, array, spacing, origin, direction):
        return _volume_from_header(array, header, path)
    if header is not None:
        log.warning("%s: header geometry was changed by another tool; using the file's own", path)
    meta = dict(header.get("meta", {})) if header else {}
    history = list(header.get("history", [])) if header else []
    return Volume(array, tuple(float(v) for v in spacing), tuple(float(v) for v in origin),
                  np.asarray(direction, dtype=np.float64), meta, history)


def _load_nrrd(path: Path, *, mmap: bool) -> Volume:
    from .nrrd import load

    return load(path)


def _save_nrrd(volume: Volume, path: Path, *, force: bool) -> None:
    from .nrrd import save

    save(volume, path, force=force)


def _load_metaimage(path: Path, *, mmap: bool) -> Volume:
    from .metaimage import load

    return load(path)


def _save_metaimage(volume: Volume, path: Path, *, force: bool) -> None:
    from .metaimage import save

    save(volume, path, force=force)


def _volume_from_header(array: np.ndarray, header: dict[str, Any], path: Path) -> Volume:
    shape = tuple(header.get("shape", array.shape))
    if shape != array.shape:
        raise InputError(
            f"header says shape {list(shape)} but the array is {list(array.shape)}",
            path=path, hint="the geometry belongs to another file; re-create it",
        )
    if "dtype" in header and np.dtype(header["dtype"]) != array.dtype:
        raise InputError(
            f"header says dtype {np.dtype(header['dtype'])} but the array is {array.dtype}",
            path=path, hint="the geometry belongs to another file; re-create it",
        )
    try:
        return Volume(
            array,
            tuple(header["spacing"]),
            tuple(header["origin"]),
            np.asarray(header["direction"], dtype=np.float64),
            dict(header.get("meta", {})),
            list(header.get("history", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"bad geometry in header ({reason(exc, typed=False)})", path=path,
                         hint="fix or re-create the file") from exc


# -- .npy + .json -----------------------------------------------------------------------------
def _load_npy(path: Path, *, mmap: bool) -> Volume:
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        log.warning("%s: no sidecar %s, assuming 1 mm spacing at the origin", path, sidecar.name)
        return Volume(array, meta={"geometry": "assumed"})
    try:
        header = json.loads(sidecar.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"sidecar is not valid JSON ({reason(exc, typed=False)})", path=sidecar,
                         hint="fix or delete it") from exc
    if not isinstance(header, dict):
        raise InputError("sidecar is not a JSON object", path=sidecar, hint="fix or delete it")
    return _volume_from_header(array, header, sidecar)


def _save_npy(volume: Volume, path: Path, *, force: bool) -> None:
    text = _dumps(_header(volume))
    sidecar = sidecar_path(path)
    with atomic_output(sidecar, force=force) as temp_json, atomic_output(path, force=force) as temp:
        temp_json.write_text(text, encoding="utf-8")
        with open(temp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(volume.array), allow_pickle=False)


# -- .npz -------------------------------------------------------------------------------------
def _load_npz(path: Path, *, mmap: bool) -> Volume:
    with np.load(path, allow_pickle=False) as data:
        if "array" not in data.files:
            raise InputError("no 'array' entry in the .npz", path=path,
                             hint="save the image under the key 'array'")
        array = data["array"]
        if "header" in data.files:
            header = json.loads(str(data["header"]))
        else:
            header = {key: data[key].tolist() for key in ("spacing", "origin", "direction")
                      if key in data.files}
            if len(header) < 3:
                log.warning("%s: no geometry keys, assuming 1 mm spacing at the origin", path)
                return Volume(array, meta={"geometry": "assumed"})
    return _volume_from_header(array, header, path)


def _save_npz(volume: Volume, path: Path, *, force: bool) -> None:
    header = _header(volume)
    with atomic_output(path, force=force) as temp:
        with open(temp, "wb") as handle:
            np.savez_compressed(
                handle,
                array=np.ascontiguousarray(volume.array),
                spacing=np.asarray(volume.spacing),
                origin=np.asarray(volume.origin),
                direction=volume.direction,
                header=np.asarray(_dumps(header)),
            )


# -- NIfTI ------------------------------------------------------------------------------------
def _load_nifti(path: Path, *, mmap: bool) -> Volume:
    import nibabel as nib

    try:
        image = nib.load(path, mmap=mmap)
    except nib.filebasedimages.ImageFileError as exc:
        raise InputError(f"cannot read {volume_suffix(path)} file ({reason(exc, typed=False)})", path=path,
                         hint="the file is truncated or not NIfTI; re-create it") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError("not a NIfTI image", path=path, hint="convert it to NIfTI first")
    header = _medtool_extension(image)
    proxy = image.dataobj
    shape = proxy.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise InputError(f"{len(shape)}D NIfTI (shape {list(proxy.shape)}) is not a 2D/3D volume",
                         path=path, hint="split it into 3D volumes first")
    # nibabel moves scl_slope/scl_inter from the header to the array proxy when loading
    scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
    data = image.get_fdata(dtype=np.float32) if scaled else proxy.get_unscaled()
    # Without mmap, nibabel has already read a fresh array of its own: no copy needed.
    data = np.asarray(data).reshape(shape)
    array, spacing, origin, direction = from_nifti(data, image.affine)
    if header is not None and _agrees(header, array, spacing, origin, direction):
        stored = np.dtype(header.get("dtype", array.dtype))
        if stored != array.dtype and _NIFTI_STAND_INS.get(stored) == array.dtype:
            array = array.astype(stored)
        return _volume_from_header(array, header, path)
    if header is not None:
        log.warning("%s: header geometry was changed by another tool; using the NIfTI header", path)
    meta = dict(header.get("meta", {})) if header else {}
    history = list(header.get("history", [])) if header else []
    return Volume(array, spacing, origin, direction, meta, history)


def load_channels(path: str | os.PathLike) -> list[Volume]:
    """The channels of a 4D NIfTI (fourth axis: the Decathlon's MRI sequences), each a 3D volume
    on the file's grid; a 2D or 3D file of any format gives itself as one channel.

    Raises
    ------
    InputError
        The file cannot be read, or has more than four axes.
    """
    import nibabel as nib

    path = Path(path)
    if volume_suffix(path) not in (".nii", ".nii.gz"):
        return [load_volume(path, mmap=True)]
    try:
        image = nib.load(path)
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(f"cannot read it ({reason(exc, typed=False)})", path=path,
                         hint="the file is truncated or not NIfTI; re-create it") from exc
    shape = image.shape
    if len(shape) <= 3 or (len(shape) == 4 and shape[3] == 1):
        return [load_volume(path, mmap=True)]
    if len(shape) != 4:
        raise InputError(f"{len(shape)}D NIfTI (shape {list(shape)}) is not a 4D stack of channels",
                         path=path, hint="give one 3D file per channel, or a 4D file")
    data = np.asarray(image.dataobj)
    volumes = []
    for channel in range(shape[3]):
        array, spacing, origin, direction = from_nifti(np.ascontiguousarray(data[..., channel]), image.affine)
        volumes.append(Volume(array, spacing, origin, direction, {}))
    return volumes


def _agrees(header: dict[str, Any], array, spacing, origin, direction) -> bool:
    """True when the exact JSON geometry matches the float32 NIfTI header it rode with."""
    try:
        return (
            tuple(header["shape"]) == array.shape
            and np.allclose(header["spacing"], spacing, atol=NIFTI_HEADER_TOLERANCE_MM)
            and np.allclose(header["origin"], origin, atol=NIFTI_HEADER_TOLERANCE_MM)
            and np.allclose(header["direction"], direction, atol=NIFTI_HEADER_TOLERANCE_MM)
        )
    except (KeyError, TypeError, ValueError):
        return False


def _medtool_extension(image) -> dict[str, Any] | None:
    for extension in image.header.extensions:
        if extension.get_code() != NIFTI_ECODE_COMMENT:
            continue
        content = extension.get_content()
        try:
            text = content.decode("utf-8").rstrip("\x00 ") if isinstance(content, bytes) else str(content)
            header = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(header, dict) and header.get("format") == FORMAT_NAME:
            return header
    return None


def _nifti_texts(volume: Volume) -> tuple[bytes, bytes]:
    """The ``descrip`` field and the JSON header extension of ``volume``'s NIfTI file."""
    descrip = f"medtool {volume.meta.get('units', '')}".strip().encode()[:79]
    return descrip, _dumps(_header(volume)).encode("utf-8")


def writes_slabs(path: str | os.PathLike, dtype: np.dtype) -> bool:
    """Whether :func:`save_volume_slabs` can write ``path`` with voxels of ``dtype``."""
    from .nifti import DATATYPES

    dtype = np.dtype(dtype)
    return (Path(path).name.lower().endswith(".nii") and dtype in DATATYPES
            and dtype.byteorder != ">" and sys.byteorder == "little")


def save_volume_slabs(volume: Volume, path: str | os.PathLike, slabs: Iterable[np.ndarray], *,
                      force: bool = False) -> None:
    """Save ``volume`` (a ``.nii``: see :func:`writes_slabs`) whose voxels come as ``slabs``
    (consecutive runs of slices, written as they come: no whole array in memory, one copy);
    header and extension are ``volume``'s, its array's values are not read. Atomic."""
    from .nifti import write_nii_slabs

    path = Path(path)
    if not writes_slabs(path, volume.array.dtype):
        raise ValueError(f"cannot write {path.name} with {volume.array.dtype} voxels in slabs")
    _, affine = to_nifti(volume)
    descrip, extension = _nifti_texts(volume)
    with atomic_output(path, force=force) as temp:
        write_nii_slabs(temp, volume.shape, volume.array.dtype, affine, slabs, descrip=descrip,
                        extension_code=NIFTI_ECODE_COMMENT, extension=extension)


def _save_nifti(volume: Volume, path: Path, *, force: bool) -> None:
    data, affine = to_nifti(volume)
    descrip, extension = _nifti_texts(volume)
    if not path.name.lower().endswith(".nii.gz"):
        from .nifti import write_nii                 # nibabel's bytes, without nibabel

        with atomic_output(path, force=force) as temp:
            write_nii(temp, volume.array, affine, descrip=descrip,
                      extension_code=NIFTI_ECODE_COMMENT, extension=extension)
        return
    import nibabel as nib

    stand_in = _NIFTI_STAND_INS.get(data.dtype)
    if stand_in is not None:
        data = data.astype(stand_in)
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_data_dtype(data.dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units(xyz="mm")
    header["descrip"] = descrip
    header.extensions.append(nib.nifti1.Nifti1Extension(NIFTI_ECODE_COMMENT, extension))
    with atomic_output(path, force=force) as temp:
        nib.save(image, temp)
