import itertools

import numpy as np
import pytest
from sklearn import metrics as sk

from medtool.metrics import classification as cls


def _random(seed, n=200, classes=2):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.2 * np.eye(classes)[truth]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    prob = np.round(prob, 2)                      # ties in scores, as real outputs have
    pred = prob.argmax(axis=1)
    return truth, pred, prob


@pytest.mark.parametrize("seed", range(4))
def test_binary_metrics_equal_sklearn(seed):
    truth, pred, prob = _random(seed)
    assert cls.accuracy(truth, pred) == pytest.approx(sk.accuracy_score(truth, pred))
    assert cls.balanced_accuracy(truth, pred, 2) == pytest.approx(sk.balanced_accuracy_score(truth, pred))
    assert cls.sensitivity(truth, pred, 2) == pytest.approx(sk.recall_score(truth, pred))
    assert cls.specificity(truth, pred, 2) == pytest.approx(sk.recall_score(truth, pred, pos_label=0))
    assert cls.f1(truth, pred, 2) == pytest.approx(sk.f1_score(truth, pred))
    assert cls.auc(truth, prob) == pytest.approx(sk.roc_auc_score(truth, prob[:, 1]), abs=1e-12)
    assert np.array_equal(cls.confusion_matrix(truth, pred, 2), sk.confusion_matrix(truth, pred))


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_metrics_equal_sklearn(seed):
    truth, pred, prob = _random(seed, n=300, classes=4)
    prob = prob / prob.sum(axis=1, keepdims=True)
    pred[:3] = 3                                    # make sure every class is predicted
    assert cls.balanced_accuracy(truth, pred, 4) == pytest.approx(sk.balanced_accuracy_score(truth, pred))
    assert cls.sensitivity(truth, pred, 4) == pytest.approx(sk.recall_score(truth, pred, average="macro"))
    assert cls.f1(truth, pred, 4) == pytest.approx(sk.f1_score(truth, pred, average="macro"))
    specificities = [sk.recall_score(truth == k, pred == k, pos_label=False) for k in range(4)]
    assert cls.specificity(truth, pred, 4) == pytest.approx(np.mean(specificities))
    assert cls.auc(truth, prob) == pytest.approx(
        sk.roc_auc_score(truth, prob, multi_class="ovr", average="macro"), abs=1e-12)
    assert np.array_equal(cls.confusion_matrix(truth, pred, 4), sk.confusion_matrix(truth, pred))


def test_undefined_values_are_nan():
    assert np.isnan(cls.binary_auc(np.ones(4, bool), np.arange(4)))
    assert np.isnan(cls.sensitivity(np.zeros(3, int), np.zeros(3, int), 2))
    assert np.isnan(cls.cindex([1, 2, 3], [0, 0, 0], [0.1, 0.2, 0.3]))


def reference_cindex(time, event, risk):
    """Harrell's C, written out pair by pair."""
    concordant = comparable = 0.0
    for i, j in itertools.permutations(range(len(time)), 2):
        if event[i] and time[i] < time[j]:
            comparable += 1
            concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return concordant / comparable


def test_cindex_by_hand():
    # times 1, 2, 3, 4; events at 1 and 3; 4 is censored
    time, event = [1, 2, 3, 4], [1, 0, 1, 0]
    risk = [0.9, 0.5, 0.7, 0.7]
    # comparable pairs: (1,2) (1,3) (1,4) from case 1; (3,4) from case 3
    # concordant: 0.9>0.5, 0.9>0.7, 0.9>0.7, 0.7=0.7 (half) -> 3.5 / 4
    assert cls.cindex(time, event, risk) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", range(3))
def test_cindex_equals_pairwise_reference(seed, monkeypatch):
    monkeypatch.setattr(cls, "CINDEX_BLOCK", 7)       # several blocks
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 30, 60).astype(float)      # tied times
    event = rng.random(60) < 0.6
    risk = np.round(rng.random(60) - time / 60, 1)    # tied risks, informative
    assert cls.cindex(time, event, risk) == pytest.approx(reference_cindex(time, event, risk))
