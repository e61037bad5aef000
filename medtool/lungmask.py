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
3. Lungs are chosen by anatomy, not by size alone. The air components of lung size (at
   least :data:`MIN_LUNG_ML`) that are pure gas (median HU below :data:`GAS_HU`: gas in the
   stomach, small bowel and colon, or a large airway) are not lung; of the rest, the largest
   is a lung, and a second one is the other lung if it has at least
   :data:`MIN_LUNG_FRACTION` of its volume and lies beside it along z (gas under the
   diaphragm lies below the lungs). None left: "no lung in this scan" (an abdomen-only scan)
   is the volume's one-line error. One lung (pneumonectomy, collapse), lung bases or apices
   only, emphysema (still lung parenchyma, with vessels) and effusions (fluid, not air) need
   nothing else. A single component that spans both sides of the body (lungs touching at the
   anterior junction) is split by erosion into two cores that then grow back over it; if
   erosion cannot split it, the body's midline plane does. Labels come from patient
   coordinates: 1 = right lung (smaller LPS x), 2 = left lung.
4. With ``fill``, holes in each lung are filled per slice (vessels, airways, nodules inside
   the lung), a small closing takes in structures that touch the lung surface, and pockets
   of tissue the lung wraps around are lung (:func:`_pockets`): large tumours inside the
   lung and juxtapleural tumours on the chest wall, not the heart, the mediastinum or the
   dome of the diaphragm. Tissue that touches the mediastinum as well stays out.
5. Back at full resolution, the coarse lungs' interiors (and pockets) are kept and their
   one-voxel boundary shell is decided voxel by voxel by the threshold, so surfaces are exact
   to the voxel; the rim of the air that is not lung is never lung; with ``fill``, holes left
   in that shell are filled per slice.

What it cannot do: lung that holds no air (consolidation, atelectasis, a collapsed lung) is
not lung to it; tissue that touches the lung and the mediastinum (a central or mediastinal
tumour, the hilum) or sits on the diaphragm stays out; gas that touches a lung at the coarse
grid (a diaphragmatic hernia, colon between liver and diaphragm with no tissue between) is
taken with that lung; a lung so emphysematous that its median HU is below :data:`GAS_HU`
(bullae filling it) is taken for gas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .hounsfield import guess_units
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
#: Lung parenchyma is not pure gas: an air region whose median (coarse-voxel) HU is below
#: this is gas in the bowel or stomach (or outside air), not lung. Aerated lung is about
#: -850 HU and emphysematous lung -900 to -950 even with bullae; gas is -1000.
GAS_HU = -960.0
#: Gas that touches a lung on the coarse grid is cut off after at most this many erosions
#: (coarse voxels) when it leaves a gas core of at least this volume (ml) below the lung.
GAS_SPLIT_EROSIONS = 2
MIN_GAS_CORE_ML = 5.0
#: The second lung lies beside the first: their extents along z overlap by at least this
#: fraction of the shorter one (gas under the diaphragm, below a lung, does not).
MIN_Z_OVERLAP = 0.5
#: What lungmask says when a scan holds no lung (an abdomen-only scan).
NO_LUNG = "no lung in this scan"
NO_LUNG_HINT = "lungmask needs a CT that holds lung (an abdomen-only scan has none)"
#: A component with at least this fraction of its volume on each side of the midline holds
#: both lungs.
BOTH_SIDES_FRACTION = 0.2
#: At most this many erosions (coarse voxels, 2D) are tried to split joined lungs.
MAX_SPLIT_EROSIONS = 6
#: Radius (mm) of the per-slice closing that takes in juxta-pleural nodules and vessels.
CLOSING_MM = 8.0
#: Pockets of tissue the lung wraps around (:func:`_pockets`): at least this area (mm^2),
#: below this HU (bone is not lung), lung within this distance (mm) below over this fraction
#: of the pocket, a mouth facing the nearest skin (cosine of the angle between the lung's and
#: the body's outward normals at least this).
POCKET_MIN_MM2 = 20.0
POCKET_MAX_HU = 200.0
POCKET_REACH_MM = 80.0
POCKET_CAPPED = 0.5
POCKET_FACING = 0.7
#: A pocket that does not face the skin is still lung when it is tumour-sized (mm^2) and the
#: lung wraps around most of it: its mouth at most this fraction of its outline.
POCKET_MIN_TUMOUR_MM2 = 300.0
POCKET_MAX_TUMOUR_MM2 = 2500.0
POCKET_NARROW_MOUTH = 0.45
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
    if units is None:
        guessed, why = guess_units(volume)
        if guessed != UNITS_HU:
            raise InputError(f"{why}: not Hounsfield units",
                             hint="convert it first: medtool hu INPUT OUT (--rescale for other tools' files)")


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
        Not HU, no body, or no lung in the scan (:data:`NO_LUNG`: an abdomen-only scan).
    """
    from scipy import ndimage

    check_hu(volume)
    if volume.direction[2, 0] < 0:        # slices run toward the feet: work head-up, flip back
        upright = lung_mask(_flip_slices(volume), threshold=threshold, fill=fill, binary=binary)
        result = volume.with_array(np.ascontiguousarray(upright.array[::-1]))
        result.meta = upright.meta
        return result
    array = volume.array
    factors = _factors(volume.spacing)
    coarse = _block_mean(array, factors)
    cspacing = np.asarray(volume.spacing) * factors

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
        raise InputError(NO_LUNG + ": no air inside the body", hint=NO_LUNG_HINT)
    labels, count = _split_gas(labels, count, coarse, volume, factors)
    regions = _air_regions(labels, count, coarse, cspacing)
    keep = _choose_lungs(regions)
    centre_x = _body_centre_x(body, volume, factors)
    lungs = _assign(labels, keep, volume, factors, centre_x)
    other_air = candidates & (lungs == 0)             # gas in the bowel and stomach, the airway
    if fill:
        lungs, pockets = _fill(lungs, cspacing, coarse=coarse, inside=inside, threshold=threshold)
    else:
        pockets = None
    mask = _refine(lungs, array, factors, spacing=volume.spacing, threshold=threshold, fill=fill,
                   exclude=_dilate(other_air, _SLICE_2D | _SLICE_2D.transpose(1, 0, 2)) & (lungs == 0),
                   whole=pockets)
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


def _flip_slices(volume: Volume) -> Volume:
    """The same grid with the slice order reversed (a view): axis 0 toward the head when it
    ran toward the feet."""
    direction = volume.direction.copy()
    direction[:, 0] *= -1
    last = volume.world(np.array([[volume.shape[0] - 1, 0, 0]]))[0]
    return Volume(volume.array[::-1], spacing=volume.spacing, origin=tuple(float(v) for v in last),
                  direction=direction, meta=dict(volume.meta))


def _block_mean(array: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mean of each ``factors``-sized block (edge blocks padded with edge values), float32."""
    fz, fy, fx = (int(f) for f in factors)
    nz, ny, nx = array.shape
    cz, cy, cx = -(-nz // fz), -(-ny // fy), -(-nx // fx)
    out = np.empty((cz, cy, cx), dtype=np.float32)
    rows = max(1, 64 // fz)
    for start in range(0, cz, rows):
        stop = min(cz, start + rows)
        block = np.asarray(array[start * fz: stop * fz])
        pad = ((0, (stop - start) * fz - block.shape[0]), (0, cy * fy - ny), (0, cx * fx - nx))
        if any(p[1] for p in pad):
            block = np.pad(block, pad, mode="edge")
        # a sum of strided views is several times faster than mean over three reshaped axes
        view = block.reshape(stop - start, fz, cy, fy, cx, fx)
        target = out[start:stop]
        target[...] = 0.0
        for i in range(fz):
            for j in range(fy):
                for k in range(fx):
                    target += view[:, i, :, j, :, k]
        target *= np.float32(1.0 / (fz * fy * fx))
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

    inside = _fill_slices(body)
    padding = coarse == PADDING_HU
    if padding.any():
        touching = _dilate(body, _SLICE_2D) & padding
        cut = np.flatnonzero(touching.reshape(len(body), -1).sum(axis=1) >= 3)
        for k in cut:
            inside[k] |= _convex_hull(body[k]) & ~padding[k]
    return inside


def _row_ends(mask: np.ndarray):
    """Rows of a 2D ``mask`` that hold pixels, each row's first and last column, and those
    ends as (row, column) points: their convex hull is the hull of the whole mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    points = np.concatenate([np.stack([rows, first], axis=1), np.stack([rows, last], axis=1)])
    return rows, first, last, points


def _hull_planes(mask: np.ndarray, spacing) -> np.ndarray | None:
    """Facets ``n . p + c <= 0`` (unit outward normals, ``p`` in mm as (row, column)) of the
    convex hull of a 2D ``mask``; ``None`` when it has no area."""
    from scipy.spatial import ConvexHull, QhullError

    if not mask.any():
        return None
    try:
        return ConvexHull(_row_ends(mask)[3] * np.asarray(spacing, dtype=float)).equations
    except (QhullError, ValueError):                        # too few or collinear points
        return None


def _facing(planes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean outward normal of the facets nearest to ``points`` (N, 2 in mm), normalised."""
    nearest = np.argmax(points @ planes[:, :2].T + planes[:, 2], axis=1)
    normal = planes[nearest, :2].mean(axis=0)
    return normal / max(float(np.linalg.norm(normal)), 1e-12)


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """Pixels inside the convex hull of the pixel centres of a 2D ``mask``."""
    from scipy.spatial import ConvexHull, QhullError

    rows, first, last, points = _row_ends(mask)
    if not len(rows):
        return mask.copy()
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


@dataclass
class AirRegion:
    """One 3D component of air inside the body (coarse grid): its label, volume, median HU and
    slice range."""

    label: int
    ml: float
    median_hu: float
    z: tuple[int, int]

    @property
    def gas(self) -> bool:
        """Pure gas (bowel, stomach), not lung parenchyma."""
        return self.median_hu < GAS_HU


def _air_regions(labels: np.ndarray, count: int, coarse: np.ndarray, cspacing) -> list[AirRegion]:
    """The air components of lung size (at least :data:`MIN_LUNG_ML`), largest first."""
    from scipy import ndimage

    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:] * float(np.prod(cspacing)) / 1000.0
    objects = ndimage.find_objects(labels)
    regions = []
    for index in np.flatnonzero(sizes >= MIN_LUNG_ML):
        box = objects[index]
        values = coarse[box][labels[box] == index + 1]
        regions.append(AirRegion(int(index) + 1, float(sizes[index]), float(np.median(values)),
                                 (box[0].start, box[0].stop)))
    regions.sort(key=lambda r: -r.ml)
    if not regions:
        largest = float(sizes.max()) if count else 0.0
        raise InputError(f"{NO_LUNG}: the largest air region inside the body is {largest:.0f} ml, "
                         "too small for a lung", hint=NO_LUNG_HINT)
    return regions


def _choose_lungs(regions: list[AirRegion]) -> list[int]:
    """Labels of the lungs among ``regions`` (largest first): not gas, the largest, and a second
    one of at least :data:`MIN_LUNG_FRACTION` of it beside it in z."""
    lungs = [r for r in regions if not r.gas]
    if not lungs:
        gas = regions[0]
        raise InputError(f"{NO_LUNG}: its air is gas, as in the bowel and stomach ({len(regions)} "
                         f"region{'s' if len(regions) > 1 else ''} of lung size, the largest {gas.ml:.0f} ml "
                         f"at median {gas.median_hu:.0f} HU)", hint=NO_LUNG_HINT)
    first = lungs[0]
    for other in lungs[1:]:
        overlap = min(first.z[1], other.z[1]) - max(first.z[0], other.z[0])
        if other.ml >= MIN_LUNG_FRACTION * first.ml and \
                overlap >= MIN_Z_OVERLAP * min(first.z[1] - first.z[0], other.z[1] - other.z[0]):
            return [first.label, other.label]
    return [first.label]


def _body_centre_x(body: np.ndarray, volume: Volume, factors) -> float:
    """LPS x (mm) of the body's centre of mass."""
    centre = np.array([np.mean(i) for i in np.nonzero(body)]) * factors + (factors - 1) / 2.0
    return float(volume.world(centre)[0])


def _world_x(volume: Volume, factors, coarse_index: np.ndarray, axis: int = 0) -> np.ndarray:
    """LPS x (or with ``axis`` 2: z) in mm of coarse voxel centres ``coarse_index`` (N, 3)."""
    step = (volume.direction[axis] * np.asarray(volume.spacing) * factors).astype(np.float32)
    offset = volume.origin[axis] + float(volume.direction[axis] @ (np.asarray(volume.spacing)
                                                                   * (factors - 1) / 2.0))
    return coarse_index.astype(np.float32) @ step + np.float32(offset)


def _height(cores: np.ndarray, ids, box, volume: Volume, factors) -> float:
    """Mean LPS z (mm, up is superior) of the voxels of ``cores`` labelled ``ids`` (in ``box``)."""
    points = np.argwhere(np.isin(cores, ids)) + [s.start for s in box]
    return float(np.mean(_world_x(volume, factors, points, axis=2)))


def _split_gas(labels: np.ndarray, count: int, coarse: np.ndarray, volume: Volume,
               factors) -> tuple[np.ndarray, int]:
    """Cut gas off the lung it touches on the coarse grid (a thin diaphragm between a lung base
    and the stomach or colon, partial-volumed away): after up to :data:`GAS_SPLIT_EROSIONS`
    erosions an air region falls apart into cores of lung (median HU at least
    :data:`GAS_HU`) and cores of gas below them. The lung cores grown back are lung; of the
    rest, what holds a gas core or is gas itself, with the pure gas next to it, becomes a
    region of its own. Bullae inside a lung stay with it (erosion does not part them from the
    parenchyma around them)."""
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(3, 1)
    voxel_ml = float(np.prod(np.asarray(volume.spacing) * factors)) / 1000.0
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * voxel_ml
    big = np.flatnonzero(sizes >= MIN_LUNG_ML)
    big = big[big > 0]
    if not len(big):
        return labels, count
    objects = ndimage.find_objects(labels)
    for index in big:
        box = objects[index - 1]
        region = labels[box] == index
        core = region
        for erosions in range(1, GAS_SPLIT_EROSIONS + 1):
            core = _erode(core, cross)
            cores, n = ndimage.label(core)
            if n < 2:
                continue
            core_ml = np.bincount(cores.ravel(), minlength=n + 1)[1:] * voxel_ml
            keep = np.flatnonzero(core_ml >= MIN_GAS_CORE_ML) + 1
            if len(keep) < 2:
                continue
            values = coarse[box]
            median = np.array([np.median(values[cores == j]) for j in keep])
            gas, lung = keep[median < GAS_HU], keep[median >= GAS_HU]
            if not len(gas) or not len(lung):
                continue
            lung_z = _height(cores, lung, box, volume, factors)
            gas = np.array([j for j in gas if _height(cores, [j], box, volume, factors) < lung_z])
            if not len(gas):
                continue
            # the lung: its cores grown back as far as they were eroded; of the rest, each
            # piece is gas if it holds a gas core or is gas itself (thin gas tubes vanish
            # under erosion, thin lung recesses too: their HU tells them apart)
            lung_part = np.isin(cores, lung)
            for _ in range(erosions):
                lung_part = _dilate(lung_part, cross) & region
            rest, pieces = ndimage.label(region & ~lung_part)
            if not pieces:
                continue
            holds_gas = np.zeros(pieces + 1, dtype=bool)
            holds_gas[np.unique(rest[np.isin(cores, gas)])] = True
            piece_median = ndimage.median(values, rest, np.arange(1, pieces + 1))
            holds_gas[1:] |= np.asarray(piece_median) < GAS_HU
            holds_gas[0] = False
            part = holds_gas[rest]
            pure = region & (values < GAS_HU)          # and the gas of the bridge itself
            for _ in range(erosions + 1):
                part |= _dilate(part, cross) & pure
            count += 1
            target = labels[box]
            target[part] = count
            break
    return labels, count


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
        nearest = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True,
                                                 sampling=np.asarray(volume.spacing) * factors)
        grown = seeds[tuple(nearest)]
        return [joined & (grown == 1), joined & (grown == 2)]
    return None


def _fill(lungs: np.ndarray, cspacing, *, coarse: np.ndarray, inside: np.ndarray,
          threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per lung: holes filled per slice, a small per-slice closing (nodules, vessels), and the
    pockets of tissue the lung wraps around (:func:`_pockets`: large and juxtapleural tumours).

    Returns the filled lungs and the pockets (coarse voxels that are lung as a whole)."""

    radius = max(1, int(round(CLOSING_MM / cspacing[1])))
    out = np.zeros_like(lungs)
    whole = np.zeros(lungs.shape, dtype=bool)
    for value in (RIGHT_LUNG, LEFT_LUNG):
        part = lungs == value
        if not part.any():
            continue
        box = _box(part, margin=radius + 1)
        sub = part[box]
        closed = _erode(_dilate(sub, _disk(radius)), _disk(radius)) | sub
        filled = _fill_slices(closed, MAX_HOLE_MM2 / (cspacing[1] * cspacing[2]))
        tissue = (coarse[box] >= threshold) & (coarse[box] < POCKET_MAX_HU) & inside[box]
        other = (lungs[box] > 0) & ~sub
        pockets = _pockets(filled, tissue=tissue & ~other, body=inside[box[0]],
                           offset=(box[1].start, box[2].start), cspacing=cspacing,
                           cut_below=bool(part[0].any()))      # the scan ends inside the lung
        target = out[box]
        target[(filled | pockets) & (target == 0)] = value
        whole[box] |= pockets
    return out, whole


def _pockets(lung: np.ndarray, *, tissue: np.ndarray, body: np.ndarray, offset, cspacing,
             cut_below: bool = False) -> np.ndarray:
    """Tissue the lung wraps around: juxtapleural and large tumours (coarse, one lung's box;
    ``body``: the inside of the body in the box's slices, whole; ``offset``: the box's first
    row and column in it).

    Per slice, the lung's convex hull minus the lung is cut into pockets (2D pieces of
    ``tissue``). A pocket is lung when the lung goes on below it (within
    :data:`POCKET_REACH_MM`, under at least :data:`POCKET_CAPPED` of its pixels: the dome of
    the diaphragm has no lung below it) and it is closed on every side but the chest wall: no
    mouth (a hole), or a mouth (its pixels on the hull's edge) that faces the nearest skin: the
    outward normal of the lung's hull there and that of the body's hull nearest to it agree
    (cosine at least :data:`POCKET_FACING`). The heart, the mediastinum and the dome of the
    diaphragm open toward the middle of the body, away from the nearest skin.

    With ``cut_below`` (the scan ends inside the lung, as a scan of the apices does) the lung
    goes on below the scan: pockets within :data:`POCKET_REACH_MM` of its lower end count as
    capped.
    """
    from scipy import ndimage

    nz = lung.shape[0]
    slices = np.flatnonzero(lung.any(axis=(1, 2)))
    hulls = np.zeros_like(lung)
    for k in slices:
        hulls[k] = _convex_hull(lung[k])
    pocket = hulls & ~lung & tissue
    found = np.zeros_like(lung)
    if not pocket.any():
        return found
    pieces, count = ndimage.label(pocket, _SLICE_2D)
    index = np.arange(1, count + 1)
    area = np.bincount(pieces.ravel(), minlength=count + 1)[1:] * float(cspacing[1] * cspacing[2])
    # the largest cross-section of the 3D pocket each piece belongs to: a tumour's stays
    # tumour-sized, the heart's and the mediastinum's grow large in other slices
    bodies, _ = ndimage.label(pocket)
    body_of = np.zeros(count + 1, dtype=np.int64)
    body_of[pieces[pocket]] = bodies[pocket]
    largest = np.zeros(int(bodies.max()) + 1)
    np.maximum.at(largest, body_of[1:], area)
    largest_of = largest[body_of[1:]]
    reach = max(1, int(round(POCKET_REACH_MM / cspacing[0])))
    counts = np.concatenate([np.zeros((1,) + lung.shape[1:], np.int32), np.cumsum(lung, axis=0, dtype=np.int32)])
    k = np.arange(nz)
    below = (counts[k] - counts[np.maximum(k - reach, 0)]) > 0          # lung in [k - reach, k)
    if cut_below:
        below[:reach] = True
    candidates = (area >= POCKET_MIN_MM2) & (ndimage.mean(below, pieces, index) >= POCKET_CAPPED)
    if not candidates.any():
        return found
    objects = ndimage.find_objects(pieces)
    spacing = np.asarray(cspacing[1:], dtype=float)
    offset = np.asarray(offset) * spacing
    planes: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
    for label in index[candidates]:
        box = objects[label - 1]
        k = box[0].start
        grown = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box[1:])
        piece = pieces[k][grown] == label
        mouth = np.argwhere(piece & _dilate(~hulls[k][grown][None], _SLICE_2D)[0])
        if len(mouth):                              # open: it must open toward the nearest skin
            if k not in planes:
                planes[k] = _hull_planes(lung[k], spacing), _hull_planes(body[k], spacing)
            lung_planes, body_planes = planes[k]
            if lung_planes is None or body_planes is None:
                continue
            points = (mouth + [g.start for g in grown]) * spacing
            facing = float(_facing(lung_planes, points) @ _facing(body_planes, points + offset))
            if facing < POCKET_FACING and not (largest_of[label - 1] <= POCKET_MAX_TUMOUR_MM2 and
                                               _narrow_mouthed(piece, len(mouth), area[label - 1])):
                continue
        found[k][grown] |= piece
    return found


def _narrow_mouthed(piece: np.ndarray, mouth: int, area_mm2: float) -> bool:
    """A tumour-sized pocket (:data:`POCKET_MIN_TUMOUR_MM2` to :data:`POCKET_MAX_TUMOUR_MM2`)
    whose mouth is at most :data:`POCKET_NARROW_MOUTH` of its outline: the lung wraps around
    most of it, as around a tumour on the mediastinal pleura (the mediastinum's own concavity
    is wide open, and the heart's grows larger than a tumour in the slices above)."""
    if not POCKET_MIN_TUMOUR_MM2 <= area_mm2 <= POCKET_MAX_TUMOUR_MM2:
        return False
    outline = int(np.sum(piece & ~_erode(piece[None], _SLICE_2D)[0]))
    return mouth <= POCKET_NARROW_MOUTH * outline


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
            fill: bool, exclude: np.ndarray | None = None,
            whole: np.ndarray | None = None) -> np.ndarray:
    """Full-resolution labels: coarse interiors kept, boundary shell decided by the threshold;
    coarse voxels of ``whole`` (tissue pockets that are lung) kept whole, nothing in a coarse
    voxel of ``exclude`` (the air that is not lung, and its rim)."""

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
        if exclude is not None:
            outer &= ~exclude[box]
        lung = (outer[grid] & air) | (inner[grid] if fill else (inner[grid] & air))
        if whole is not None:
            lung |= (whole[box] & sub)[grid]
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
