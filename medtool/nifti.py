"""Writing uncompressed single-file NIfTI-1 (``.nii``) without nibabel.

``nibabel`` imports pydicom and much else on its first use (about a quarter of a second),
and copies the voxels in chunks; a ``.nii`` is a 348-byte header, the extensions and the
voxels. :func:`write_nii` writes the same bytes as ``nibabel.save`` of the image
:mod:`medtool.formats` builds (tested): the RAS affine in the qform (a quaternion, as
nibabel computes it) and the sform, both with code 1, units mm, ``descrip``, one extension,
then the voxels with one write from the array. Reading NIfTI stays with nibabel.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterable

import numpy as np

#: Sizes of the NIfTI-1 header, of the 4-byte extension flag, and the block extensions pad to.
HEADER_BYTES, EXTENSION_FLAG_BYTES, EXTENSION_BLOCK = 348, 4, 16
#: NIfTI-1 data type codes of the dtypes medtool writes (booleans are written as uint8).
DATATYPES = {np.dtype(np.uint8): 2, np.dtype(np.int16): 4, np.dtype(np.int32): 8,
             np.dtype(np.float32): 16, np.dtype(np.float64): 64, np.dtype(np.int8): 256,
             np.dtype(np.uint16): 512, np.dtype(np.uint32): 768, np.dtype(np.int64): 1024,
             np.dtype(np.uint64): 1280}
#: xyzt_units of millimetres; the qform / sform code "scanner".
UNITS_MM, CODE_SCANNER = 2, 1
#: The header's fields, little endian (NIfTI-1.1, as nibabel's ``header_dtype``).
HEADER_DTYPE = np.dtype([
    ("sizeof_hdr", "<i4"), ("data_type", "S10"), ("db_name", "S18"), ("extents", "<i4"),
    ("session_error", "<i2"), ("regular", "S1"), ("dim_info", "u1"), ("dim", "<i2", (8,)),
    ("intent_p1", "<f4"), ("intent_p2", "<f4"), ("intent_p3", "<f4"), ("intent_code", "<i2"),
    ("datatype", "<i2"), ("bitpix", "<i2"), ("slice_start", "<i2"), ("pixdim", "<f4", (8,)),
    ("vox_offset", "<f4"), ("scl_slope", "<f4"), ("scl_inter", "<f4"), ("slice_end", "<i2"),
    ("slice_code", "u1"), ("xyzt_units", "u1"), ("cal_max", "<f4"), ("cal_min", "<f4"),
    ("slice_duration", "<f4"), ("toffset", "<f4"), ("glmax", "<i4"), ("glmin", "<i4"),
    ("descrip", "S80"), ("aux_file", "S24"), ("qform_code", "<i2"), ("sform_code", "<i2"),
    ("quatern_b", "<f4"), ("quatern_c", "<f4"), ("quatern_d", "<f4"), ("qoffset_x", "<f4"),
    ("qoffset_y", "<f4"), ("qoffset_z", "<f4"), ("srow_x", "<f4", (4,)),
    ("srow_y", "<f4", (4,)), ("srow_z", "<f4", (4,)), ("intent_name", "S16"), ("magic", "S4"),
])
#: Magic of a single-file NIfTI-1.
SINGLE_MAGIC = b"n+1"


def quaternion(rotation: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of the rotation matrix, as ``nibabel.quaternions.mat2quat`` (Bar-Itzhack)."""
    qxx, qyx, qzx, qxy, qyy, qzy, qxz, qyz, qzz = rotation.flat
    k = np.array([[qxx - qyy - qzz, 0, 0, 0],
                  [qyx + qxy, qyy - qxx - qzz, 0, 0],
                  [qzx + qxz, qzy + qyz, qzz - qxx - qyy, 0],
                  [qyz - qzy, qzx - qxz, qxy - qyx, qxx + qyy + qzz]]) / 3.0
    values, vectors = np.linalg.eigh(k)
    q = vectors[[3, 0, 1, 2], np.argmax(values)]
    return -q if q[0] < 0 else q


def header(shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray, *, descrip: bytes,
           extension_bytes: int) -> np.ndarray:
    """The NIfTI-1 header (a one-element structured array) of a ``.nii`` file."""
    hdr = np.zeros((), HEADER_DTYPE)
    hdr["sizeof_hdr"] = HEADER_BYTES
    hdr["dim"] = [len(shape), *shape, *[1] * (7 - len(shape))]
    hdr["datatype"] = DATATYPES[np.dtype(dtype)]
    hdr["bitpix"] = np.dtype(dtype).itemsize * 8
    hdr["pixdim"] = 1
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0     # nibabel writes the identity scaling
    hdr["xyzt_units"] = UNITS_MM
    hdr["descrip"] = descrip
    hdr["magic"] = SINGLE_MAGIC
    affine = np.asarray(affine, dtype=np.float64)
    scaled = affine[:3, :3]
    zooms = np.sqrt(np.sum(scaled * scaled, axis=0))
    rotation = scaled / zooms
    qfac = 1
    if np.linalg.det(rotation) <= 0:
        qfac = -1
        rotation[:, -1] *= -1
    left, _, right = np.linalg.svd(rotation)          # the nearest rotation (no shears)
    q = quaternion(np.dot(left, right))
    hdr["qform_code"] = hdr["sform_code"] = CODE_SCANNER
    hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"] = affine[:3, 3]
    hdr["pixdim"][0] = qfac
    hdr["pixdim"][1:4] = zooms
    hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"] = q[1:]
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[0], affine[1], affine[2]
    hdr["vox_offset"] = HEADER_BYTES + EXTENSION_FLAG_BYTES + extension_bytes
    return hdr


def extension_block(code: int, content: bytes) -> bytes:
    """One header extension: size, code, content padded with NULs to a multiple of 16 bytes."""
    size = len(content) + 8
    size += (EXTENSION_BLOCK - size % EXTENSION_BLOCK) % EXTENSION_BLOCK
    block = np.array((size, code), dtype="<i4").tobytes() + content
    return block + b"\0" * (size - len(block))


def write_nii(path: str | os.PathLike | BinaryIO, array: np.ndarray, affine: np.ndarray, *,
              descrip: bytes, extension_code: int, extension: bytes) -> None:
    """Write ``array`` (medtool order, ``(z, y, x)`` or ``(y, x)``) as a ``.nii`` whose voxel
    order is NIfTI's ``(x, y[, z])``, with the RAS ``affine`` and one extension."""
    voxels = np.ascontiguousarray(array)
    if voxels.dtype == bool:
        voxels = voxels.view(np.uint8)
    voxels = voxels.astype(voxels.dtype.newbyteorder("<"), copy=False)
    prefix = _prefix(voxels.shape, voxels.dtype, affine, descrip=descrip,
                     extension_code=extension_code, extension=extension)
    with open(path, "wb") as handle:
        handle.write(prefix)
        voxels.tofile(handle)


def write_nii_slabs(path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype,
                    affine: np.ndarray, slabs: Iterable[np.ndarray], *, descrip: bytes,
                    extension_code: int, extension: bytes) -> None:
    """Write a ``.nii`` as :func:`write_nii` would for an array of ``shape`` and ``dtype``
    (medtool order, little-endian numbers) given as ``slabs``: consecutive runs of slices
    along its first axis, each written as it comes (a reader may reuse one buffer for all)."""
    dtype = np.dtype(dtype)
    if dtype not in DATATYPES or dtype.byteorder == ">":
        raise ValueError(f"write_nii_slabs writes little-endian numbers, not {dtype}")
    prefix = _prefix(shape, dtype, affine, descrip=descrip, extension_code=extension_code,
                     extension=extension)
    written = 0
    with open(path, "wb") as handle:
        handle.write(prefix)
        for slab in slabs:
            if slab.dtype != dtype or slab.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"a slab of {slab.shape} {slab.dtype} in a {shape} {dtype} file")
            handle.write(memoryview(np.ascontiguousarray(slab)).cast("B"))
            written += len(slab)
    if written != shape[0]:
        raise ValueError(f"{written} slices written of {shape[0]}")


def _prefix(shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray, *, descrip: bytes,
            extension_code: int, extension: bytes) -> bytes:
    """The header, extension flag and extension block before the voxels (medtool ``shape``)."""
    block = extension_block(extension_code, extension)
    hdr = header(tuple(shape)[::-1], dtype, affine, descrip=descrip, extension_bytes=len(block))
    return hdr.tobytes() + b"\x01\0\0\0" + block
