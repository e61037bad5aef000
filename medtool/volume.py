"""Volumes and their geometry.

This module is the one place in medtool that knows axis order and the LPS/RAS conventions;
nothing else converts.

Conventions
-----------
* Arrays are indexed ``(z, y, x)`` = (slice, row, column), the order pydicom stacks slices in.
  2D images are ``(y, x)``.
* World coordinates are DICOM patient coordinates, LPS, in millimetres: +x points to the
  patient's left, +y to posterior, +z to superior.
* ``origin`` is the world position of the *centre* of voxel ``[0, 0, 0]`` (DICOM
  ImagePositionPatient of the first slice).
* ``direction`` is a 3x3 matrix whose column ``a`` is the unit LPS vector along array axis ``a``
  (so for an axial DICOM series, column 2 is the row cosine of ImageOrientationPatient, column 1
  the column cosine, column 0 the slice stacking direction). For a 2D image, column 0 is the
  image normal and columns 1, 2 belong to ``(y, x)``. Being in array order, the matrix of a
  plain axial stack is not the identity but :data:`AXIAL_DIRECTION` (the default).
* The world position of voxel index ``idx`` (array order) is
  ``origin + direction @ (spacing * idx)``.
* NIfTI stores voxels in ``(i, j, k) = (x, y, z)`` order with an affine into RAS space, which
  is LPS with the first two axes negated. :func:`to_nifti` and :func:`from_nifti` do that
  conversion, and only they.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: Names of the array axes of a 3D volume, in array order.
AXES_3D = ("z", "y", "x")
#: Names of the array axes of a 2D image, in array order.
AXES_2D = ("y", "x")
#: Flips LPS world coordinates to RAS (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: Anatomical letter an LPS world axis points to, for the (negative, positive) direction.
_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
#: Units of a volume's values.
UNITS_RAW = "raw"
UNITS_HU = "HU"
#: Direction of a standard axial stack (array z -> superior, y -> posterior, x -> left): the
#: identity in (x, y, z) terms, written in array order (columns z, y, x). The default.
AXIAL_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
#: How far direction columns may be from unit length / orthogonal (DICOM files often carry
#: cosines rounded to 6 decimals).
DIRECTION_TOLERANCE = 1e-3


@dataclass(eq=False)
class Volume:
    """An image array with its place in the patient.

    Parameters
    ----------
    array
        2D ``(y, x)`` or 3D ``(z, y, x)`` array, any numeric or boolean dtype.
    spacing
        Voxel size in mm along each array axis, in array order.
    origin
        LPS position (mm) of the centre of the first voxel.
    direction
        3x3 direction cosines, column ``a`` for array axis ``a`` (see the module docstring);
        the default :data:`AXIAL_DIRECTION` is a standard axial stack (orientation ``LPS``).
    meta
        JSON-serialisable facts about the data: ``units`` (``raw`` or ``HU``), ``modality``,
        non-identifying source facts. Never patient-identifying values.
    history
        One entry per medtool step that produced this volume (see :mod:`medtool.provenance`).
    """

    array: np.ndarray
    spacing: tuple[float, ...] = ()
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: AXIAL_DIRECTION.copy())
    meta: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.array.ndim not in (2, 3):
            raise ValueError(f"a volume is 2D or 3D, got an array of shape {self.array.shape}")
        if not self.spacing:
            self.spacing = (1.0,) * self.array.ndim
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.array(self.direction, dtype=np.float64).reshape(3, 3)
        check_geometry(self.spacing, self.origin, self.direction, ndim=self.array.ndim)

    # -- shape ---------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def axes(self) -> tuple[str, ...]:
        """Axis names in array order, ``("z", "y", "x")`` or ``("y", "x")``."""
        return AXES_3D if self.ndim == 3 else AXES_2D

    @property
    def units(self) -> str:
        return str(self.meta.get("units", UNITS_RAW))

    # -- geometry ------------------------------------------------------------------------
    @property
    def spacing3(self) -> np.ndarray:
        """Spacing of the three direction columns; a 2D image gets 1 mm along its normal."""
        spacing = np.asarray(self.spacing, dtype=np.float64)
        return spacing if self.ndim == 3 else np.concatenate([[1.0], spacing])

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from homogeneous array index ``(z, y, x, 1)`` to LPS mm.

        For a 2D image the index is ``(0, y, x, 1)``.
        """
        affine = np.eye(4)
        affine[:3, :3] = self.direction * self.spacing3
        affine[:3, 3] = self.origin
        return affine

    def world(self, index: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS position (mm) of voxel centres at array ``index`` (``(..., ndim)``)."""
        index = np.asarray(index, dtype=np.float64)
        if self.ndim == 2:
            index = np.concatenate([np.zeros(index.shape[:-1] + (1,)), index], axis=-1)
        return index @ (self.direction * self.spacing3).T + np.asarray(self.origin)

    def continuous_index(self, points: Sequence[float] | np.ndarray) -> np.ndarray:
        """Array index ``(z, y, x)`` (fractional) of LPS points ``(..., 3)`` (mm): the inverse
        of :meth:`world`. For a 2D image the first value is the distance (mm) from the image
        plane along its normal, then ``(y, x)``."""
        matrix = self.direction * self.spacing3
        return (np.asarray(points, np.float64) - np.asarray(self.origin)) @ np.linalg.inv(matrix).T

    @property
    def orientation(self) -> str:
        """Anatomical direction each axis points to, in ``x, y[, z]`` order (nibabel style).

        A standard axial DICOM series gives ``"LPS"`` (z increasing to superior) or ``"LPI"``;
        a canonical NIfTI gives ``"RAS"``.
        """
        columns = self.direction[:, ::-1][:, : self.ndim]  # x, y[, z]
        return orientation_code(columns)

    def reoriented(self, code: str) -> "Volume":
        """The same voxels with the array axes permuted and flipped so that the volume's
        orientation is ``code`` (``x, y, z`` letters, e.g. ``"LPS"``): an exact reordering, no
        interpolation; every voxel keeps its world position. 3D only.

        Raises
        ------
        ValueError
            ``code`` is not a valid orientation, or the volume is 2D.
        """
        if self.ndim != 3:
            raise ValueError("only 3D volumes are reoriented")
        wanted = _axis_directions(code[::-1])                     # (world axis, sign) per z, y, x
        have = _axis_directions(self.orientation[::-1])
        perm = [next(a for a, (w, _) in enumerate(have) if w == world) for world, _ in wanted]
        flips = [have[a][1] != sign for a, (_, sign) in zip(perm, wanted)]
        array = np.transpose(self.array, perm)
        flipped = tuple(axis for axis, flip in enumerate(flips) if flip)
        if flipped:
            array = np.flip(array, axis=flipped)
        direction = self.direction[:, perm] * np.where(flips, -1.0, 1.0)
        spacing = tuple(self.spacing[a] for a in perm)
        first = [self.shape[a] - 1 if flip else 0 for a, flip in zip(perm, flips)]
        index = np.zeros(3)
        index[perm] = first
        origin = tuple(float(v) for v in self.world(index))
        return Volume(array, spacing, origin, direction, dict(self.meta), list(self.history))

    def same_grid(self, other: "Volume", *, atol: float = 1e-4) -> bool:
        """True when ``other`` has the same shape and voxel centres (within ``atol`` mm)."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    # -- copies --------------------------------------------------------------------------
    def cropped(self, box: Sequence[slice]) -> "Volume":
        """The voxels inside ``box`` (one slice per axis, step 1) as a volume of their own:
        the same spacing and direction, the origin moved to the first voxel kept, so every
        voxel keeps its world position."""
        if len(box) != self.ndim or any(s.step not in (None, 1) for s in box):
            raise ValueError(f"a crop needs {self.ndim} slices of step 1, got {box}")
        start = [s.indices(n)[0] for s, n in zip(box, self.shape)]
        origin = tuple(float(v) for v in self.world(start))
        return Volume(self.array[tuple(box)], self.spacing, origin, self.direction.copy(),
                      copy.deepcopy(self.meta), copy.deepcopy(self.history))

    def with_array(self, array: np.ndarray, **meta: Any) -> "Volume":
        """A new volume on the same grid holding ``array``; ``meta`` updates the metadata."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the grid {self.shape}")
        return Volume(
            array,
            self.spacing,
            self.origin,
            self.direction.copy(),
            {**copy.deepcopy(self.meta), **meta},
            copy.deepcopy(self.history),
        )


def direction_from_cosines(row: Sequence[float], column: Sequence[float],
                           stack: Sequence[float] | None = None) -> np.ndarray:
    """Direction matrix from DICOM cosines.

    Parameters
    ----------
    row, column
        ImageOrientationPatient's first and last three values: the LPS direction of increasing
        column index (along a row) and of increasing row index.
    stack
        Direction in which the slice index increases; default the normal ``row x column``.
    """
    row, column = np.asarray(row, np.float64), np.asarray(column, np.float64)
    stack = np.cross(row, column) if stack is None else np.asarray(stack, np.float64)
    return np.column_stack([stack, column, row])


def check_geometry(spacing, origin, direction, *, ndim: int) -> None:
    """Raise ``ValueError`` if the geometry is not usable for an ``ndim``-D array."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (ndim,):
        raise ValueError(f"spacing needs {ndim} values, got {spacing.tolist()}")
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be positive, got {spacing.tolist()}")
    if len(origin) != 3 or not np.all(np.isfinite(origin)):
        raise ValueError(f"origin needs 3 finite values, got {list(origin)}")
    direction = np.asarray(direction, dtype=np.float64)
    if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
        raise ValueError("direction must be a finite 3x3 matrix")
    gram = direction.T @ direction
    if not np.allclose(gram, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise ValueError(
            "direction cosines are not orthonormal (sheared or scaled axes are not supported)"
        )


def orientation_code(columns: np.ndarray) -> str:
    """Letters of the anatomical direction each LPS column vector points to.

    Each world axis is used once: the largest remaining component is assigned first, which
    gives the closest standard orientation for oblique data (as nibabel's ``io_orientation``).
    """
    columns = np.asarray(columns, dtype=np.float64)
    remaining = np.abs(columns)
    letters = [""] * columns.shape[1]
    for _ in range(columns.shape[1]):
        world_axis, array_axis = np.unravel_index(np.argmax(remaining), remaining.shape)
        positive = columns[world_axis, array_axis] > 0
        letters[array_axis] = _AXIS_LETTERS[world_axis][int(positive)]
        remaining[world_axis, :] = -1.0
        remaining[:, array_axis] = -1.0
    return "".join(letters)


def _axis_directions(letters: str) -> list[tuple[int, bool]]:
    """``(world axis, points to the positive LPS direction)`` of each orientation letter."""
    found = []
    for letter in letters.upper():
        for world, pair in enumerate(_AXIS_LETTERS):
            if letter in pair:
                found.append((world, letter == pair[1]))
                break
        else:
            raise ValueError(f"{letters!r} is not an orientation (letters L/R, P/A, S/I)")
    if sorted(w for w, _ in found) != list(range(len(letters))):
        raise ValueError(f"{letters!r} names a world axis twice")
    return found


def to_nifti(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Voxel data in NIfTI ``(i, j[, k]) = (x, y[, z])`` order and the 4x4 RAS affine."""
    data = volume.array.T  # (z, y, x) -> (x, y, z); (y, x) -> (x, y)
    ras = np.eye(4)
    # Columns (x, y, z); for a 2D image the third column is the image normal at 1 mm.
    ras[:3, :3] = LPS_TO_RAS @ (volume.direction * volume.spacing3)[:, ::-1]
    ras[:3, 3] = LPS_TO_RAS @ np.asarray(volume.origin)
    return data, ras


def from_nifti(
    data: np.ndarray, ras_affine: np.ndarray
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, float, float], np.ndarray]:
    """Inverse of :func:`to_nifti`: ``(array, spacing, origin, direction)`` in medtool order."""
    lps = LPS_TO_RAS @ np.asarray(ras_affine, dtype=np.float64)[:3, :]
    columns = lps[:, :3][:, ::-1]  # (k, j, i) = (z, y, x)
    norms = np.linalg.norm(columns, axis=0)
    if np.any(norms == 0):
        raise ValueError("the affine has a zero-length axis")
    direction = columns / norms
    origin = tuple(lps[:, 3])
    array = data.T
    spacing = tuple(norms) if data.ndim == 3 else tuple(norms[1:])
    return array, spacing, origin, direction
