"""Classification and survival metrics in NumPy (checked against scikit-learn in the tests).

Labels are class indices ``0..K-1`` into a list of class names. With two classes the second is
the positive one (``sensitivity``, ``specificity``, ``f1``, ``auc``); with more, those are macro
averages over the classes that occur in the truth or the predictions, as scikit-learn's
``average="macro"`` computes them (``auc``: one class against the rest, from each class's
probability). A value that is undefined on the data (AUC with one class present, sensitivity
without positives) is NaN, and reported as such.

``cindex`` is Harrell's concordance index: over the pairs whose shorter time ends in an event
(strictly shorter; equal times are not compared), the fraction where that case has the higher
predicted risk, equal risks counting one half.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

#: Classification metrics by name, in the order they are reported.
CLASSIFICATION_METRICS = ("accuracy", "balanced-accuracy", "auc", "sensitivity", "specificity",
                          "f1", "cindex")
#: Metrics that need class probabilities (the others need predicted labels), and survival data.
NEEDS_PROBABILITIES = frozenset({"auc"})
NEEDS_SURVIVAL = frozenset({"cindex"})
#: Pairs per block in the concordance index (bounds the memory of the pairwise comparison).
CINDEX_BLOCK = 2048


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """``(classes, classes)`` counts, rows the true class, columns the predicted class."""
    truth, pred = np.asarray(truth, np.intp), np.asarray(pred, np.intp)
    return np.bincount(truth * classes + pred, minlength=classes * classes).reshape(classes, classes)


def accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of cases predicted right."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    return float(np.mean(truth == pred)) if len(truth) else math.nan


def balanced_accuracy(truth: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """Mean recall over the classes present in the truth."""
    matrix = confusion_matrix(truth, pred, classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present])) if present.any() else math.nan


def _per_class(truth, pred, classes):
    matrix = confusion_matrix(truth, pred, classes)
    tp = np.diag(matrix).astype(float)
    fn = matrix.sum(axis=1) - tp
    fp = matrix.sum(axis=0) - tp
    tn = matrix.sum() - tp - fn - fp
    return tp, fp, fn, tn


def _ratio(numerator, denominator, undefined=math.nan):
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), undefined)


def _macro_or_positive(values_binary, values_macro, truth, pred, classes):
    if classes == 2:
        return float(values_binary[1])
    used = np.zeros(classes, bool)
    used[np.asarray(truth, np.intp)] = True
    used[np.asarray(pred, np.intp)] = True
    return float(np.mean(values_macro[used]))


def sensitivity(truth: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """Recall of the positive class (binary) or macro recall."""
    tp, fp, fn, tn = _per_class(truth, pred, classes)
    return _macro_or_positive(_ratio(tp, tp + fn), _ratio(tp, tp + fn, 0.0), truth, pred, classes)


def specificity(truth: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """True-negative rate of the positive class (binary) or its macro average."""
    tp, fp, fn, tn = _per_class(truth, pred, classes)
    return _macro_or_positive(_ratio(tn, tn + fp), _ratio(tn, tn + fp, 0.0), truth, pred, classes)


def f1(truth: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """F1 of the positive class (binary) or macro F1."""
    tp, fp, fn, tn = _per_class(truth, pred, classes)
    return _macro_or_positive(_ratio(2 * tp, 2 * tp + fp + fn), _ratio(2 * tp, 2 * tp + fp + fn, 0.0),
                              truth, pred, classes)


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); NaN with one class."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, float))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC: binary from the positive class's probability, else macro one-vs-rest."""
    truth = np.asarray(truth, np.intp)
    probabilities = np.asarray(probabilities, float)
    classes = probabilities.shape[1]
    if classes == 2:
        return binary_auc(truth == 1, probabilities[:, 1])
    values = [binary_auc(truth == k, probabilities[:, k]) for k in range(classes)]
    return float(np.mean(values))


def cindex(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index; NaN when no pair is comparable."""
    time, risk = np.asarray(time, float), np.asarray(risk, float)
    event = np.asarray(event, bool)
    concordant = 0.0
    comparable = 0
    for start in range(0, len(time), CINDEX_BLOCK):
        block = slice(start, start + CINDEX_BLOCK)
        first = event[block, None] & (time[block, None] < time[None, :])     # i ends first
        diff = risk[block, None] - risk[None, :]
        comparable += int(first.sum())
        concordant += float(np.sum(first & (diff > 0)) + 0.5 * np.sum(first & (diff == 0)))
    return concordant / comparable if comparable else math.nan


def metric_function(name: str, classes: int) -> Callable[..., float]:
    """``f(truth, pred, probabilities, time, event, risk) -> float`` for metric ``name``."""
    table: dict[str, Callable[..., float]] = {
        "accuracy": lambda t, p, *_: accuracy(t, p),
        "balanced-accuracy": lambda t, p, *_: balanced_accuracy(t, p, classes),
        "sensitivity": lambda t, p, *_: sensitivity(t, p, classes),
        "specificity": lambda t, p, *_: specificity(t, p, classes),
        "f1": lambda t, p, *_: f1(t, p, classes),
        "auc": lambda t, p, prob, *_: auc(t, prob),
        "cindex": lambda t, p, prob, time, event, risk: cindex(time, event, risk),
    }
    return table[name]
