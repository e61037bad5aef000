"""Resampling volumes onto new grids with exact geometry (``medtool resample``).

Conventions
-----------
* Voxel centres: ``origin`` is the centre of voxel ``[0, 0, 0]`` (as in DICOM and ITK), and a
  voxel covers half a spacing either side of its centre. A point of the target grid is inside
  the input when its continuous input index lies in ``[-0.5, n - 0.5)`` along every axis (as
  ITK's ``IsInsideBuffer``); points outside get the pad value, points in the outer half voxel
  take the edge values.
* A new spacing keeps the physical extent (``n x spacing``) up to rounding of the voxel count,
  ``n' = round(n * spacing / spacing')``, and keeps the grid centred on the same point, so the
  origin moves by ``(spacing * (n - 1) - spacing' * (n' - 1)) / 2`` along each axis.
* ``--like REF`` takes REF's grid exactly (shape, spacing, origin, direction), so resampling
  back onto the original lands on the original voxels.

Interpolation is separable when the input and target share their direction (the usual case:
linear, nearest or cubic B-spline along each axis in turn, in float32 with torch, in chunks of
output slices so memory stays bounded) and a general affine gather otherwise (oblique grids).
Linear interpolation gives the same values as SimpleITK's ``ResampleImageFilter`` with
``sitkLinear`` on the same grid, nearest as ``sitkNearestNeighbor``, cubic as ``sitkBSpline``
(mirror boundary). Images that are made coarser are first smoothed with a Gaussian of
``sigma = (factor - 1) / 2`` input voxels along each coarsened axis (scikit-image's
anti-aliasing rule), unless ``antialias=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InputError, UsageError
from .volume import UNITS_HU, Volume

#: Interpolation orders: nearest, linear, cubic B-spline.
ORDERS = (0, 1, 3)
#: Pad value of HU images (air) and of masks.
PAD_HU = -1000.0
PAD_MASK = 0
#: Units of label volumes (the phantom's truth, lungmask's output).
UNITS_LABEL = "label"
#: Directions closer than this (per cosine) count as the same: the separable path applies.
SAME_DIRECTION_TOLERANCE = 1e-6
#: Continuous indices this close to an integer are snapped to it, so that grids that share
#: voxel centres copy values exactly instead of mixing in 1e-12 of a neighbour.
SNAP = 1e-6
#: Approximate float32 working memory of one chunk of output slices, in bytes.
CHUNK_BYTES = 96 * 2**20
#: Gaussian kernels reach this many sigmas.
TRUNCATE = 4.0
#: A Gaussian whose nearest neighbours weigh less than this (sigma below about 0.27 voxel, e.g.
#: 0.7 mm to 1 mm) leaves every value within 0.1 % of the local contrast: it is skipped.
NEGLIGIBLE_WEIGHT = 1e-3
#: Output slices per chunk of the separable path on the CPU (cache-sized pieces of work).
SEPARABLE_CHUNK = 8


@dataclass(frozen=True)
class Grid:
    """A sampling grid: shape, spacing (mm), origin (LPS mm of voxel 0's centre), direction.

    Everything in array order ``(z, y, x)``, as :class:`~medtool.volume.Volume`.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    @classmethod
    def of(cls, volume: Volume) -> "Grid":
        """The grid of a 3D ``volume``."""
        if volume.ndim != 3:
            raise InputError(f"resampling needs a 3D volume, this one is {volume.ndim}D",
                             hint="give a volume (z, y, x)")
        return cls(tuple(volume.shape), tuple(volume.spacing), tuple(volume.origin),
                   np.asarray(volume.direction, dtype=np.float64))

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from homogeneous index ``(z, y, x, 1)`` to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing)
        affine[:3, 3] = self.origin
        return affine


def target_grid(volume: Volume, *, spacing: Sequence[float] | None = None,
                shape: Sequence[int] | None = None, crop_z: int | None = None) -> Grid:
    """The grid ``resample`` puts ``volume`` on.

    Parameters
    ----------
    spacing
        New ``(z, y, x)`` spacing in mm; the extent is kept up to rounding and the grid stays
        centred. ``None`` keeps the spacing.
    shape
        Fixed in-plane size ``(rows, columns)``: the spacing of those axes becomes extent / size
        (overriding ``spacing`` in-plane), the extent is kept exactly.
    crop_z
        Keep the ``crop_z`` centre slices (slices added on both sides as padding when there are
        fewer); the slices kept are the grid's own, so nothing is interpolated along z by it.
    """
    grid = Grid.of(volume)
    n = np.asarray(grid.shape, dtype=np.float64)
    old = np.asarray(grid.spacing, dtype=np.float64)
    new = old.copy() if spacing is None else np.asarray(spacing, dtype=np.float64)
    if new.shape != (3,) or not np.all(np.isfinite(new)) or np.any(new <= 0):
        raise UsageError(f"--spacing needs three positive values (z y x mm), got {list(new)}")
    count = np.maximum(1, np.floor(n * old / new + 0.5))
    if shape is not None:
        if len(shape) != 2 or min(shape) < 1:
            raise UsageError(f"--shape needs two positive sizes (rows columns), got {list(shape)}")
        count[1:] = shape
        new[1:] = n[1:] * old[1:] / count[1:]
    shift = (old * (n - 1) - new * (count - 1)) / 2.0
    if crop_z is not None:
        if crop_z < 1:
            raise UsageError(f"--crop-z needs a positive number of slices, got {crop_z}")
        start = (int(count[0]) - crop_z) // 2
        shift[0] += start * new[0]
        count[0] = crop_z
    origin = np.asarray(grid.origin) + grid.direction @ shift
    return Grid(tuple(int(c) for c in count), tuple(float(s) for s in new),
                tuple(float(o) for o in origin), grid.direction.copy())


def centre_crop(grid: Grid, shape: Sequence[int]) -> Grid:
    """The ``shape`` centre voxels of ``grid`` on every axis (the same spacing and direction;
    an axis with fewer voxels gets padding on both sides), as ``crop_z`` does along z."""
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"a crop needs three positive sizes (z y x), got {list(shape)}")
    start = (np.asarray(grid.shape) - np.asarray(shape)) // 2
    origin = np.asarray(grid.origin) + grid.direction @ (start * np.asarray(grid.spacing))
    return Grid(tuple(int(n) for n in shape), grid.spacing, tuple(float(o) for o in origin),
                grid.direction.copy())


def z_slab(grid: Grid, start: int, stop: int) -> Grid:
    """Slices ``start:stop`` of ``grid`` (the same voxels: resampling onto it gives exactly those
    slices of resampling onto ``grid``)."""
    if not 0 <= start < stop <= grid.shape[0]:
        raise UsageError(f"slices {start}:{stop} are not inside a grid of {grid.shape[0]}")
    origin = np.asarray(grid.origin) + grid.direction[:, 0] * (start * grid.spacing[0])
    return Grid((stop - start, *grid.shape[1:]), grid.spacing, tuple(float(o) for o in origin),
                grid.direction.copy())


def is_mask(volume: Volume) -> bool:
    """Whether ``volume`` holds labels (nearest interpolation, pad 0) rather than an image.

    Labels: boolean arrays, units ``label``, and small unsigned/signed bytes that are not
    marked as HU or raw scanner values.
    """
    units = volume.meta.get("units")
    if volume.array.dtype == bool or units == UNITS_LABEL:
        return True
    return volume.array.dtype in (np.uint8, np.int8) and units not in (UNITS_HU, "raw")


def default_pad(volume: Volume, *, mask: bool) -> float:
    """Air for HU images, 0 for masks, otherwise the smallest value of the input."""
    if mask:
        return PAD_MASK
    if volume.units == UNITS_HU:
        return PAD_HU
    return float(np.min(volume.array)) if volume.array.size else 0.0


def resample(volume: Volume, *, spacing: Sequence[float] | None = None,
             like: Volume | Grid | None = None, shape: Sequence[int] | None = None,
             crop_z: int | None = None, order: int | None = None, mask: bool | None = None,
             pad: float | None = None, antialias: bool = True, device: Any = "cpu",
             threads: int | None = None) -> Volume:
    """Resample ``volume`` to a new spacing, or onto the grid of ``like``.

    Parameters
    ----------
    spacing, shape, crop_z
        Define the target grid as :func:`target_grid` does (``like`` excludes them).
    like
        A volume (or :class:`Grid`) whose grid is taken exactly.
    order
        0 nearest, 1 linear, 3 cubic B-spline; default 0 for masks, 1 for images.
    mask
        Treat the volume as labels; default :func:`is_mask`. Masks keep their dtype and are
        never smoothed.
    pad
        Value of target voxels outside the input; default :func:`default_pad`.
    antialias
        Smooth images along the axes that become coarser before sampling.
    device
        torch device (``"cpu"``, ``"cuda"``, a ``torch.device``).
    threads
        torch CPU threads (``None`` leaves torch's setting).

    Returns
    -------
    Volume
        On the target grid; meta and history copied, meta ``resampled_from`` records the input
        grid. Integer images are rounded to their dtype, float images stay float.
    """
    if like is not None:
        if spacing is not None or shape is not None or crop_z is not None:
            raise UsageError("give --like or --spacing/--shape/--crop-z, not both")
        grid = like if isinstance(like, Grid) else Grid.of(like)
    else:
        grid = target_grid(volume, spacing=spacing, shape=shape, crop_z=crop_z)
    return resample_to(volume, grid, order=order, mask=mask, pad=pad, antialias=antialias,
                       device=device, threads=threads)


def resample_to(volume: Volume, grid: Grid, *, order: int | None = None, mask: bool | None = None,
                pad: float | None = None, antialias: bool = True, device: Any = "cpu",
                threads: int | None = None) -> Volume:
    """Resample ``volume`` onto an explicit target ``grid`` (any direction); see :func:`resample`."""
    import torch

    source = Grid.of(volume)
    mask = is_mask(volume) if mask is None else mask
    order = (0 if mask else 1) if order is None else order
    if order not in ORDERS:
        raise UsageError(f"--order {order}: choose 0 (nearest), 1 (linear) or 3 (cubic)")
    if mask and order != 0:
        raise UsageError(f"--order {order} on a mask: labels are resampled with nearest (order 0)",
                         hint="drop --order or --mask")
    pad = default_pad(volume, mask=mask) if pad is None else float(pad)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    device = torch.device(device)
    array = np.asarray(volume.array)
    out_dtype = array.dtype if (mask or array.dtype.kind in "iub") else np.dtype(np.float32)
    if array.dtype.kind == "f" and not mask:
        out_dtype = array.dtype if array.dtype == np.float64 else np.dtype(np.float32)
    if array.dtype == bool:
        array = array.view(np.uint8)
    sigmas = _antialias_sigmas(source, grid) if (antialias and not mask and order > 0) else np.zeros(3)
    sigmas = np.array([s if _gaussian_kernel(s) is not None else 0.0 for s in sigmas])
    output = np.empty(grid.shape, dtype=array.dtype if mask else out_dtype)
    same = np.allclose(source.direction, grid.direction, atol=SAME_DIRECTION_TOLERANCE)
    sampler = _separable if same else _general
    sampler(array, source, grid, output, order=order, pad=pad, sigmas=sigmas, device=device)
    if volume.array.dtype == bool:
        output = output.astype(bool)
    meta = {**volume.meta, "resampled_from": {"shape": list(volume.shape),
                                              "spacing": list(volume.spacing),
                                              "order": order}}
    import copy

    return Volume(output, grid.spacing, grid.origin, grid.direction.copy(), copy.deepcopy(meta),
                  copy.deepcopy(volume.history))


# -- shared pieces -------------------------------------------------------------------------------
def _antialias_sigmas(source: Grid, grid: Grid) -> np.ndarray:
    """Gaussian sigma (input voxels) along each input axis: ``(factor - 1) / 2`` when coarser.

    The target spacing seen along input axis ``a`` is the largest target spacing projected on
    it (exactly the target spacing when the directions agree).
    """
    rotation = np.abs(source.direction.T @ grid.direction)        # input axis a x target axis b
    seen = np.max(rotation * np.asarray(grid.spacing)[None, :], axis=1)
    factor = seen / np.asarray(source.spacing)
    return np.where(factor > 1.0 + 1e-6, (factor - 1.0) / 2.0, 0.0)


def _gaussian_along(tensor, dim: int, sigma: float):
    """Gaussian smoothing of ``tensor`` along ``dim`` (edge values repeated, as mode 'nearest')."""
    import torch
    import torch.nn.functional as F

    weights = _gaussian_kernel(sigma)
    if weights is None or tensor.shape[dim] == 1:
        return tensor
    radius = len(weights) // 2
    kernel = torch.from_numpy(weights).to(tensor.dtype).to(tensor.device)
    moved = tensor.movedim(dim, -1)
    shape = moved.shape
    flat = moved.reshape(-1, 1, shape[-1])
    flat = F.pad(flat, (radius, radius), mode="replicate")
    flat = F.conv1d(flat, kernel.view(1, 1, -1))
    return flat.reshape(shape).movedim(-1, dim)


def _snap(c: np.ndarray) -> np.ndarray:
    rounded = np.floor(c + 0.5)
    return np.where(np.abs(c - rounded) < SNAP, rounded, c)


@dataclass
class _Taps:
    """1D sampling plan along one axis: ``out[i] = sum_k weights[k, i] * in[index[k, i]]``."""

    index: np.ndarray      # (taps, n_out) int64, inside [0, n_in)
    weights: np.ndarray    # (taps, n_out) float32
    valid: np.ndarray      # (n_out,) bool


def _taps(c: np.ndarray, n: int, order: int) -> _Taps:
    """Sampling plan for continuous input indices ``c`` on an axis of ``n`` voxels."""
    c = _snap(np.asarray(c, dtype=np.float64))
    valid = (c >= -0.5) & (c < n - 0.5)
    if order == 0:
        index = np.clip(np.floor(c + 0.5), 0, n - 1).astype(np.int64)[None]
        return _Taps(index, np.ones_like(index, dtype=np.float32), valid)
    base = np.floor(c)
    t = c - base
    if order == 1:
        index = np.stack([base, base + 1])
        weights = np.stack([1.0 - t, t])
        index = np.clip(index, 0, n - 1)     # the outer half voxel takes the edge value
    else:
        index = np.stack([base - 1, base, base + 1, base + 2])
        weights = np.stack([(1 - t) ** 3 / 6, (3 * t ** 3 - 6 * t ** 2 + 4) / 6,
                            (-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6, t ** 3 / 6])
        index = _mirror(index, n)
    return _Taps(index.astype(np.int64), weights.astype(np.float32), valid)


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Whole-sample mirror of indices into ``[0, n)`` (scipy's 'mirror', ITK's B-spline)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    folded = np.mod(index, period)
    return np.where(folded >= n, period - folded, folded)


def _apply_taps(data, dim: int, taps: _Taps, pad: float, *, device, floating: bool,
                offset: int = 0):
    """Interpolate ``data`` (array or tensor) along ``dim`` with ``taps`` (indices - ``offset``).

    Gathers run in NumPy on the CPU (much faster than torch's ``index_select`` along the last
    axis) and with ``index_select`` on other devices; weights are applied in float32 torch.
    """
    import torch

    def gather(index):
        index = index - offset
        if device.type == "cpu":
            picked = np.take(data.numpy() if isinstance(data, torch.Tensor) else data, index,
                             axis=dim)
            picked = torch.from_numpy(picked)
        else:
            tensor = data if isinstance(data, torch.Tensor) else torch.from_numpy(data).to(device)
            picked = torch.index_select(tensor, dim, torch.from_numpy(index).to(device))
        return picked.to(torch.float32) if floating else picked

    shape = [1] * data.ndim
    shape[dim] = -1
    picks = [gather(index) for index in taps.index]
    weights = [torch.from_numpy(w).to(picks[0].device).view(shape) for w in taps.weights]
    if len(picks) == 1:
        result = picks[0]
    elif len(picks) == 2:           # linear: exact where both ends agree (pad, edges, copies)
        result = torch.lerp(picks[0], picks[1], weights[1])
    else:
        result = picks[0] * weights[0]
        for weight, picked in zip(weights[1:], picks[1:]):
            result.addcmul_(picked, weight)
    if not taps.valid.all():
        invalid = torch.from_numpy(~taps.valid).to(result.device).view(shape)
        result = result.masked_fill(invalid, pad)
    return result


def _smoothed(taps: _Taps, sigma: float, n: int) -> _Taps:
    """``taps`` after a Gaussian of ``sigma`` voxels (edges repeated) folded into them.

    Smoothing then interpolating is one filter per output voxel, so the anti-aliasing costs
    gathers at the output size, not a pass over the input. Kernels whose neighbours weigh less
    than :data:`NEGLIGIBLE_WEIGHT` change no value measurably and are skipped.
    """
    kernel = _gaussian_kernel(sigma)
    if kernel is None:
        return taps
    radius = len(kernel) // 2
    shifts = np.arange(-radius, radius + 1)
    index = np.clip(taps.index[:, None, :] + shifts[None, :, None], 0, n - 1)
    weights = taps.weights[:, None, :] * kernel[None, :, None].astype(np.float32)
    taps_count = index.shape[0] * index.shape[1]
    return _Taps(index.reshape(taps_count, -1), weights.reshape(taps_count, -1), taps.valid)


def _gaussian_kernel(sigma: float) -> np.ndarray | None:
    """Normalised sampled Gaussian reaching :data:`TRUNCATE` sigmas, or ``None`` if negligible."""
    if sigma <= 0:
        return None
    radius = max(1, int(TRUNCATE * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    if kernel[radius + 1] < NEGLIGIBLE_WEIGHT:
        return None
    return kernel


def _to_output(values, dtype: np.dtype) -> np.ndarray:
    """float32 tensor to the output dtype: integers rounded and clipped to their range."""
    import torch

    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = torch.clamp(torch.round(values), info.min, info.max)
    return values.cpu().numpy().astype(dtype, copy=False)


def _chunk_slices(source: Grid, grid: Grid) -> int:
    plane = max(source.shape[1] * source.shape[2], grid.shape[1] * grid.shape[2])
    ratio = max(1.0, grid.spacing[0] / source.spacing[0])
    return max(1, int(CHUNK_BYTES / (4 * 3 * plane * ratio)))


# -- separable path: same direction --------------------------------------------------------------
def _separable(array, source: Grid, grid: Grid, output, *, order, pad, sigmas, device) -> None:
    """Interpolate along x, then y, then z, one chunk of output slices at a time.

    On the CPU the chunks run in a pool of threads (gathers in NumPy, arithmetic in torch,
    both release the GIL), each in cache-sized pieces; on a GPU they run in turn.
    """
    import torch

    shift = source.direction.T @ (np.asarray(grid.origin) - np.asarray(source.origin))
    if order == 3:
        array = _prefilter(array, sigmas)
        sigmas = np.zeros(3)
    taps = []
    for axis in range(3):
        c = (shift[axis] + np.arange(grid.shape[axis]) * grid.spacing[axis]) / source.spacing[axis]
        taps.append(_smoothed(_taps(c, source.shape[axis], order), sigmas[axis],
                              source.shape[axis]))
    floating = order > 0
    on_cpu = device.type == "cpu"
    step = SEPARABLE_CHUNK if on_cpu else _chunk_slices(source, grid)

    def work(start: int) -> None:
        stop = min(grid.shape[0], start + step)
        z_taps = _Taps(taps[0].index[:, start:stop], taps[0].weights[:, start:stop],
                       taps[0].valid[start:stop])
        lo, hi = int(z_taps.index.min()), int(z_taps.index.max()) + 1
        slab = np.asarray(array[lo:hi])
        slab = _apply_taps(slab, 2, taps[2], pad, device=device, floating=floating)
        slab = _apply_taps(slab, 1, taps[1], pad, device=device, floating=floating)
        slab = _apply_taps(slab, 0, z_taps, pad, device=device, floating=floating, offset=lo)
        output[start:stop] = _to_output(slab, output.dtype) if floating else slab.cpu().numpy()

    starts = range(0, grid.shape[0], step)
    threads = torch.get_num_threads()
    if not on_cpu or threads == 1 or len(starts) == 1:
        for start in starts:
            work(start)
        return
    from concurrent.futures import ThreadPoolExecutor

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, starts))
    finally:
        torch.set_num_threads(threads)


def _prefilter(array: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Anti-aliasing then cubic B-spline coefficients of the whole volume (float32)."""
    from scipy import ndimage

    data = np.asarray(array, dtype=np.float32)
    if np.any(sigmas > 0):
        data = ndimage.gaussian_filter(data, sigmas, mode="nearest", truncate=TRUNCATE)
    return ndimage.spline_filter(data, order=3, mode="mirror", output=np.float32)


# -- general path: any directions ----------------------------------------------------------------
def _general(array, source: Grid, grid: Grid, output, *, order, pad, sigmas, device) -> None:
    import torch

    to_index = np.linalg.inv(source.affine) @ grid.affine        # target index -> input index
    if order == 3:
        array = _prefilter(array, sigmas)
        sigmas = np.zeros(3)
    radius = [len(k) // 2 if (k := _gaussian_kernel(s)) is not None else 0 for s in sigmas]
    n = np.asarray(source.shape)
    step = _chunk_slices(source, grid)
    ys, xs = np.meshgrid(np.arange(grid.shape[1]), np.arange(grid.shape[2]), indexing="ij")
    for start in range(0, grid.shape[0], step):
        stop = min(grid.shape[0], start + step)
        zs = np.arange(start, stop, dtype=np.float64)[:, None, None]
        index = [to_index[a, 0] * zs + to_index[a, 1] * ys + to_index[a, 2] * xs + to_index[a, 3]
                 for a in range(3)]
        c = np.stack([_snap(i) for i in index])                   # (3, cz, Y, X)
        valid = np.all((c >= -0.5) & (c < n[:, None, None, None] - 0.5), axis=0)
        chunk = np.full(valid.shape, pad, dtype=np.float32 if order else array.dtype)
        if valid.any():
            cv = c[:, valid]
            span = 2 if order == 3 else 1
            lo = np.clip(np.floor(cv.min(axis=1)).astype(int) - span - np.asarray(radius), 0, n - 1)
            hi = np.clip(np.floor(cv.max(axis=1)).astype(int) + span + 1 + np.asarray(radius), 1, n)
            block = np.asarray(array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
            local = cv - lo[:, None]
            chunk[valid] = _sample_points(block, local, order=order, sigmas=sigmas,
                                          edges=(lo, hi, n), device=device)
        output[start:stop] = _to_output(torch.from_numpy(chunk), output.dtype) if order else chunk


def _sample_points(block: np.ndarray, c: np.ndarray, *, order: int, sigmas, edges,
                   device) -> np.ndarray:
    """Values of ``block`` at continuous indices ``c`` (3, N), clamped as ITK does."""
    import torch

    shape = np.asarray(block.shape)
    if order == 0:
        index = np.clip(np.floor(c + 0.5).astype(np.int64), 0, shape[:, None] - 1)
        return block[index[0], index[1], index[2]]
    if order == 3:
        from scipy import ndimage

        return ndimage.map_coordinates(block, c, order=3, mode="mirror", prefilter=False)
    data = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(device)
    for axis in range(3):
        data = _gaussian_along(data, axis, float(sigmas[axis]))
    flat = data.reshape(-1)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], device=device)
    base = np.floor(c)
    t = torch.from_numpy((c - base).astype(np.float32)).to(device)
    base = torch.from_numpy(base.astype(np.int64)).to(device)
    top = torch.from_numpy(shape - 1).to(device)[:, None]
    lower = torch.clamp(base, min=0)
    lower = torch.minimum(lower, top)
    upper = torch.minimum(torch.clamp(base + 1, min=0), top)
    # trilinear as three nested lerps (x, then y, then z), each exact where its ends agree
    corners = {}
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                iz, iy, ix = (upper[0] if dz else lower[0], upper[1] if dy else lower[1],
                              upper[2] if dx else lower[2])
                corners[dz, dy, dx] = flat[iz * strides[0] + iy * strides[1] + ix]
    lerp = lambda a, b, w: a + w * (b - a)  # noqa: E731
    plane = [[lerp(corners[dz, dy, 0], corners[dz, dy, 1], t[2]) for dy in (0, 1)] for dz in (0, 1)]
    line = [lerp(plane[dz][0], plane[dz][1], t[1]) for dz in (0, 1)]
    result = lerp(line[0], line[1], t[0])
    return result.cpu().numpy()


@dataclass
class Resampler:
    """``medtool resample``'s options as a picklable transform for :func:`~medtool.ingest.map_volumes`.

    ``like`` is a path, read once per process.
    """

    spacing: Sequence[float] | None = None
    like: Any = None
    shape: Sequence[int] | None = None
    crop_z: int | None = None
    order: int | None = None
    mask: bool | None = None
    pad: float | None = None
    antialias: bool = True
    device: str = "cpu"
    threads: int | None = None

    def check(self) -> None:
        """Raise :class:`UsageError` for options that cannot go together (before any file)."""
        if self.like is not None and any(v is not None for v in (self.spacing, self.shape, self.crop_z)):
            raise UsageError("give --like or --spacing/--shape/--crop-z, not both")
        if self.order is not None and self.order not in ORDERS:
            raise UsageError(f"--order {self.order}: choose 0 (nearest), 1 (linear) or 3 (cubic)")
        if self.like is not None:
            self._grid()

    def _grid(self) -> Grid:
        if not hasattr(self, "_like_grid"):
            from .formats import load_volume

            reference = load_volume(self.like, mmap=True)
            try:
                self._like_grid = Grid.of(reference)
            except InputError as exc:
                exc.path = str(self.like)
                raise UsageError(f"--like {self.like}: {exc.what}") from None
        return self._like_grid

    def __call__(self, volume: Volume) -> Volume:
        if volume.meta.get("geometry") == "assumed":
            # an array without geometry sits at 1 mm from the origin: resampling it onto a
            # patient's grid would move it off its anatomy (and mostly out of the grid)
            raise InputError("the file has no geometry (1 mm spacing at the origin was assumed), "
                             "so resampling would move it off its image",
                             hint="give it its image's geometry first: medtool attach FILE --like IMAGE OUT")
        like = self._grid() if self.like is not None else None
        return resample(volume, spacing=self.spacing, like=like, shape=self.shape,
                        crop_z=self.crop_z, order=self.order, mask=self.mask, pad=self.pad,
                        antialias=self.antialias, device=self.device, threads=self.threads)
