"""Segmentation metrics on masks, checked against independent references in the tests.

Every metric compares a truth mask with a predicted mask on the same grid; ``spacing`` (mm, in
array order) makes distances physical. The surface of a mask is the set of its voxels that have
a 6-connected (4 in 2D) neighbour outside it, the array border counting as outside: the
definition of medpy (``medpy.metric.binary``), whose ``dc``, ``hd95`` and ``assd`` these equal
to 1e-6 (tested).

Empty masks, where every library differs, follow one explicit convention
(:data:`EMPTY_CONVENTION`):

* truth and prediction both empty: ``dice`` = ``jaccard`` = 1, ``hd95`` = ``assd`` = 0,
  ``volume-error`` = ``recist`` = 0; flag ``both empty``;
* exactly one empty: ``dice`` = ``jaccard`` = 0 and the distances are the worst case, the
  diagonal of the grid in mm (:func:`worst_distance`); flag ``prediction empty`` or
  ``truth empty``. The relative errors are 1 for an empty prediction and undefined (NaN) for an
  empty truth.

``nsd`` is the normalised surface Dice (Nikolov et al. 2021) at a tolerance of ``tolerance_mm``:
the share of both masks' surface voxels that lie within the tolerance of the other mask's
surface, ``(|{p in S_P: d(p, S_T) <= tau}| + |{t in S_T: d(t, S_P) <= tau}|) / (|S_P| + |S_T|)``,
on the same surfaces and distances as ``hd95`` (voxels, not surfels); 1 when both masks are
empty and 0 when one is.

Voxel counts (BraTS's definitions, as its evaluation computes them): ``sensitivity`` =
TP / (TP + FN), 1 when truth and prediction are both empty and 0 when only the truth is;
``specificity`` = TN / (TN + FP), 1 when the truth covers the whole grid (there is nothing to
mark wrongly). ``slice-dice`` is the Dice per slice along the first array axis (axial slices of
a ``(z, y, x)`` volume), averaged over the slices where the truth or the prediction has the
class (LCTSC's per-slice Dice); 1 when no slice has it, and a 2D image is one slice.

The lesion-wise metrics (``lesion-dice``, ``lesion-sensitivity``, ``lesion-precision``,
``lesion-f1``, ``lesion-fp``) match connected components as BraTS 2023 does; their rule and
conventions are in :mod:`medtool.metrics.lesions`.

A label map is scored per label (:func:`score_labels`; the counts of every label come from one
``bincount`` over label pairs, :func:`confusion`) or as nested regions such as BraTS's whole
tumour, tumour core and enhancing tumour (:func:`score_regions`, :mod:`medtool.metrics.regions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .lesions import LESION_METRICS, LesionRule, lesion_scores, match_lesions
from .regions import region_mask

#: Voxel-count metrics (the same for any spacing).
COUNT_METRICS = ("dice", "jaccard", "sensitivity", "specificity")
#: Segmentation metrics by name, in the order they are reported.
SEGMENTATION_METRICS = ("dice", "jaccard", "hd95", "assd", "nsd", "volume-error", "recist",
                        "sensitivity", "specificity", "slice-dice", *LESION_METRICS)
#: Metrics where a larger value is better (the others: smaller is better).
HIGHER_IS_BETTER = frozenset({"dice", "jaccard", "nsd", "sensitivity", "specificity", "slice-dice",
                              *(set(LESION_METRICS) - {"lesion-fp"})})
#: Percentile of the pooled surface distances that ``hd95`` reports.
HD_PERCENTILE = 95.0
#: Default tolerance (mm) of the normalised surface Dice ``nsd``.
NSD_TOLERANCE_MM = 1.0
#: Flags of the empty-mask cases.
FLAG_BOTH_EMPTY = "both empty"
FLAG_PRED_EMPTY = "prediction empty"
FLAG_TRUTH_EMPTY = "truth empty"
#: The convention in one sentence, for --help and reports.
EMPTY_CONVENTION = (
    "both empty: dice = jaccard = nsd = 1, hd95 = assd = 0, volume-error = recist = 0; one empty: "
    "dice = jaccard = nsd = 0, hd95 = assd = the grid diagonal in mm (worst case), volume-error = "
    "recist = 1 for an empty prediction and NaN for an empty truth; each such case is flagged"
)

#: The lesion rule of score unless given (no dilation, no minimum size).
NO_LESION_RULE = LesionRule()


def longest_axial_diameter(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Longest in-plane diameter (mm) over all axial slices of a 3D ``(z, y, x)`` mask.

    The RECIST measure: on each slice, the largest distance between the centres of two mask
    voxels (in mm, using the ``(y, x)`` spacing); the maximum over slices. 0 for an empty mask.
    A single voxel measures 0.
    """
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        mask = mask[None]
    sy, sx = float(spacing[-2]), float(spacing[-1])
    best = 0.0
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        rows, cols = np.nonzero(mask[k])
        points = np.column_stack([rows * sy, cols * sx])
        if len(points) > 3:
            try:
                points = points[ConvexHull(points).vertices]
            except QhullError:  # collinear points: all of them are on the "hull"
                pass
        if len(points) > 1:
            best = max(best, float(pdist(points).max()))
    return best


# -- overlap -------------------------------------------------------------------------------
def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient ``2|T∩P| / (|T| + |P|)``; 1 when both are empty."""
    inter, n_truth, n_pred = _counts(truth, pred)
    return 1.0 if n_truth + n_pred == 0 else 2.0 * inter / (n_truth + n_pred)


def jaccard(truth: np.ndarray, pred: np.ndarray) -> float:
    """Jaccard index (IoU) ``|T∩P| / |T∪P|``; 1 when both are empty."""
    inter, n_truth, n_pred = _counts(truth, pred)
    union = n_truth + n_pred - inter
    return 1.0 if union == 0 else inter / union


def _counts(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    return int(np.count_nonzero(truth & pred)), int(np.count_nonzero(truth)), int(np.count_nonzero(pred))


# -- surfaces ------------------------------------------------------------------------------
def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the array border is outside).

    The same as ``mask ^ binary_erosion(mask)`` with the cross-shaped structure (medpy's
    surface), done with shifted views.
    """
    mask = np.asarray(mask, bool)
    inner = mask.copy()
    for axis in range(mask.ndim):
        def part(start, stop):
            index = [slice(None)] * mask.ndim
            index[axis] = slice(start, stop)
            return tuple(index)
        inner[part(1, None)] &= mask[part(None, -1)]
        inner[part(None, -1)] &= mask[part(1, None)]
        inner[part(0, 1)] = False
        inner[part(-1, None)] = False
    return mask & ~inner


def surface_distances(a: np.ndarray, b: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``, and back.

    Both masks must be non-empty. The surfaces are found on the bounding box of ``a | b`` only
    (every surface voxel lies inside it, and the erosion sees zeros around it either way), and
    the nearest surface voxel of the other mask is found with a k-d tree over the surface
    voxels' positions in mm: the same distances as a Euclidean distance transform of the whole
    grid (medpy's way), at a fraction of the cost.
    """
    from scipy.spatial import cKDTree

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    box = bounding_box(a | b)
    spacing = np.asarray(spacing, dtype=np.float64)
    points_a = np.argwhere(surface(a[box])) * spacing
    points_b = np.argwhere(surface(b[box])) * spacing
    a_to_b = cKDTree(points_b).query(points_a)[0]
    b_to_a = cKDTree(points_a).query(points_b)[0]
    return a_to_b, b_to_a


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every true voxel of a non-empty ``mask``."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def nsd(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float], *,
        tolerance_mm: float = NSD_TOLERANCE_MM) -> float:
    """Normalised surface Dice at ``tolerance_mm``: the share of both surfaces within the
    tolerance of the other."""
    return score_masks(truth, pred, spacing, ("nsd",), tolerance_mm=tolerance_mm).values["nsd"]


def hd95(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> float:
    """95th percentile of the surface distances pooled over both directions (mm)."""
    return score_masks(truth, pred, spacing, ("hd95",)).values["hd95"]


def assd(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance: mean of the distances of both directions pooled (mm).

    ``(sum d(a, S_T) + sum d(b, S_P)) / (|S_P| + |S_T|)`` over the surface voxels, as medpy
    0.5 computes it.
    """
    return score_masks(truth, pred, spacing, ("assd",)).values["assd"]


def worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The largest distance on the grid: its diagonal between the outermost voxel centres."""
    extent = (np.asarray(shape, dtype=np.float64) - 1) * np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum(extent ** 2)))


# -- one mask pair, every metric -------------------------------------------------------------
@dataclass
class MaskScore:
    """The metrics of one truth/prediction mask pair and the empty-mask flag, if any; with
    ``slice-dice``, ``slices`` holds the counted slices (:func:`slice_counts`)."""

    values: dict[str, float] = field(default_factory=dict)
    flag: str = ""
    slices: dict[str, np.ndarray] | None = None


def score_masks(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                metrics: Iterable[str] = SEGMENTATION_METRICS, *,
                lesions: LesionRule = NO_LESION_RULE, tolerance_mm: float = NSD_TOLERANCE_MM,
                counts: tuple[int, int, int] | None = None) -> MaskScore:
    """Compute ``metrics`` for one binary mask pair under the empty-mask convention.

    Parameters
    ----------
    truth, pred
        Boolean (or 0/1) arrays of the same shape, 2D ``(y, x)`` or 3D ``(z, y, x)``.
    spacing
        Voxel size in mm, array order.
    metrics
        Names from :data:`SEGMENTATION_METRICS`.
    lesions
        How the lesion-wise metrics match lesions (:class:`~medtool.metrics.lesions.LesionRule`).
    tolerance_mm
        The tolerance of ``nsd`` (mm).
    counts
        ``(|T and P|, |T|, |P|)`` when the caller has them already (:func:`confusion`).
    """
    metrics = list(metrics)
    unknown = set(metrics) - set(SEGMENTATION_METRICS)
    if unknown:
        raise ValueError(f"unknown segmentation metrics {sorted(unknown)}")
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    inter, n_truth, n_pred = _counts(truth, pred) if counts is None else counts
    flag = _flag(n_truth, n_pred)
    values = _count_metrics(inter, n_truth, n_pred, truth.size, flag)
    if {"hd95", "assd", "nsd"} & set(metrics):
        values.update(_distances(truth, pred, spacing, flag, tolerance_mm))
    if "volume-error" in metrics:
        values["volume-error"] = _relative_error(n_truth, n_pred)
    if "recist" in metrics:
        values["recist"] = _relative_error(longest_axial_diameter(truth, spacing),
                                           longest_axial_diameter(pred, spacing))
    slices = None
    if "slice-dice" in metrics:
        slices = slice_counts(truth, pred)
        values["slice-dice"] = _mean_slice_dice(slices)
    if set(LESION_METRICS) & set(metrics):
        values.update(lesion_scores(match_lesions(truth, pred, spacing, rule=lesions)))
    return MaskScore({m: values[m] for m in metrics}, flag, slices)


def score_counts(inter: int, n_truth: int, n_pred: int, size: int, metrics: Iterable[str]) -> MaskScore:
    """The metrics that need only voxel counts (:data:`COUNT_METRICS`, ``volume-error``) from
    ``|T and P|``, ``|T|``, ``|P|`` and the grid's ``size``."""
    metrics = list(metrics)
    flag = _flag(n_truth, n_pred)
    values = {**_count_metrics(inter, n_truth, n_pred, size, flag),
              "volume-error": _relative_error(n_truth, n_pred)}
    return MaskScore({m: values[m] for m in metrics}, flag)


def _flag(n_truth: int, n_pred: int) -> str:
    return (FLAG_BOTH_EMPTY if n_truth == n_pred == 0 else FLAG_TRUTH_EMPTY if n_truth == 0
            else FLAG_PRED_EMPTY if n_pred == 0 else "")


def _count_metrics(inter: int, n_truth: int, n_pred: int, size: int, flag: str) -> dict[str, float]:
    """Dice, Jaccard, sensitivity and specificity from the voxel counts."""
    both_empty = flag == FLAG_BOTH_EMPTY
    negatives = size - n_truth
    return {
        "dice": 1.0 if both_empty else 2.0 * inter / (n_truth + n_pred),
        "jaccard": 1.0 if both_empty else inter / (n_truth + n_pred - inter),
        "sensitivity": (1.0 if both_empty else 0.0) if n_truth == 0 else inter / n_truth,
        "specificity": 1.0 if negatives == 0 else (negatives - (n_pred - inter)) / negatives,
    }


def _distances(truth: np.ndarray, pred: np.ndarray, spacing, flag: str, tolerance_mm: float) -> dict[str, float]:
    """hd95, assd and nsd under the empty-mask convention."""
    if flag == FLAG_BOTH_EMPTY:
        return {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if flag:
        worst = worst_distance(truth.shape, spacing)
        return {"hd95": worst, "assd": worst, "nsd": 0.0}
    to_truth, to_pred = surface_distances(pred, truth, spacing)
    pooled = np.concatenate([to_truth, to_pred])
    return {"hd95": float(np.percentile(pooled, HD_PERCENTILE)), "assd": float(pooled.mean()),
            "nsd": float(np.count_nonzero(pooled <= tolerance_mm) / len(pooled))}


def slice_dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean Dice over the slices (first axis) where the truth or the prediction has voxels;
    1 when none has. A 2D mask is one slice."""
    return _mean_slice_dice(slice_counts(truth, pred))


def slice_counts(truth: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """The slices (first axis) where the truth or the prediction has voxels: ``slice`` (index),
    ``dice``, ``truth`` and ``predicted`` (voxel counts). A 2D mask is slice 0."""
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    if truth.ndim < 3:
        truth, pred = truth[None], pred[None]
    flat_truth, flat_pred = truth.reshape(len(truth), -1), pred.reshape(len(pred), -1)
    inter = np.count_nonzero(flat_truth & flat_pred, axis=1)
    n_truth, n_pred = np.count_nonzero(flat_truth, axis=1), np.count_nonzero(flat_pred, axis=1)
    counted = np.flatnonzero(n_truth + n_pred > 0)
    total = n_truth[counted] + n_pred[counted]
    return {"slice": counted, "dice": 2.0 * inter[counted] / np.maximum(total, 1),
            "truth": n_truth[counted], "predicted": n_pred[counted]}


def _mean_slice_dice(slices: dict[str, np.ndarray]) -> float:
    return 1.0 if not len(slices["slice"]) else float(slices["dice"].mean())


def _relative_error(truth: float, pred: float) -> float:
    """``|pred - truth| / truth``; 0 when both are 0, NaN when only the truth is 0."""
    if truth == 0:
        return 0.0 if pred == 0 else float("nan")
    return abs(pred - truth) / truth


def score_labels(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                 metrics: Iterable[str] = SEGMENTATION_METRICS,
                 labels: Iterable[int] | None = None, *,
                 lesions: LesionRule = NO_LESION_RULE,
                 tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[int, MaskScore]:
    """Score each label of two integer label volumes (``truth == label`` vs ``pred == label``).

    ``labels`` defaults to every non-zero value present in either volume. The voxel counts of
    every label come from one :func:`confusion`; the masks are built only for the metrics
    that need more than counts.
    """
    metrics = list(metrics)
    truth, pred = np.asarray(truth), np.asarray(pred)
    if labels is None:
        labels = sorted((present_labels(truth) | present_labels(pred)) - {0})
    labels = [int(label) for label in labels]
    matrix, index = confusion(truth, pred)
    counts_only = set(metrics) <= set(COUNT_METRICS) | {"volume-error"}
    scores = {}
    for label in labels:
        k = index.get(label)
        counts = (0, 0, 0) if k is None else (int(matrix[k, k]), int(matrix[k].sum()), int(matrix[:, k].sum()))
        if counts_only:
            scores[label] = score_counts(*counts, truth.size, metrics)
        else:
            scores[label] = score_masks(truth == label, pred == label, spacing, metrics,
                                        lesions=lesions, tolerance_mm=tolerance_mm, counts=counts)
    return scores


def score_regions(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                  metrics: Iterable[str], regions: dict[str, tuple[int, ...]], *,
                  lesions: LesionRule = NO_LESION_RULE,
                  tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[str, MaskScore]:
    """Score two label volumes as nested regions (region name -> its labels, as
    :func:`medtool.metrics.regions.parse_regions` gives): one binary mask pair per region."""
    metrics = list(metrics)
    return {name: score_masks(region_mask(truth, members), region_mask(pred, members), spacing,
                              metrics, lesions=lesions, tolerance_mm=tolerance_mm)
            for name, members in regions.items()}


def confusion(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """The confusion matrix of two integer label volumes (rows truth, columns prediction) over
    the labels present in either, and each label's row: one ``bincount`` over label pairs."""
    truth, pred = np.asarray(truth).ravel(), np.asarray(pred).ravel()
    values = sorted(present_labels(truth) | present_labels(pred))
    index = {v: k for k, v in enumerate(values)}
    if values == list(range(len(values))):
        t, p = truth.astype(np.intp), pred.astype(np.intp)
    else:
        lookup = np.asarray(values)
        t, p = np.searchsorted(lookup, truth), np.searchsorted(lookup, pred)
    n = len(values)
    matrix = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
    return matrix, index


def present_labels(array: np.ndarray) -> set[int]:
    """The distinct values of an integer label volume (a histogram for small unsigned types)."""
    array = np.asarray(array)
    if array.dtype == bool or (array.dtype.kind == "u" and array.dtype.itemsize <= 2):
        flat = array.ravel().view(np.uint8) if array.dtype == bool else array.ravel()
        return {int(v) for v in np.flatnonzero(np.bincount(flat))}
    return {int(v) for v in np.unique(array)}
