"""Lung segmentation of chest CT in Hounsfield units (``medtool lungmask``).

The method works in 3D, coarse to fine:

1. A coarse copy (block means, about :data:`COARSE_MM` voxels) carries the topology: the body
   is the largest 3D component of tissue after a 2D opening (the thin scanner bed falls
   away), its inside is the body with its holes filled per slice (or, in slices where the body
   is cut by the field of view, its convex hull), and lung candidates are air-like voxels
   (below ``threshold``) inside it.
2. The trachea and main bronchi are tracked from the top: the roundish air region near the
   body's midline, followed down slice by slice while its cross-sections stay airway-sized,
   and removed.
3. The remaining air components of lung size are the lungs. A single component that spans
   both sides of the body (lungs touching at the anterior junction) is split by erosion into
   two cores that then grow back over it; if erosion cannot split it, the body's midline plane
   does. Labels come from patient coordinates: 1 = right lung (smaller LPS x), 2 = left lung.
4. With ``fill``, holes in each lung are filled per slice (vessels, airways, nodules inside
   the lung) and a small closing takes in structures that touch the lung surface.
5. Back at full resolution, the coarse lungs' interiors are kept and their one-voxel boundary
   shell is decided voxel by voxel by the threshold, so surfaces are exact to the voxel; with
   ``fill``, holes left in that shell are filled per slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .volume import UNITS_HU, Volume

#: Lung / air threshold in HU (the seeds' value).
DEFAULT_THRESHOLD = -400.0
#: Tissue of the body is above this (fat is about -100 HU, lung below -700).
BODY_HU = -500.0
#: Size of the coarse voxels the topology is worked out on (mm).
COARSE_MM = 2.0
#: Exact value medtool hu gives out-of-field padding; a coarse block of it is outside the FOV.
PADDING_HU = -1000.0
#: Cross-sections of trachea and main bronchi (mm^2): bigger than MIN, never bigger than MAX.
AIRWAY_MIN_MM2 = 20.0
AIRWAY_MAX_MM2 = 900.0
#: The trachea starts within this distance (mm) of the body's midline, in the top slices.
AIRWAY_MIDLINE_MM = 35.0
#: How far down (mm) the trachea is searched for before giving up (scan starts below it).
AIRWAY_SEARCH_MM = 40.0
#: A lung has at least this volume (ml) and this fraction of the largest air component.
MIN_LUNG_ML = 15.0
MIN_LUNG_FRACTION = 0.1
#: A component with at least this fraction of its volume on each side of the midline holds
#: both lungs.
BOTH_SIDES_FRACTION = 0.2
#: At most this many erosions (coarse voxels, 2D) are tried to split joined lungs.
MAX_SPLIT_EROSIONS = 6
#: Radius (mm) of the per-slice closing that takes in juxta-pleural nodules and vessels.
CLOSING_MM = 8.0
#: Holes up to this area (mm^2, about a 40 mm disk) are filled: vessels, airways, nodules;
#: bigger ones (the diaphragm's dome under the lung base) are not lung.
MAX_HOLE_MM2 = 1200.0
#: Labels.
RIGHT_LUNG, LEFT_LUNG = 1, 2
LABELS = {str(RIGHT_LUNG): "right lung", str(LEFT_LUNG): "left lung"}
#: Methods of ``--method``.
METHODS = ("threshold", "model")

#: Pixel centres this close (pixels) outside a hull facet still count as inside; facets whose
#: normal has an x part below ``_HULL_FLAT`` are horizontal.
_HULL_TOLERANCE, _HULL_FLAT = 1e-6, 1e-12

_SLICE_2D = np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]],
                      [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                      [[0, 0, 0], [0, 0, 0], [0, 0, 0]]], dtype=bool)


def check_hu(volume: Volume) -> None:
    """Raise :class:`InputError` unless ``volume`` is a 3D CT in Hounsfield units."""
    units = volume.meta.get("units")
    if volume.ndim != 3:
        raise InputError(f"lungmask needs a 3D CT volume, this one is {volume.ndim}D",
                         hint="give a CT volume")
    if units == "raw":
        raise InputError("the volume holds raw scanner values, not Hounsfield units",
                         hint="convert it first: medtool hu INPUT OUT")
    if units not in (None, UNITS_HU):
        raise InputError(f"the volume's units are {units!r}, not HU",
                         hint="give a HU volume from medtool hu (not windowed/normalised or a mask)")
    if volume.array.dtype == bool or volume.array.dtype.kind not in "iuf":
        raise InputError(f"values of type {volume.array.dtype} are not CT numbers",
                         hint="give a HU volume from medtool hu")
    if units is None and float(np.min(volume.array)) >= 0:
        raise InputError("all values are >= 0, so these are not Hounsfield units",
                         hint="convert it first: medtool hu INPUT OUT")


def lung_mask(volume: Volume, *, threshold: float = DEFAULT_THRESHOLD, fill: bool = True,
              binary: bool = False) -> Volume:
    """Segment the lungs of a chest CT in HU.

    Parameters
    ----------
    volume
        3D CT in Hounsfield units (``medtool hu`` output).
    threshold
        Voxels below this HU are air-like (lung parenchyma is about -850).
    fill
        Fill vessels, airways and nodules inside the lungs (off: raw air regions).
    binary
        Write 0/1 instead of 1 = right, 2 = left.

    Returns
    -------
    Volume
        uint8 labels on the input's grid, units ``label``.

    Raises
    ------
    InputError
        Not HU, or no lungs found.
    """
    from scipy import ndimage

    check_hu(volume)
    array = volume.array
    factors = _factors(volume.spacing)
    coarse = _block_mean(array, factors)
    cspacing = np.asarray(volume.spacing) * factors
    pixel_mm2 = cspacing[1] * cspacing[2]

    body = _body(coarse, cspacing)
    if not body.any():
        raise InputError("no body found (no tissue above -500 HU)",
                         hint="check that the volume is a CT in HU")
    inside = _inside(body, coarse)
    candidates = inside & (coarse < threshold)
    airway = _airway(candidates, body, cspacing)
    candidates &= ~_dilate(airway, _SLICE_2D)

    labels, count = ndimage.label(candidates)
    if count == 0:
        raise InputError("no air-filled lung found inside the body",
                         hint="check that the volume covers the chest (HU input)")
    sizes = np.bincount(labels.ravel())[1:] * float(np.prod(cspacing)) / 1000.0
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:2]
            if sizes[i] >= max(MIN_LUNG_ML, MIN_LUNG_FRACTION * sizes.max())]
    if not keep:
        raise InputError(f"the largest air region inside the body is {sizes.max():.0f} ml, "
                         "too small for a lung", hint="check the field of view covers the chest")
    centre_x = _body_centre_x(body, volume, factors)
    lungs = _assign(labels, keep, volume, factors, centre_x)
    if fill:
        lungs = _fill(lungs, cspacing)
    mask = _refine(lungs, array, factors, spacing=volume.spacing, threshold=threshold, fill=fill)
    if binary:
        mask = (mask > 0).astype(np.uint8)
    found = [name for value, name in ((RIGHT_LUNG, "right"), (LEFT_LUNG, "left"))
             if binary or np.any(mask == value)]
    meta = {"units": "label", "modality": "SEG",
            "labels": {"1": "lung"} if binary else LABELS,
            "lungmask": {"method": "threshold", "threshold": threshold, "fill": fill,
                         "lungs": found}}
    for key in ("case_id", "source_series"):
        if key in volume.meta:
            meta[key] = volume.meta[key]
    result = volume.with_array(mask)
    result.meta = meta
    return result


def apply_mask(volume: Volume, mask: Volume, value: float) -> Volume:
    """``volume`` with every voxel outside ``mask`` set to ``value`` (the seeds' CNN input)."""
    array = np.asarray(volume.array)
    info = np.iinfo(array.dtype) if array.dtype.kind in "iu" else None
    if info is not None and not info.min <= value <= info.max:
        raise UsageError(f"--apply {value:g} does not fit the volume's {array.dtype} values")
    out = np.where(mask.array > 0, array, np.asarray(value, dtype=array.dtype))
    return volume.with_array(out.astype(array.dtype, copy=False), masked_outside_lungs=value)


# -- coarse grid ---------------------------------------------------------------------------------
def _factors(spacing) -> np.ndarray:
    return np.maximum(1, np.floor(COARSE_MM / np.asarray(spacing) + 0.5)).astype(int)


def _block_mean(array: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mean of each ``factors``-sized block (edge blocks padded with edge values), float32."""
    fz, fy, fx = (int(f) for f in factors)
    nz, ny, nx = array.shape
    cz, cy, cx = -(-nz // fz), -(-ny // fy), -(-nx // fx)
    out = np.empty((cz, cy, cx), dtype=np.float32)
    rows = max(1, 64 // fz)
    for start in range(0, cz, rows):
        stop = min(cz, start + rows)
        block = np.asarray(array[start * fz: stop * fz], dtype=np.float32)
        pad = ((0, (stop - start) * fz - block.shape[0]), (0, cy * fy - ny), (0, cx * fx - nx))
        if any(p[1] for p in pad):
            block = np.pad(block, pad, mode="edge")
        out[start:stop] = block.reshape(stop - start, fz, cy, fy, cx, fx).mean(axis=(1, 3, 5))
    return out


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    disk = (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius
    return disk[None]


def _body(coarse: np.ndarray, cspacing) -> np.ndarray:
    """The largest 3D component of tissue after a 2D opening (bed and cables fall away)."""
    from scipy import ndimage

    tissue = coarse > BODY_HU
    radius = max(1, int(round(3.0 / cspacing[1])))
    opened = _dilate(_erode(tissue, _disk(radius)), _disk(radius))
    labels, count = ndimage.label(opened)
    if count == 0:
        return opened
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == np.argmax(sizes)


def _inside(body: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Body with its holes filled per slice; convex hull where the field of view cuts it."""
    from scipy import ndimage

    inside = _fill_slices(body)
    padding = coarse == PADDING_HU
    if padding.any():
        touching = _dilate(body, _SLICE_2D) & padding
        cut = np.flatnonzero(touching.reshape(len(body), -1).sum(axis=1) >= 3)
        for k in cut:
            inside[k] |= _convex_hull(body[k]) & ~padding[k]
    return inside


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """Pixels inside the convex hull of the pixel centres of a 2D ``mask``."""
    from scipy.spatial import ConvexHull, QhullError

    # the hull of each row's first and last pixel is the hull of the whole mask
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return mask.copy()
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    points = np.concatenate([np.stack([rows, first], axis=1), np.stack([rows, last], axis=1)])
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(first.min()), int(last.max()) + 1))
    hull = np.zeros_like(mask)
    try:
        equations = ConvexHull(points).equations            # a . p + c <= 0 inside
    except (QhullError, ValueError):                        # too few or collinear points
        return mask.copy()
    # a convex region meets each row in one interval: intersect the half-planes row by row
    ys = np.arange(box[0].start, box[0].stop, dtype=float)[:, None]
    xs = np.arange(box[1].start, box[1].stop, dtype=float)[None, :]
    a, b, c = equations[:, 0], equations[:, 1], equations[:, 2] - _HULL_TOLERANCE
    bound = (-c[None, :] - a[None, :] * ys)                 # b * x <= bound, one per facet
    upper, lower = b > _HULL_FLAT, b < -_HULL_FLAT
    flat = ~(upper | lower)
    hi = np.min(bound[:, upper] / b[upper], axis=1, initial=np.inf)[:, None]
    lo = np.max(bound[:, lower] / b[lower], axis=1, initial=-np.inf)[:, None]
    rows_ok = np.all(bound[:, flat] >= 0, axis=1)[:, None]
    hull[box] = (xs >= lo) & (xs <= hi) & rows_ok
    return hull


def _fill_slices(mask: np.ndarray, max_area: float | None = None) -> np.ndarray:
    """``mask`` with its holes filled in every slice (one labelling call for all slices).

    ``max_area`` (pixels) leaves bigger holes open: the dome of the diaphragm seen through the
    lung base is a hole in the slices that cut it, but it is not lung.
    """
    from scipy import ndimage

    background, count = ndimage.label(~mask, _SLICE_2D)
    keep = np.ones(count + 1, dtype=bool)             # background components that stay open
    keep[0] = False
    if max_area is None:
        keep[:] = False
    else:
        keep[1:] = np.bincount(background.ravel(), minlength=count + 1)[1:] > max_area
    for face in (background[:, 0], background[:, -1], background[:, :, 0], background[:, :, -1]):
        keep[np.unique(face)] = True
    keep[0] = False
    return ~keep[background]


def _airway(candidates: np.ndarray, body: np.ndarray, cspacing) -> np.ndarray:
    """Trachea and main bronchi: tracked from the top while cross-sections stay airway-sized."""
    from scipy import ndimage

    pixel = cspacing[1] * cspacing[2]
    airway = np.zeros_like(candidates)
    nz = len(candidates)
    top = next((k for k in range(nz - 1, -1, -1) if body[k].any()), None)
    if top is None:
        return airway
    # find the trachea in the top slices: a roundish air region near the body's midline
    search = max(1, int(round(AIRWAY_SEARCH_MM / cspacing[0])))
    start, previous = None, None
    for k in range(top, max(-1, top - search), -1):
        cols = np.flatnonzero(body[k].any(axis=0))
        if not len(cols):
            continue
        mid = (cols[0] + cols[-1]) / 2.0
        labels, count = ndimage.label(candidates[k])
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        areas = ndimage.sum_labels(np.ones_like(labels), labels, index) * pixel
        centres = np.array(ndimage.center_of_mass(candidates[k], labels, index))
        ok = (areas >= AIRWAY_MIN_MM2) & (areas <= AIRWAY_MAX_MM2) & \
             (np.abs(centres[:, 1] - mid) * cspacing[2] <= AIRWAY_MIDLINE_MM)
        if ok.any():
            best = index[ok][np.argmin(np.abs(centres[ok, 1] - mid))]
            start, previous = k, labels == best
            break
    if start is None:
        return airway
    airway[start] = previous
    for k in range(start - 1, -1, -1):
        labels, count = ndimage.label(candidates[k])
        grown = ndimage.binary_dilation(previous, _disk(1)[0])
        touched = np.unique(labels[grown & (labels > 0)])
        if not len(touched):
            break
        areas = ndimage.sum_labels(np.ones_like(labels), labels, touched) * pixel
        small = touched[areas <= AIRWAY_MAX_MM2]
        if not len(small):
            break
        previous = np.isin(labels, small)
        airway[k] = previous
    return airway


def _body_centre_x(body: np.ndarray, volume: Volume, factors) -> float:
    """LPS x (mm) of the body's centre of mass."""
    centre = np.array([np.mean(i) for i in np.nonzero(body)]) * factors + (factors - 1) / 2.0
    return float(volume.world(centre)[0])


def _world_x(volume: Volume, factors, coarse_index: np.ndarray) -> np.ndarray:
    """LPS x (mm) of coarse voxel centres ``coarse_index`` (N, 3)."""
    step = (volume.direction[0] * np.asarray(volume.spacing) * factors).astype(np.float32)
    offset = volume.origin[0] + float(volume.direction[0] @ (np.asarray(volume.spacing)
                                                             * (factors - 1) / 2.0))
    return coarse_index.astype(np.float32) @ step + np.float32(offset)


def _assign(labels: np.ndarray, keep: list[int], volume: Volume, factors,
            centre_x: float) -> np.ndarray:
    """Coarse uint8 lungs: 1 right, 2 left, from patient x; joined lungs split first."""
    lungs = np.zeros(labels.shape, dtype=np.uint8)
    parts = [labels == k for k in keep]
    if len(parts) == 1:
        points = np.argwhere(parts[0])
        x = _world_x(volume, factors, points)
        left = np.mean(x > centre_x)
        if min(left, 1 - left) >= BOTH_SIDES_FRACTION:
            parts = _split(parts[0], volume, factors, centre_x)
    sides = []
    for part in parts:
        x = float(np.mean(_world_x(volume, factors, np.argwhere(part))))
        sides.append(x)
    if len(parts) == 2:
        order = np.argsort(sides)          # smaller LPS x is the patient's right
        lungs[parts[order[0]]] = RIGHT_LUNG
        lungs[parts[order[1]]] = LEFT_LUNG
    else:
        lungs[parts[0]] = RIGHT_LUNG if sides[0] < centre_x else LEFT_LUNG
    return lungs


def _split(joined: np.ndarray, volume: Volume, factors, centre_x: float) -> list[np.ndarray]:
    """Two lungs joined in one component: erode until two cores, grow them back."""
    from scipy import ndimage

    box = _box(joined, margin=1)
    parts = _split_cores(joined[box], volume, factors)
    if parts is not None:
        out = []
        for part in parts:
            whole = np.zeros_like(joined)
            whole[box] = part
            out.append(whole)
        return out
    # no erosion separates them: cut along the body's midline plane
    points = np.argwhere(joined)
    left = _world_x(volume, factors, points) > centre_x
    a, b = np.zeros_like(joined), np.zeros_like(joined)
    a[tuple(points[~left].T)] = True
    b[tuple(points[left].T)] = True
    return [a, b]


def _split_cores(joined: np.ndarray, volume: Volume, factors) -> list[np.ndarray] | None:
    from scipy import ndimage

    core = joined
    for _ in range(MAX_SPLIT_EROSIONS):
        core = _erode(core, _SLICE_2D)
        labels, count = ndimage.label(core)
        if count < 2:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        first, second = np.argsort(sizes)[::-1][:2]
        if sizes[second] < BOTH_SIDES_FRACTION * sizes[first]:
            continue
        seeds = np.zeros(joined.shape, dtype=np.uint8)
        seeds[labels == first + 1] = 1
        seeds[labels == second + 1] = 2
        _, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True,
                                                    sampling=np.asarray(volume.spacing) * factors)
        grown = seeds[tuple(nearest)]
        return [joined & (grown == 1), joined & (grown == 2)]
    return None


def _fill(lungs: np.ndarray, cspacing) -> np.ndarray:
    """Per lung: holes filled per slice, then a small per-slice closing (nodules, vessels)."""
    from scipy import ndimage

    radius = max(1, int(round(CLOSING_MM / cspacing[1])))
    out = np.zeros_like(lungs)
    for value in (RIGHT_LUNG, LEFT_LUNG):
        part = lungs == value
        if not part.any():
            continue
        box = _box(part, margin=radius + 1)
        sub = part[box]
        closed = _erode(_dilate(sub, _disk(radius)), _disk(radius)) | sub
        filled = _fill_slices(closed, MAX_HOLE_MM2 / (cspacing[1] * cspacing[2]))
        target = out[box]
        target[filled & (target == 0)] = value
    return out


def _box(mask: np.ndarray, *, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` (clipped to the array)."""
    box = []
    for axis, n in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        index = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(0, int(index[0]) - margin), min(n, int(index[-1]) + margin + 1)))
    return tuple(box)


# -- binary morphology by shifted views ------------------------------------------------------------
# scipy.ndimage's binary morphology visits the footprint voxel by voxel; for the small symmetric
# footprints used here, one whole-array AND / OR per footprint offset is several times faster
# and gives the same result (outside the array counts as background, as scipy's border_value=0).
def _offsets(footprint: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    centre = np.array(footprint.shape) // 2
    return centre, [tuple(o) for o in np.argwhere(footprint) - centre]


def _shifts(mask: np.ndarray, footprint: np.ndarray):
    """Views of ``mask`` padded with background, shifted by each offset of ``footprint``."""
    centre, offsets = _offsets(footprint)
    padded = np.pad(mask, [(int(c), int(c)) for c in centre])
    for offset in offsets:
        yield padded[tuple(slice(int(c + o), int(c + o) + n)
                           for c, o, n in zip(centre, offset, mask.shape))]


def _erode(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    out = np.ones(mask.shape, dtype=bool)
    for view in _shifts(mask, footprint):
        out &= view
    return out


def _dilate(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=bool)
    for view in _shifts(mask, footprint):
        out |= view
    return out


def _refine(lungs: np.ndarray, array: np.ndarray, factors, *, spacing, threshold: float,
            fill: bool) -> np.ndarray:
    """Full-resolution labels: coarse interiors kept, boundary shell decided by the threshold."""
    from scipy import ndimage

    out = np.zeros(array.shape, dtype=np.uint8)
    pixel_mm2 = spacing[1] * spacing[2]
    for value in (RIGHT_LUNG, LEFT_LUNG):
        part = lungs == value
        if not part.any():
            continue
        box = _box(part, margin=2)
        sub = part[box]
        inner = _erode(sub, _SLICE_2D | _SLICE_2D.transpose(1, 0, 2))
        outer = _dilate(sub, _SLICE_2D | _SLICE_2D.transpose(1, 0, 2))
        full = tuple(slice(s.start * f, min(n, s.stop * f))
                     for s, f, n in zip(box, factors, array.shape))
        index = [np.arange(s.stop - s.start) // f for s, f in zip(full, factors)]
        grid = np.ix_(*index)
        values = np.asarray(array[full])
        air = values < threshold
        lung = (outer[grid] & air) | (inner[grid] if fill else (inner[grid] & air))
        if fill:
            lung = _fill_slices(lung, MAX_HOLE_MM2 / pixel_mm2)
        target = out[full]
        target[lung & (target == 0)] = value
    return out


def describe(mask: Volume) -> dict[str, Any]:
    """Volumes (ml) of each lung in ``mask``."""
    voxel_ml = float(np.prod(mask.spacing)) / 1000.0
    counts = np.bincount(np.asarray(mask.array).ravel(), minlength=3)
    return {"right_ml": round(float(counts[RIGHT_LUNG]) * voxel_ml, 1),
            "left_ml": round(float(counts[LEFT_LUNG]) * voxel_ml, 1)}


@dataclass
class LungMasker:
    """``medtool lungmask``'s options as a picklable transform for
    :func:`~medtool.ingest.map_volumes`: the mask, and with ``apply`` the masked image as the
    extra output ``masked``."""

    threshold: float = DEFAULT_THRESHOLD
    fill: bool = True
    binary: bool = False
    apply: float | None = None

    @property
    def extra(self) -> tuple[str, ...]:
        return ("masked",) if self.apply is not None else ()

    def __call__(self, volume: Volume):
        mask = lung_mask(volume, threshold=self.threshold, fill=self.fill, binary=self.binary)
        if self.apply is None:
            return mask
        return {"": mask, "masked": apply_mask(volume, mask, self.apply)}


# -- --method model ------------------------------------------------------------------------------
def lung_labels(classes: list[str]) -> np.ndarray | None:
    """Output label of each of a segmentation checkpoint's classes (background first) for
    ``lungmask --method model``: when the class names say which lung is which (one name with
    ``right``, one with ``left``), those become :data:`RIGHT_LUNG` and :data:`LEFT_LUNG` and
    every other class (a tumour, say) 0; otherwise ``None``: the model's labels are kept
    (``medtool train --mask-suffix _lungs`` on lungmask-style masks already gives 1 right,
    2 left)."""
    names = [name.lower() for name in classes]
    right = [i for i, n in enumerate(names) if "right" in n]
    left = [i for i, n in enumerate(names) if "left" in n]
    if len(right) != 1 or len(left) != 1 or right == left:
        return None
    table = np.zeros(len(classes), dtype=np.uint8)
    table[right[0]], table[left[0]] = RIGHT_LUNG, LEFT_LUNG
    return table


@dataclass
class ModelLungMasker:
    """``medtool lungmask --method model``: a segmentation checkpoint from ``medtool train``
    run through :func:`medtool.segmentation.predict_volume` (its recipe's resampling and
    normalisation, sliding window with overlap, the largest component per label), labels
    mapped by :func:`lung_labels`. Picklable; the model is loaded once per process."""

    checkpoint: str
    binary: bool = False
    apply: float | None = None
    device: str = "auto"
    _loaded: Any = field(default=None, repr=False, compare=False)

    @property
    def extra(self) -> tuple[str, ...]:
        return ("masked",) if self.apply is not None else ()

    def load(self):
        """The checkpoint's model and recipe (read once).

        Raises
        ------
        InputError
            Not a checkpoint of ``medtool train --task segment``.
        """
        if self._loaded is None:
            from .device import resolve_device
            from .train import build_model, load_checkpoint

            state = load_checkpoint(self.checkpoint)
            if state.get("task") != "segment":
                raise InputError(f"this is a {state.get('task')} checkpoint, not a segmentation model",
                                 path=self.checkpoint, hint="train one with medtool train --task segment")
            device = resolve_device(self.device)
            self._loaded = (build_model(state).to(device), state["recipe"], device)
        return self._loaded

    def __getstate__(self):
        return {**self.__dict__, "_loaded": None}       # workers load their own copy

    def __call__(self, volume: Volume):
        from .segmentation import PredictSettings, predict_volume

        model, recipe, device = self.load()
        if recipe["normalize"]["mode"] == "ct":
            check_hu(volume)
        elif volume.ndim != 3:
            raise InputError(f"lungmask needs a 3D CT volume, this one is {volume.ndim}D", hint="give a CT volume")
        labels, _ = predict_volume(model, volume, recipe, PredictSettings(keep_largest=1), device=device)
        table = lung_labels(recipe["classes"])
        array = np.asarray(labels.array)
        array = table[array] if table is not None else array
        if self.binary:
            array = (array > 0).astype(np.uint8)
        names = {"1": "lung"} if self.binary else dict(LABELS) if table is not None else {
            str(i): n for i, n in enumerate(recipe["classes"]) if i}
        meta = {"units": "label", "modality": "SEG", "labels": names,
                "lungmask": {"method": "model", "checkpoint": str(self.checkpoint), "classes": recipe["classes"]}}
        for key in ("case_id", "source_series"):
            if key in volume.meta:
                meta[key] = volume.meta[key]
        mask = volume.with_array(array.astype(np.uint8))
        mask.meta = meta
        if self.apply is None:
            return mask
        return {"": mask, "masked": apply_mask(volume, mask, self.apply)}
