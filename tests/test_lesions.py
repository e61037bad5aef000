"""Lesion-wise scores: hand-computed cases and BraTS 2023's loop written out independently."""

import numpy as np
import pytest
from scipy import ndimage

from medtool.metrics.lesions import LESION_METRICS, LesionRule, components, lesion_scores, match_lesions


def _cube(shape, corner, size, value=True, out=None):
    out = np.zeros(shape, bool) if out is None else out
    out[tuple(slice(c, c + size) for c in corner)] = value
    return out


def brats_reference(truth, pred, spacing, dilation, threshold):
    """BraTS 2023's lesion-wise Dice and counts, as its evaluation script loops (one lesion at
    a time, full-grid masks, scipy.ndimage for labelling and dilation)."""
    full = ndimage.generate_binary_structure(truth.ndim, truth.ndim)
    struct = ndimage.generate_binary_structure(truth.ndim, 2)
    gt_cc, _ = ndimage.label(truth, structure=full)
    pred_cc, _ = ndimage.label(pred, structure=full)
    if dilation:
        dilated = ndimage.binary_dilation(truth, structure=struct, iterations=dilation)
    else:
        dilated = truth
    dil_cc, n_dil = ndimage.label(dilated, structure=full)
    combined = np.zeros_like(gt_cc)
    for comp in range(1, n_dil + 1):                 # truth lesions combined by the dilation
        combined[(dil_cc == comp) & (gt_cc > 0)] = comp
    voxel = float(np.prod(spacing))
    tp_components, rows = [], []
    for comp in range(1, combined.max() + 1):
        lesion = combined == comp
        if not lesion.any():
            continue
        roi = ndimage.binary_dilation(lesion, structure=struct, iterations=dilation) if dilation else lesion
        hits = np.unique(pred_cc[roi])
        hits = hits[hits != 0]
        tp_components += list(hits)
        matched = np.isin(pred_cc, hits) & (pred_cc > 0)
        dice = 2 * np.sum(matched & lesion) / (matched.sum() + lesion.sum())
        rows.append((lesion.sum() * voxel, dice, len(hits) > 0))
    fp = len(np.setdiff1d(np.unique(pred_cc[pred_cc > 0]), tp_components))
    kept = [r for r in rows if r[0] > threshold]
    denominator = len(kept) + fp
    lesion_dice = 1.0 if denominator == 0 else sum(r[1] for r in kept) / denominator
    return lesion_dice, sum(r[2] for r in kept), len(kept), fp


def test_hand_computed_two_lesions_one_missed_one_false_positive():
    shape = (8, 20, 20)
    truth = _cube(shape, (1, 1, 1), 3)                     # 27 voxels, found half-ish
    truth = _cube(shape, (1, 12, 12), 2, out=truth)        # 8 voxels, missed
    pred = _cube(shape, (1, 1, 1), 3)
    pred[1] = False                                        # 18 of the 27
    pred = _cube(shape, (6, 16, 2), 2, out=pred)          # far from any truth: false positive
    match = match_lesions(truth, pred, (1, 1, 1))
    assert match.truth_lesions == 2 and match.true_positives == 1 and match.false_positives == 1
    assert sorted(match.dice) == pytest.approx([0.0, 2 * 18 / (27 + 18)])
    scores = lesion_scores(match)
    assert scores["lesion-dice"] == pytest.approx((2 * 18 / 45 + 0) / 3)
    assert scores["lesion-sensitivity"] == 0.5 and scores["lesion-precision"] == 0.5
    assert scores["lesion-f1"] == 0.5 and scores["lesion-fp"] == 1.0


def test_min_volume_drops_small_truth_lesions_but_not_their_matches():
    shape = (6, 16, 16)
    truth = _cube(shape, (1, 1, 1), 4)                     # 64 voxels x 2 mm^3
    truth = _cube(shape, (1, 10, 10), 2, out=truth)        # 8 voxels = 16 mm^3
    pred = truth.copy()
    rule = LesionRule(min_volume_mm3=16.0)                 # "16 or less" is left out
    match = match_lesions(truth, pred, (2, 1, 1), rule=rule)
    assert list(match.counted) == [True, False] and match.false_positives == 0
    assert lesion_scores(match) == {"lesion-dice": 1.0, "lesion-sensitivity": 1.0, "lesion-precision": 1.0,
                                    "lesion-f1": 1.0, "lesion-fp": 0.0}


def test_dilation_merges_close_lesions_and_catches_near_misses():
    shape = (5, 20, 20)
    truth = _cube(shape, (1, 2, 2), 3)
    truth = _cube(shape, (1, 2, 7), 3, out=truth)          # 2 voxels of gap: one lesion with dilation 1
    pred = _cube(shape, (1, 2, 11), 2)                     # 1 voxel right of the second: near miss
    plain = match_lesions(truth, pred, (1, 1, 1))
    assert plain.truth_lesions == 2 and plain.true_positives == 0 and plain.false_positives == 1
    grown = match_lesions(truth, pred, (1, 1, 1), rule=LesionRule(dilation=2))
    assert grown.truth_lesions == 1 and grown.true_positives == 1 and grown.false_positives == 0
    assert grown.dice[0] == 0.0                           # matched, but no overlap with the truth


def test_diagonal_voxels_are_one_lesion():
    truth = np.zeros((3, 3, 3), bool)
    truth[0, 0, 0] = truth[1, 1, 1] = truth[2, 2, 2] = True
    assert components(truth)[1] == 1                       # 26-connectivity
    assert ndimage.label(truth)[1] == 3                    # scipy's default (6) would split it


@pytest.mark.parametrize("seed,dilation,threshold", [(0, 0, 0.0), (1, 1, 0.0), (2, 3, 20.0), (3, 1, 5.0),
                                                     (4, 2, 0.0)])
def test_equal_to_the_brats_loop_on_random_blobs(seed, dilation, threshold):
    rng = np.random.default_rng(seed)
    shape = (12, 28, 28)

    def blobs(count):
        mask = np.zeros(shape, bool)
        for _ in range(count):
            centre = rng.integers(2, np.array(shape) - 2)
            radius = rng.uniform(1.0, 3.5)
            grid = np.indices(shape).T - centre
            mask |= (np.sqrt((grid ** 2).sum(-1)) <= radius).T
        return mask

    truth = blobs(6)
    pred = truth ^ (rng.random(shape) < 0.02) & blobs(8) | blobs(3) & ~truth
    pred[components(truth)[0] == 1] = False                # one lesion missed (unless a blob covers it)
    spacing = (1.5, 1.0, 1.0)
    match = match_lesions(truth, pred, spacing, rule=LesionRule(dilation, threshold))
    dice, tp, n, fp = brats_reference(truth, pred, spacing, dilation, threshold)
    scores = lesion_scores(match)
    assert scores["lesion-dice"] == pytest.approx(dice)
    assert (match.true_positives, match.truth_lesions, match.false_positives) == (tp, n, fp)
    assert set(scores) == set(LESION_METRICS)


def test_2d_masks():
    truth = np.zeros((10, 10), bool)
    truth[1:3, 1:3] = truth[6:9, 6:9] = True
    pred = np.zeros_like(truth)
    pred[1:3, 1:3] = True
    scores = lesion_scores(match_lesions(truth, pred, (1, 1)))
    assert scores["lesion-sensitivity"] == 0.5 and scores["lesion-precision"] == 1.0
    assert scores["lesion-dice"] == pytest.approx(0.5)
