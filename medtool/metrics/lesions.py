"""Lesion-wise scores: truth lesions and predicted lesions as connected components, matched.

The rule is BraTS 2023's lesion-wise evaluation (Saluja et al., the challenge's
``BraTS-2023-Metrics``), vectorised:

1. Lesions are the connected components of a mask with full connectivity (26 neighbours in
   3D, 8 in 2D), in the truth and in the prediction.
2. The truth is dilated by :attr:`LesionRule.dilation` voxels (iterations of the
   18-neighbourhood, BraTS's structure); truth lesions that fall into one component of the
   dilated truth are one lesion (lesions closer than the dilation merge). With no dilation the
   truth lesions are the truth's components.
3. A predicted component *matches* a truth lesion when it overlaps the lesion's dilated region;
   a truth lesion is *detected* when some predicted component matches it; a predicted
   component that matches no truth lesion is a *false-positive lesion*.
4. The Dice of a truth lesion compares it with the union of the predicted components that
   match it (undilated truth); a missed lesion scores 0.
5. Truth lesions of :attr:`LesionRule.min_volume_mm3` or less (mm^3, from the voxel spacing)
   are left out of the scores (BraTS: 50 mm^3 for gliomas); components that match only them
   are not false positives. Predicted components are not filtered by size (as in BraTS).

Scores of one case (:func:`lesion_scores`), over the truth lesions that count:

* ``lesion-dice`` = sum of the lesions' Dice / (truth lesions + false-positive lesions);
  1 when there are neither (BraTS);
* ``lesion-sensitivity`` = detected truth lesions / truth lesions;
* ``lesion-precision`` = predicted components that match a truth lesion / predicted components;
* ``lesion-f1`` = the harmonic mean of the two (0 when both are 0);
* ``lesion-fp`` = the number of false-positive lesions (its mean over cases is false
  positives per case).

A ratio with nothing to count follows the Dice convention of :mod:`medtool.metrics`: no
truth lesions and no false-positive lesions gives sensitivity 1, no truth lesions and some false
positives 0; no predicted components gives precision 1 when there are no truth lesions
either, 0 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Lesion-wise metrics by name, in the order they are reported.
LESION_METRICS = ("lesion-dice", "lesion-sensitivity", "lesion-precision", "lesion-f1", "lesion-fp")
#: The one lesion-wise metric where smaller is better.
LOWER_IS_BETTER = frozenset({"lesion-fp"})
#: Connectivity of BraTS's dilation structure (scipy's ``generate_binary_structure(3, 2)``).
DILATION_CONNECTIVITY = 2


@dataclass(frozen=True)
class LesionRule:
    """How lesions are matched: the truth's dilation (voxels) and the smallest truth lesion
    that counts (mm^3: lesions of this volume or less are left out). BraTS 2023: gliomas
    ``LesionRule(3, 50)``, metastases ``LesionRule(1, 2)``."""

    dilation: int = 0
    min_volume_mm3: float = 0.0


@dataclass
class LesionMatch:
    """The lesions of one truth/prediction pair and how they match.

    ``truth_volume_mm3``, ``dice``, ``detected`` and ``counted`` have one entry per truth
    lesion; ``false_positive`` one per predicted component.
    """

    truth_volume_mm3: np.ndarray
    dice: np.ndarray
    detected: np.ndarray
    counted: np.ndarray
    false_positive: np.ndarray

    @property
    def truth_lesions(self) -> int:
        return int(self.counted.sum())

    @property
    def true_positives(self) -> int:
        return int((self.detected & self.counted).sum())

    @property
    def false_positives(self) -> int:
        return int(self.false_positive.sum())

    @property
    def predicted_lesions(self) -> int:
        return len(self.false_positive)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` with full connectivity: labels 1..n and n."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    return labels, int(count)


def match_lesions(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float], *,
                  rule: LesionRule = LesionRule()) -> LesionMatch:
    """Find and match the lesions of a binary truth and prediction (see the module's rule).

    Every count is a :func:`numpy.unique` / :func:`numpy.bincount` over label pairs; nothing
    loops over lesions or voxels.
    """
    from scipy import ndimage

    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    grown = truth
    if rule.dilation > 0:
        structure = ndimage.generate_binary_structure(truth.ndim, min(DILATION_CONNECTIVITY, truth.ndim))
        grown = ndimage.binary_dilation(truth, structure=structure, iterations=int(rule.dilation))
    regions, n = components(grown)                  # one region per truth lesion
    lesions = np.where(truth, regions, 0)
    predicted, m = components(pred)
    truth_size = np.bincount(lesions.ravel(), minlength=n + 1)[1:]
    pred_size = np.bincount(predicted.ravel(), minlength=m + 1)[1:]
    touch_i, touch_j = _pairs(regions, predicted, m)          # component j meets region i
    over_i, over_j, over_n = _pairs(lesions, predicted, m, counts=True)
    intersection = np.bincount(over_i, weights=over_n, minlength=n)
    matched_size = np.bincount(touch_i, weights=pred_size[touch_j], minlength=n)
    detected = np.bincount(touch_i, minlength=n) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(detected, 2.0 * intersection / (truth_size + matched_size), 0.0)
    false_positive = np.ones(m, bool)
    false_positive[touch_j] = False
    volume = truth_size * float(np.prod(np.asarray(spacing, dtype=np.float64)))
    return LesionMatch(volume, dice, detected, volume > rule.min_volume_mm3, false_positive)


def _pairs(first: np.ndarray, second: np.ndarray, m: int, *, counts: bool = False):
    """The distinct pairs ``(i - 1, j - 1)`` of non-zero labels that share a voxel (and how
    many voxels each pair shares)."""
    both = (first > 0) & (second > 0)
    codes = first[both].astype(np.int64) * (m + 1) + second[both]
    if counts:
        codes, shared = np.unique(codes, return_counts=True)
        return codes // (m + 1) - 1, codes % (m + 1) - 1, shared
    codes = np.unique(codes)
    return codes // (m + 1) - 1, codes % (m + 1) - 1


def lesion_scores(match: LesionMatch) -> dict[str, float]:
    """The lesion-wise metrics (:data:`LESION_METRICS`) of one matched case."""
    n, tp, fp, m = match.truth_lesions, match.true_positives, match.false_positives, match.predicted_lesions
    dice_sum = float(match.dice[match.counted].sum())
    dice = 1.0 if n + fp == 0 else dice_sum / (n + fp)
    sensitivity = tp / n if n else float(fp == 0)
    precision = (m - fp) / m if m else float(n == 0)
    f1 = 0.0 if sensitivity + precision == 0 else 2.0 * sensitivity * precision / (sensitivity + precision)
    return {"lesion-dice": dice, "lesion-sensitivity": sensitivity, "lesion-precision": precision,
            "lesion-f1": f1, "lesion-fp": float(fp)}
