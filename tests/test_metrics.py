import numpy as np
import pytest
from scipy.spatial.distance import pdist

from medtool.metrics import longest_axial_diameter


def test_rectangle_by_hand():
    mask = np.zeros((3, 10, 10), bool)
    mask[1, 2:5, 3:7] = True                 # rows 2..4, columns 3..6
    # farthest voxel centres: (2, 3) and (4, 6) -> (2 rows * 2 mm, 3 cols * 3 mm)
    assert longest_axial_diameter(mask, (5.0, 2.0, 3.0)) == pytest.approx(np.hypot(4.0, 9.0))


def test_largest_slice_wins_and_z_is_ignored():
    mask = np.zeros((3, 10, 10), bool)
    mask[0, 0, 0:3] = True                   # 2 mm
    mask[2, 0:8, 0] = True                   # 7 mm, a collinear line
    assert longest_axial_diameter(mask, (100.0, 1.0, 1.0)) == pytest.approx(7.0)


def test_empty_and_single_voxel():
    assert longest_axial_diameter(np.zeros((2, 4, 4), bool), (1, 1, 1)) == 0.0
    one = np.zeros((2, 4, 4), bool)
    one[1, 2, 2] = True
    assert longest_axial_diameter(one, (1, 1, 1)) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((4, 20, 20)) > 0.7
    spacing = (2.0, 0.7, 1.3)
    expected = max(pdist(np.argwhere(mask[k]) * [0.7, 1.3]).max() for k in range(4) if mask[k].sum() > 1)
    assert longest_axial_diameter(mask, spacing) == pytest.approx(expected)


# -- segmentation metrics against medpy ------------------------------------------------------
from medpy.metric import binary as medpy_binary  # noqa: E402

from medtool import metrics  # noqa: E402


def _blobs(rng, shape, p=0.55, smooth=2):
    """Random lumpy masks (smoothed noise), so that surfaces are not trivial."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(rng.random(shape), size=smooth * 2 + 1) > p


@pytest.mark.parametrize("seed", range(6))
def test_dice_hd95_assd_equal_medpy(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 30, 26) if seed % 2 else (40, 33)
    spacing = (2.5, 0.7, 1.3)[-len(shape):]
    truth = _blobs(rng, shape)
    pred = _blobs(rng, shape, p=0.53)
    if seed == 3:                    # one mask far inside the other's bounding box corner
        pred[:] = False
        pred[0, 0, 0] = True
    assert truth.any() and pred.any()
    score = metrics.score_masks(truth, pred, spacing)
    assert score.flag == ""
    assert score.values["dice"] == pytest.approx(medpy_binary.dc(pred, truth), abs=1e-12)
    assert score.values["jaccard"] == pytest.approx(medpy_binary.jc(pred, truth), abs=1e-12)
    assert score.values["hd95"] == pytest.approx(medpy_binary.hd95(pred, truth, voxelspacing=spacing), abs=1e-6)
    assert score.values["assd"] == pytest.approx(medpy_binary.assd(pred, truth, voxelspacing=spacing), abs=1e-6)
    assert score.values["volume-error"] == pytest.approx(abs(medpy_binary.ravd(pred, truth)), abs=1e-12)
    assert metrics.hd95(truth, pred, spacing) == score.values["hd95"]


def test_masks_touching_the_array_border_equal_medpy():
    rng = np.random.default_rng(11)
    truth = _blobs(rng, (10, 20, 20), p=0.45)
    pred = np.roll(truth, 3, axis=2)
    assert truth[:, :, 0].any() and pred[:, :, -1].any()
    spacing = (3.0, 0.8, 0.8)
    score = metrics.score_masks(truth, pred, spacing, ("hd95", "assd"))
    assert score.values["hd95"] == pytest.approx(medpy_binary.hd95(pred, truth, voxelspacing=spacing), abs=1e-6)
    assert score.values["assd"] == pytest.approx(medpy_binary.assd(pred, truth, voxelspacing=spacing), abs=1e-6)


def test_hand_computed_cubes():
    truth = np.zeros((1, 10, 10), bool)
    truth[0, 2:6, 2:6] = True                 # 16 voxels
    pred = np.zeros_like(truth)
    pred[0, 2:6, 4:8] = True                  # shifted 2 columns: overlap 8
    score = metrics.score_masks(truth, pred, (1.0, 1.0, 2.0))
    assert score.values["dice"] == pytest.approx(0.5)
    assert score.values["jaccard"] == pytest.approx(8 / 24)
    assert score.values["volume-error"] == 0.0
    assert score.values["recist"] == 0.0
    # on one slice every voxel is on the surface; truth columns 2, 3 are 2 and 1 columns
    # (4 and 2 mm) from pred column 4, columns 4, 5 are pred voxels (0); the same mirrored back
    d = np.array([4, 2, 0, 0] * 4, float)
    assert score.values["assd"] == pytest.approx(d.mean())
    assert score.values["hd95"] == pytest.approx(np.percentile(np.r_[d, d], 95))


def test_empty_mask_conventions():
    empty = np.zeros((4, 8, 8), bool)
    full = empty.copy()
    full[1:3, 2:5, 2:5] = True
    spacing = (2.0, 1.0, 1.0)
    worst = np.sqrt((3 * 2.0) ** 2 + 7 ** 2 + 7 ** 2)
    assert metrics.worst_distance(empty.shape, spacing) == pytest.approx(worst)

    both = metrics.score_masks(empty, empty, spacing)
    assert both.flag == metrics.FLAG_BOTH_EMPTY
    assert both.values == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0,
                           "volume-error": 0.0, "recist": 0.0, "sensitivity": 1.0, "specificity": 1.0,
                           "slice-dice": 1.0, "lesion-dice": 1.0, "lesion-sensitivity": 1.0,
                           "lesion-precision": 1.0, "lesion-f1": 1.0, "lesion-fp": 0.0}
    missed = metrics.score_masks(full, empty, spacing)
    assert missed.flag == metrics.FLAG_PRED_EMPTY
    assert missed.values["dice"] == 0 and missed.values["jaccard"] == 0
    assert missed.values["hd95"] == pytest.approx(worst) and missed.values["assd"] == pytest.approx(worst)
    assert missed.values["volume-error"] == 1.0 and missed.values["recist"] == 1.0
    assert missed.values["sensitivity"] == 0 and missed.values["specificity"] == 1
    assert missed.values["lesion-sensitivity"] == 0 and missed.values["lesion-precision"] == 0
    invented = metrics.score_masks(empty, full, spacing)
    assert invented.flag == metrics.FLAG_TRUTH_EMPTY
    assert invented.values["dice"] == 0 and invented.values["hd95"] == pytest.approx(worst)
    assert np.isnan(invented.values["volume-error"]) and np.isnan(invented.values["recist"])
    assert invented.values["sensitivity"] == 0 and invented.values["specificity"] == 1 - 18 / (256 - 0)
    assert invented.values["lesion-fp"] == 1 and invented.values["lesion-dice"] == 0


def test_recist_relative_error():
    truth = np.zeros((3, 20, 20), bool)
    truth[1, 5, 2:12] = True                  # 9 voxels apart -> 9 * 0.5 mm
    pred = np.zeros_like(truth)
    pred[2, 5, 2:8] = True                    # 5 * 0.5 mm
    score = metrics.score_masks(truth, pred, (5.0, 0.5, 0.5), ("recist",))
    assert score.values == {"recist": pytest.approx(abs(2.5 - 4.5) / 4.5)}


def test_score_labels_per_label_and_absent_labels():
    truth = np.zeros((2, 6, 6), np.uint8)
    truth[:, :3, :3] = 1
    truth[:, 3:, 3:] = 2
    pred = truth.copy()
    pred[:, 3:, 3:] = 0                       # label 2 missed entirely
    pred[0, 0, 5] = 3                         # a label the truth does not have
    scores = metrics.score_labels(truth, pred, (1, 1, 1), ("dice",))
    assert sorted(scores) == [1, 2, 3]
    assert scores[1].values["dice"] == 1.0 and scores[1].flag == ""
    assert scores[2].values["dice"] == 0.0 and scores[2].flag == metrics.FLAG_PRED_EMPTY
    assert scores[3].flag == metrics.FLAG_TRUTH_EMPTY
    chosen = metrics.score_labels(truth, pred, (1, 1, 1), ("dice",), labels=[1, 4])
    assert chosen[4].flag == metrics.FLAG_BOTH_EMPTY and chosen[4].values["dice"] == 1.0
    assert metrics.present_labels(truth) == {0, 1, 2}
    assert metrics.present_labels(truth.astype(np.int32) - 1) == {-1, 0, 1}


# -- sensitivity, specificity, per-slice Dice, label counts ------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_sensitivity_specificity_equal_sklearn_per_label(seed):
    from sklearn.metrics import confusion_matrix, recall_score

    rng = np.random.default_rng(seed)
    truth = rng.choice(5, size=(6, 9, 11), p=[0.6, 0.1, 0.1, 0.1, 0.1]).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.3, rng.integers(0, 5, truth.shape), truth).astype(np.uint8)
    scores = metrics.score_labels(truth, pred, (1, 1, 1), ("sensitivity", "specificity", "dice"))
    for label in range(1, 5):
        t, p = (truth == label).ravel(), (pred == label).ravel()
        tn, fp, fn, tp = confusion_matrix(t, p, labels=[False, True]).ravel()
        assert scores[label].values["sensitivity"] == pytest.approx(recall_score(t, p))
        assert scores[label].values["specificity"] == pytest.approx(recall_score(~t, ~p))
        assert scores[label].values["specificity"] == pytest.approx(tn / (tn + fp))
        assert scores[label].values["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # the counts-only path and the mask path agree
    masks = metrics.score_labels(truth, pred, (1, 1, 1), ("sensitivity", "specificity", "dice", "hd95"))
    for label in range(1, 5):
        for name in ("sensitivity", "specificity", "dice"):
            assert masks[label].values[name] == pytest.approx(scores[label].values[name])


def test_confusion_equals_sklearn_with_gaps_in_the_labels():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(7)
    truth = rng.choice([0, 2, 7, 300], size=(5, 6, 7)).astype(np.int32)
    pred = rng.choice([0, 2, 7, 9], size=truth.shape).astype(np.int32)
    matrix, index = metrics.confusion(truth, pred)
    values = sorted(index, key=index.get)
    assert values == [0, 2, 7, 9, 300]
    assert np.array_equal(matrix, confusion_matrix(truth.ravel(), pred.ravel(), labels=values))


def test_slice_dice_by_hand():
    truth = np.zeros((4, 5, 5), bool)
    pred = np.zeros_like(truth)
    truth[0, :2, :2] = True                   # slice 0: truth 4, pred 2 of them -> 2*2/6
    pred[0, :1, :2] = True
    pred[1, 0, 0] = True                      # slice 1: only predicted -> 0
    truth[2, 1:3, 1:3] = True                 # slice 2: equal -> 1
    pred[2, 1:3, 1:3] = True                  # slice 3: neither -> not counted
    expected = (4 / 6 + 0 + 1) / 3
    assert metrics.slice_dice(truth, pred) == pytest.approx(expected)
    assert metrics.score_masks(truth, pred, (1, 1, 1), ("slice-dice",)).values["slice-dice"] == pytest.approx(expected)
    assert metrics.slice_dice(truth[0], pred[0]) == pytest.approx(metrics.dice(truth[0], pred[0]))
    assert metrics.slice_dice(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_slice_dice_is_the_mean_of_per_slice_dice(seed=3):
    rng = np.random.default_rng(seed)
    truth = rng.random((7, 12, 12)) < 0.2
    pred = rng.random((7, 12, 12)) < 0.2
    truth[4], pred[4] = False, False
    per_slice = [metrics.dice(t, p) for t, p in zip(truth, pred) if t.any() or p.any()]
    assert len(per_slice) == 6
    assert metrics.slice_dice(truth, pred) == pytest.approx(np.mean(per_slice))


def test_score_regions_nests_labels():
    from medtool.metrics.regions import REGION_SETS

    truth = np.zeros((3, 8, 8), np.uint8)
    truth[1, 1:7, 1:7] = 2                    # edema
    truth[1, 2:6, 2:6] = 4                    # enhancing
    truth[1, 3:5, 3:5] = 1                    # necrosis
    pred = truth.copy()
    pred[pred == 1] = 3                       # necrosis called non-enhancing: still core
    pred[1, 2, 2:6] = 2                       # 4 enhancing voxels called edema: still whole tumour
    scores = metrics.score_regions(truth, pred, (1, 1, 1), ("dice", "sensitivity"), REGION_SETS["brats"])
    assert list(scores) == ["wt", "tc", "et"]
    assert scores["wt"].values["dice"] == 1.0
    assert scores["tc"].values["dice"] == pytest.approx(2 * 12 / (16 + 12))
    assert scores["et"].values["dice"] == pytest.approx(2 * 8 / (12 + 8))
    assert scores["et"].values["sensitivity"] == pytest.approx(8 / 12)
    per_label = metrics.score_labels(truth, pred, (1, 1, 1), ("dice",))
    assert per_label[1].values["dice"] == 0.0 and per_label[3].flag == metrics.FLAG_TRUTH_EMPTY


# -- normalised surface Dice -------------------------------------------------------------------
def _nsd_written_out(truth, pred, spacing, tau):
    """Nikolov et al.'s surface Dice on voxel surfaces, from the published formula: surfaces by
    erosion (medpy's), distances to the other surface by a Euclidean distance transform of the
    whole grid (not medtool's k-d tree on a box)."""
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(truth.ndim, 1)
    s_t = truth ^ ndimage.binary_erosion(truth, structure=cross, border_value=0)
    s_p = pred ^ ndimage.binary_erosion(pred, structure=cross, border_value=0)
    d_to_t = ndimage.distance_transform_edt(~s_t, sampling=spacing)
    d_to_p = ndimage.distance_transform_edt(~s_p, sampling=spacing)
    return ((d_to_t[s_p] <= tau).sum() + (d_to_p[s_t] <= tau).sum()) / (s_p.sum() + s_t.sum())


@pytest.mark.parametrize("seed", range(3))
def test_nsd_equals_the_formula_written_out(seed):
    rng = np.random.default_rng(seed)
    spacing = (2.5, 0.8, 1.1)
    truth = np.zeros((10, 24, 24), bool)
    truth[2:8, 4:18, 5:20] = True
    pred = np.roll(truth, (rng.integers(-1, 2), rng.integers(-3, 4), rng.integers(-3, 4)), axis=(0, 1, 2))
    pred ^= rng.random(truth.shape) < 0.03
    for tau in (0.5, 1.0, 2.0, 3.0):
        expected = _nsd_written_out(truth, pred, spacing, tau)
        assert metrics.nsd(truth, pred, spacing, tolerance_mm=tau) == pytest.approx(expected, abs=1e-12)
        assert 0 < expected < 1


def test_nsd_by_hand_and_its_empty_conventions():
    truth = np.zeros((8, 12), bool)
    truth[2:6, 2:6] = True                       # a 4 x 4 square: 12 surface voxels
    pred = np.roll(truth, 2, axis=1)             # moved 2 columns (2 mm at 1 mm spacing)
    # of each surface's 12 voxels, 4 lie on the other surface (rows 2 and 5 where the squares
    # overlap), 4 more within 1 mm of it, and the last 4 (the far side) 2 mm away
    assert metrics.nsd(truth, pred, (1, 1), tolerance_mm=0.5) == pytest.approx(4 / 12)
    assert metrics.nsd(truth, pred, (1, 1), tolerance_mm=1.0) == pytest.approx(8 / 12)
    assert metrics.nsd(truth, pred, (1, 1), tolerance_mm=2.0) == 1.0
    assert metrics.nsd(truth, pred, (1, 1), tolerance_mm=1.0) == pytest.approx(_nsd_written_out(truth, pred, (1, 1), 1.0))
    empty = np.zeros_like(truth)
    assert metrics.nsd(empty, empty, (1, 1)) == 1.0 and metrics.nsd(truth, empty, (1, 1)) == 0.0
