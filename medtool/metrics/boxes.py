"""Bounding boxes: reading RSNA tables, IoU, and the detection metrics map-iou and coco-map.

Boxes are ``x y w h`` in pixels (top-left corner, width, height), as in the RSNA Pneumonia
Detection Challenge. A set of images is held as padded arrays (:class:`ImageBoxes`), so that IoU
and the greedy matching of the metrics run in NumPy over all images at once; the only Python
loop is over prediction ranks (at most the largest number of boxes on one image).

* :func:`map_iou` is the RSNA metric: for each IoU threshold 0.40, 0.45, ..., 0.75 and each
  image, ``TP / (TP + FP + FN)``, where predictions are taken in descending confidence and each
  one matches the not yet matched truth box with the largest IoU if that IoU is above the
  threshold (strictly); averaged over thresholds per image, then over images. An image without
  truth boxes scores 0 if it has any prediction, and is left out if it has none.
* :func:`coco_map` is COCO's bounding-box AP (one category, at most 100 detections per image,
  area range "all"): AP@[.50:.95] and AP50, equal to pycocotools' ``COCOeval`` (tested).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..tables import read_table

#: RSNA thresholds: 0.40 to 0.75 in steps of 0.05.
RSNA_THRESHOLDS = np.round(np.arange(0.40, 0.7501, 0.05), 2)
#: COCO's thresholds and recall points, built exactly as pycocotools builds them.
COCO_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_RECALLS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: COCO's limit of detections per image.
COCO_MAX_DETECTIONS = 100
#: Numbers per box in a PredictionString: confidence x y w h.
PREDICTION_FIELDS = 5
#: Columns of the RSNA truth table and of a prediction table.
TRUTH_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
PREDICTION_COLUMNS = ("patientId", "PredictionString")


@dataclass
class ImageBoxes:
    """Boxes of many images, padded into arrays.

    Attributes
    ----------
    ids
        Image ids, one per row.
    boxes
        ``(images, slots, 4)`` float64 ``x y w h``; rows are sorted by descending score
        (stable), padding after the real boxes.
    scores
        ``(images, slots)`` float64 confidences (1 for truth boxes); padding is ``-inf``.
    counts
        ``(images,)`` number of real boxes per image.
    """

    ids: list[str]
    boxes: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_lists(cls, ids: Sequence[str], boxes: Sequence[np.ndarray],
                   scores: Sequence[np.ndarray] | None = None) -> "ImageBoxes":
        """Pad per-image ``(k, 4)`` boxes (and ``(k,)`` scores) into arrays, best first."""
        counts = np.array([len(b) for b in boxes], dtype=np.intp)
        flat = (np.concatenate([np.asarray(b, float).reshape(-1, 4) for b in boxes])
                if len(boxes) else np.zeros((0, 4)))
        flat_scores = None if scores is None else (
            np.concatenate([np.asarray(v, float).reshape(-1) for v in scores]) if len(scores) else np.zeros(0))
        return cls.from_flat(ids, np.repeat(np.arange(len(ids)), counts), flat, flat_scores)

    @classmethod
    def from_flat(cls, ids: Sequence[str], image: np.ndarray, boxes: np.ndarray,
                  scores: np.ndarray | None = None) -> "ImageBoxes":
        """Pad boxes given as one ``(N, 4)`` array with the image row of each into arrays.

        Within an image, boxes are sorted by descending score; equal scores keep their order.
        """
        n = len(ids)
        image = np.asarray(image, dtype=np.intp)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64)
        counts = np.bincount(image, minlength=n).astype(np.intp)
        slots = int(counts.max()) if n else 0
        out_boxes = np.zeros((n, slots, 4))
        out_scores = np.full((n, slots), -np.inf)
        if len(boxes):
            if not bool(np.all(image[1:] >= image[:-1])):
                order = np.argsort(image, kind="stable")
                image, boxes, scores = image[order], boxes[order], scores[order]
            rank = np.arange(len(boxes)) - np.repeat(np.cumsum(counts) - counts, counts)
            out_boxes[image, rank] = boxes
            out_scores[image, rank] = scores
            if not bool(np.all(scores == scores[0])):       # best first within each image
                order = np.argsort(-out_scores, axis=1, kind="stable")   # padding stays last
                out_scores = np.take_along_axis(out_scores, order, axis=1)
                out_boxes = np.take_along_axis(out_boxes, order[..., None], axis=1)
        return cls(list(ids), out_boxes, out_scores, counts)

    @property
    def valid(self) -> np.ndarray:
        """``(images, slots)`` true where a slot holds a real box."""
        return np.arange(self.boxes.shape[1]) < self.counts[:, None]

    def take(self, ids: Sequence[str]) -> "ImageBoxes":
        """The rows for ``ids`` in that order; an id not present gets no boxes."""
        where = {image: i for i, image in enumerate(self.ids)}
        index = np.array([where.get(image, -1) for image in ids], dtype=np.intp)
        present = index >= 0
        boxes = np.zeros((len(ids),) + self.boxes.shape[1:])
        scores = np.full((len(ids), self.boxes.shape[1]), -np.inf)
        boxes[present], scores[present] = self.boxes[index[present]], self.scores[index[present]]
        counts = np.where(present, self.counts[np.maximum(index, 0)], 0)
        return ImageBoxes(list(ids), boxes, scores, counts)


# -- IoU -------------------------------------------------------------------------------------
def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a (..., P, 4)`` with every box in ``b (..., G, 4)``: ``(..., P, G)``.

    Boxes are ``x y w h``; a pair whose union has no area has IoU 0.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    ax0, ay0 = a[..., :, None, 0], a[..., :, None, 1]
    ax1, ay1 = (a[..., 0] + a[..., 2])[..., :, None], (a[..., 1] + a[..., 3])[..., :, None]
    bx0, by0 = b[..., None, :, 0], b[..., None, :, 1]
    bx1, by1 = (b[..., 0] + b[..., 2])[..., None, :], (b[..., 1] + b[..., 3])[..., None, :]
    w = np.minimum(ax1, bx1)
    w -= np.maximum(ax0, bx0)
    np.maximum(w, 0, out=w)
    h = np.minimum(ay1, by1)
    h -= np.maximum(ay0, by0)
    np.maximum(h, 0, out=h)
    inter = np.multiply(w, h, out=w)
    union = (a[..., 2] * a[..., 3])[..., :, None] + (b[..., 2] * b[..., 3])[..., None, :]
    union -= inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _greedy_match(truth: "ImageBoxes", pred: "ImageBoxes", thresholds: np.ndarray, *, strict: bool,
                  last_on_ties: bool) -> np.ndarray:
    """Match predictions (best first) to truth boxes greedily, per threshold (all > 0).

    Prediction rank ``r`` takes the unmatched truth box of largest IoU if that IoU passes the
    threshold (``>`` when ``strict``, else ``>=``); among equal IoUs the first (or, with
    ``last_on_ties``, the last) truth box. Returns ``(thresholds, images, slots)``: whether
    each prediction matched.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    slots = pred.boxes.shape[1]
    n, truths = len(pred.ids), truth.boxes.shape[1]
    hits = np.zeros((len(thresholds), n, slots), dtype=bool)
    # Only images with truth and predictions can match. Sorted by their number of predictions
    # (most first), the images with a prediction at rank r are a prefix: views, no copies.
    busy = np.flatnonzero((truth.counts > 0) & (pred.counts > 0))
    busy = busy[np.argsort(-pred.counts[busy], kind="stable")]
    if not len(busy):
        return hits
    active = np.bincount(pred.counts[busy], minlength=slots + 1)[::-1].cumsum()[::-1][1:]
    # padded truth slots have IoU 0, which passes no threshold > 0
    overlaps = iou(pred.boxes[busy], truth.boxes[busy])                # (m, P, G)
    # a truth box already matched at a threshold is masked with -inf for that threshold
    penalty = np.zeros((len(thresholds), len(busy), truths))
    found = np.zeros((len(thresholds), len(busy), slots), dtype=bool)
    for r in range(slots):
        m = int(active[r])
        if not m:
            break
        value = penalty[:, :m] + overlaps[None, :m, r, :]              # (T, m, G)
        if last_on_ties:
            best = truths - 1 - np.argmax(value[..., ::-1], axis=2)
        else:
            best = np.argmax(value, axis=2)                            # (T, m)
        top = np.take_along_axis(value, best[..., None], axis=2)[..., 0]
        # the largest available overlap decides: if it fails the threshold, all do
        hit = (top > thresholds[:, None]) if strict else (top >= thresholds[:, None])
        found[:, :m, r] = hit
        t_index, m_index = np.nonzero(hit)
        penalty[t_index, m_index, best[t_index, m_index]] = -np.inf
    hits[:, busy] = found
    return hits


def _aligned(truth: ImageBoxes, pred: ImageBoxes) -> None:
    if truth.ids != pred.ids:
        raise ValueError("truth and prediction must list the same images in the same order")


# -- RSNA mAP@IoU ----------------------------------------------------------------------------
def map_iou_per_image(truth: ImageBoxes, pred: ImageBoxes,
                      thresholds: np.ndarray = RSNA_THRESHOLDS) -> np.ndarray:
    """The RSNA score of each image (mean over thresholds); NaN for an image left out.

    ``truth`` and ``pred`` must hold the same images in the same order (see
    :meth:`ImageBoxes.take`).
    """
    _aligned(truth, pred)
    hits = _greedy_match(truth, pred, thresholds, strict=True, last_on_ties=False)
    tp = hits.sum(axis=2)                                              # (T, n)
    denominator = truth.counts[None, :] + pred.counts[None, :] - tp   # TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        per_threshold = np.where(denominator > 0, tp / denominator, np.nan)
    return per_threshold.mean(axis=0)


def map_iou(truth: ImageBoxes, pred: ImageBoxes, thresholds: np.ndarray = RSNA_THRESHOLDS) -> float:
    """The RSNA Pneumonia Detection metric over all images (NaN when every image is left out)."""
    scores = map_iou_per_image(truth, pred, thresholds)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else math.nan


# -- COCO AP ---------------------------------------------------------------------------------
@dataclass
class CocoMatches:
    """Per-detection results of COCO's matching, ready to be accumulated (or resampled).

    ``image`` (detections,) image row; ``scores`` (detections,); ``matched`` (T, detections);
    ``truths`` (images,) number of truth boxes.
    """

    image: np.ndarray
    scores: np.ndarray
    matched: np.ndarray
    truths: np.ndarray


def coco_matches(truth: ImageBoxes, pred: ImageBoxes) -> CocoMatches:
    """Match as ``COCOeval.evaluateImg`` does: best-scored first, largest IoU >= threshold."""
    _aligned(truth, pred)
    slots = min(pred.boxes.shape[1], COCO_MAX_DETECTIONS)
    top = ImageBoxes(pred.ids, pred.boxes[:, :slots], pred.scores[:, :slots],
                     np.minimum(pred.counts, COCO_MAX_DETECTIONS))
    thresholds = np.minimum(COCO_THRESHOLDS, 1 - 1e-10)
    hits = _greedy_match(truth, top, thresholds, strict=False, last_on_ties=True)
    valid = top.valid
    image = np.broadcast_to(np.arange(len(top.ids))[:, None], valid.shape)[valid]
    return CocoMatches(image, top.scores[valid], hits[:, valid], truth.counts.copy())


def coco_accumulate(matches: CocoMatches, weights: np.ndarray | None = None) -> tuple[float, float]:
    """AP@[.50:.95] and AP50 as ``COCOeval.accumulate`` + ``summarize`` compute them.

    ``weights`` (images,) repeats each image that many times (a bootstrap resample). NaN when
    there is no truth box.
    """
    # detections are in image order, best first within an image, as pycocotools concatenates
    # them before its stable sort by score
    scores, matched, truths = matches.scores, matches.matched, matches.truths
    if weights is not None:
        weights = np.asarray(weights, dtype=np.intp)
        repeat = weights[matches.image]
        scores, matched = np.repeat(scores, repeat), np.repeat(matched, repeat, axis=1)
        truths = truths * weights
    n_truth = int(truths.sum())
    if n_truth == 0:
        return math.nan, math.nan
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    precision = np.zeros((len(matched), len(COCO_RECALLS)))
    if len(scores):
        recall = tp / n_truth
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]       # precision envelope
        for t in range(len(matched)):
            index = np.searchsorted(recall[t], COCO_RECALLS, side="left")
            inside = index < pr.shape[1]
            precision[t, inside] = pr[t, index[inside]]
    return float(precision.mean()), float(precision[np.isclose(COCO_THRESHOLDS, 0.5)].mean())


def coco_map(truth: ImageBoxes, pred: ImageBoxes) -> tuple[float, float]:
    """COCO AP@[.50:.95] and AP50 over all images (one category, 100 detections per image)."""
    return coco_accumulate(coco_matches(truth, pred))


# -- reading tables --------------------------------------------------------------------------
def read_truth(path: str | os.PathLike) -> ImageBoxes:
    """Read RSNA truth ``patientId,x,y,width,height,Target``: one row per box, or one row with
    ``Target`` 0 (and empty coordinates) for an image without boxes."""
    table = read_table(path, required=("patientId", "x", "y", "width", "height"))
    boxes: dict[str, list[list[float]]] = {}
    for i, row in enumerate(table.rows):
        image = row["patientId"]
        if not image:
            raise table.error(i, "empty patientId", "every row needs an image id")
        found = boxes.setdefault(image, [])
        values = [row[k] for k in ("x", "y", "width", "height")]
        target = row.get("Target", "")
        if target in ("0", "0.0") or (not any(values) and target == ""):
            continue
        try:
            box = [float(v) for v in values]
        except ValueError:
            raise table.error(i, f"box {' '.join(values)!r} is not four numbers",
                              "give x, y, width and height, or Target 0 with empty values") from None
        _check_box(box, table, i)
        found.append(box)
    ids = sorted(boxes)
    return ImageBoxes.from_lists(ids, [np.array(boxes[k]).reshape(-1, 4) for k in ids])


def read_predictions(path: str | os.PathLike) -> ImageBoxes:
    """Read ``patientId,PredictionString`` with ``conf x y w h`` groups (empty: no boxes)."""
    table = read_table(path, required=PREDICTION_COLUMNS)
    ids: list[str] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(table.rows):
        image = row["patientId"]
        if not image:
            raise table.error(i, "empty patientId", "every row needs an image id")
        if image in seen:
            raise table.error(i, f"image {image} appears again (first at line {table.lines[seen[image]]})",
                              "give one row per image with all its boxes in its PredictionString")
        seen[image] = i
        ids.append(image)
    tokens = [row["PredictionString"].split() for row in table.rows]
    counts = np.array([len(t) for t in tokens], dtype=np.intp)
    try:
        if (counts % PREDICTION_FIELDS).any():
            raise ValueError
        values = np.array([v for t in tokens for v in t], dtype=np.float64).reshape(-1, PREDICTION_FIELDS)
        if not np.isfinite(values).all() or (values[:, 3:] < 0).any():
            raise ValueError
    except ValueError:                      # find the first bad row and say what is wrong
        for i, row in enumerate(table.rows):
            parse_prediction_string(row["PredictionString"], table=table, index=i)
        raise
    image = np.repeat(np.arange(len(ids)), counts // PREDICTION_FIELDS)
    return ImageBoxes.from_flat(ids, image, values[:, 1:], values[:, 0])


def parse_prediction_string(text: str, *, table=None, index: int = 0) -> np.ndarray:
    """``"conf x y w h conf x y w h ..."`` -> ``(k, 5)`` array; a clear error if malformed."""
    tokens = text.split()
    def fail(what: str) -> InputError:
        hint = "write groups of five numbers 'confidence x y width height' separated by spaces"
        if table is None:
            return InputError(f"PredictionString {text!r}: {what}", hint=hint)
        return table.error(index, f"PredictionString {_short(text)!r}: {what}", hint)
    if len(tokens) % PREDICTION_FIELDS:
        raise fail(f"{len(tokens)} numbers, not a multiple of {PREDICTION_FIELDS}")
    try:
        values = np.array(tokens, dtype=np.float64).reshape(-1, PREDICTION_FIELDS)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise fail(f"{bad!r} is not a number") from None
    if not np.isfinite(values).all():
        raise fail("NaN or infinite values")
    if (values[:, 3:] < 0).any():
        raise fail("negative width or height")
    return values


def _check_box(box: list[float], table, index: int) -> None:
    if not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
        raise table.error(index, f"box {box} has a negative size or a non-finite value",
                          "width and height must be finite and >= 0")


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_boxes(path: str | os.PathLike) -> ImageBoxes:
    """Read either table form, chosen by its columns (truth has ``x``, predictions
    ``PredictionString``)."""
    table = read_table(path)
    if "PredictionString" in table.columns:
        return read_predictions(Path(path))
    return read_truth(Path(path))
