import math

import numpy as np
import pytest

from medtool import scoring
from medtool.errors import UsageError
from medtool.formats import save_volume
from medtool.volume import Volume


def test_parse_metrics():
    assert scoring.parse_metrics(["dice,hd95", "dice", "ASSD"]) == ["dice", "hd95", "assd"]
    with pytest.raises(UsageError, match="unknown metric 'dise'"):
        scoring.parse_metrics(["dise"])
    with pytest.raises(UsageError, match="different tasks"):
        scoring.parse_metrics(["dice", "auc"])
    with pytest.raises(UsageError, match="different tasks"):
        scoring.parse_metrics(["lesion-dice", "sensitivity", "auc"])


def test_sensitivity_and_specificity_take_the_task_of_their_company_or_of_the_truth():
    assert scoring.TASKS_OF["sensitivity"] == (scoring.SEGMENTATION, scoring.CLASSIFICATION)
    assert scoring.task_of(["dice", "sensitivity"]) == scoring.SEGMENTATION
    assert scoring.task_of(["sensitivity", "auc"]) == scoring.CLASSIFICATION
    assert scoring.task_of(["lesion-fp"]) == scoring.SEGMENTATION
    assert scoring.task_of(["sensitivity", "specificity"], "truth/") == scoring.SEGMENTATION
    assert scoring.task_of(["sensitivity"], "labels.CSV") == scoring.CLASSIFICATION
    assert scoring.task_of(["specificity"]) == scoring.CLASSIFICATION         # no truth: as before


def test_match_cases():
    assert scoring.match_cases(["a", "b", "c"], ["c", "a", "z"]) == (["b"], ["z"])


def test_rank_runs_direction_nan_and_failures():
    runs = [scoring.Run("low", {"hd95": 2.0}), scoring.Run("nan", {"hd95": math.nan}),
            scoring.Run("lowest", {"hd95": 1.0}), scoring.Run("broken", {"hd95": 0.1})]
    runs[3].failures.append(("x", UsageError("bad")))
    scoring.rank_runs(runs, "hd95")
    assert [(r.name, r.rank) for r in runs[:2]] == [("lowest", 1), ("low", 2)]
    assert {r.rank for r in runs[2:]} == {None}
    runs = [scoring.Run("a", {"dice": 0.5}), scoring.Run("b", {"dice": 0.9})]
    scoring.rank_runs(runs, "dice")
    assert [r.name for r in runs] == ["b", "a"]


def test_bootstrap_resamples_and_interval():
    draws = scoring.resamples(50, 200, seed=3)
    assert draws.shape == (200, 50) and np.array_equal(draws, scoring.resamples(50, 200, seed=3))
    values = np.random.default_rng(0).normal(10, 2, 50)
    low, high = scoring.interval(values[draws].mean(axis=1))
    # the percentile interval of the mean is close to mean +- 1.96 sd / sqrt(n)
    half = 1.96 * values.std() / np.sqrt(50)
    assert low == pytest.approx(values.mean() - half, abs=0.25 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.25 * half)
    assert all(math.isnan(v) for v in scoring.interval(np.full(5, np.nan)))


def _write_cases(folder, arrays, spacing=(2.0, 1.0, 1.0)):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        save_volume(Volume(array.astype(np.uint8), spacing), folder / f"{name}.nii.gz")


def test_segmentation_runs_per_label_means_missing_and_nan(tmp_path):
    from medpy.metric import binary as medpy_binary

    rng = np.random.default_rng(0)
    truth = {}
    for case in ("a", "b", "c"):
        mask = np.zeros((6, 16, 16), np.uint8)
        mask[1:5, 2:8, 2:9] = 1
        mask[1:5, 9:14, 8:14] = 2
        truth[case] = mask
    truth["c"][truth["c"] == 2] = 0                       # case c has no label 2
    pred = {k: np.where(rng.random(v.shape) < 0.1, 0, v) for k, v in truth.items()}
    pred["c"][0, 0, 0] = 2                                # label 2 predicted where the truth has none
    pred["a"][0, 15, 15] = 3                              # a label no truth has
    del pred["b"]                                         # missing prediction
    _write_cases(tmp_path / "truth", truth)
    _write_cases(tmp_path / "pred", pred)
    settings = scoring.Settings(["dice", "hd95", "volume-error"], bootstrap=50, seed=1)
    [run] = scoring.score(tmp_path / "truth", [tmp_path / "pred"], settings)
    assert run.ok and run.rank == 1 and run.missing == ["b"] and run.cases == 3
    assert run.extra_labels == [3] and "dice[3]" not in run.summary    # the truth's labels rank
    dice_a1 = medpy_binary.dc(pred["a"] == 1, truth["a"] == 1)
    dice_c1 = medpy_binary.dc(pred["c"] == 1, truth["c"] == 1)
    assert run.summary["dice[1]"] == pytest.approx((dice_a1 + 0 + dice_c1) / 3)    # b counts as empty
    dice_a2 = medpy_binary.dc(pred["a"] == 2, truth["a"] == 2)
    assert run.summary["dice[2]"] == pytest.approx((dice_a2 + 0 + 0) / 3)
    assert run.summary["dice"] == pytest.approx((run.summary["dice[1]"] + run.summary["dice[2]"]) / 2)
    hd_a1 = medpy_binary.hd95(pred["a"] == 1, truth["a"] == 1, voxelspacing=(2.0, 1.0, 1.0))
    row = next(r for r in run.per_case if r["case_id"] == "a" and r["label"] == 1)
    assert row["hd95"] == pytest.approx(hd_a1, abs=1e-6) and row["flag"] == ""
    flags = {(r["case_id"], r["label"]): r["flag"] for r in run.per_case}
    assert flags[("b", 1)] == scoring.FLAG_MISSING and flags[("c", 2)] == "truth empty"
    assert run.nan == {"volume-error[2]": ["c"]}           # relative error of an empty truth
    assert not math.isnan(run.summary["volume-error[2]"])
    low, high = run.ci["dice"]
    assert low <= run.summary["dice"] <= high and low < high


def test_regions_lesions_and_voxel_counts_through_the_runs(tmp_path):
    """Two cases scored as BraTS regions: every value equals its computation by hand."""
    from scipy import ndimage
    from sklearn.metrics import recall_score

    from medtool.metrics.lesions import LesionRule

    truth, pred = {}, {}
    for case in ("a", "b"):
        t = np.zeros((6, 20, 20), np.uint8)
        t[1:5, 2:12, 2:12] = 2                            # edema
        t[2:4, 4:10, 4:10] = 4                            # enhancing
        t[2:4, 6:8, 6:8] = 1                              # necrosis
        truth[case] = t
        p = t.copy()
        p[p == 1] = 3                                     # core still core
        pred[case] = p
    pred["b"][1:3, 15:18, 15:18] = 2                      # a false-positive lesion in b
    _write_cases(tmp_path / "truth", truth)
    _write_cases(tmp_path / "pred", pred)
    settings = scoring.Settings(["dice", "sensitivity", "specificity", "lesion-fp", "lesion-precision"],
                                regions={"wt": (1, 2, 3, 4), "tc": (1, 3, 4), "et": (4,)},
                                lesions=LesionRule(dilation=1))
    [run] = scoring.score(tmp_path / "truth", [tmp_path / "pred"], settings)
    assert run.ok and settings.task == scoring.SEGMENTATION
    assert {r["label"] for r in run.per_case} == {"wt", "tc", "et"}
    wt_t = {c: np.isin(truth[c], (1, 2, 3, 4)).ravel() for c in truth}
    wt_p = {c: np.isin(pred[c], (1, 2, 3, 4)).ravel() for c in pred}
    assert run.summary["sensitivity[wt]"] == pytest.approx(np.mean([recall_score(wt_t[c], wt_p[c]) for c in truth]))
    assert run.summary["specificity[wt]"] == pytest.approx(np.mean([recall_score(~wt_t[c], ~wt_p[c]) for c in truth]))
    assert run.summary["dice[tc]"] == 1.0 and run.summary["dice[et]"] == 1.0
    fp_b = ndimage.label(pred["b"] == 2)[1] - 1             # the edema shell, and the one far away
    assert fp_b == 1
    assert run.summary["lesion-fp[wt]"] == pytest.approx((0 + 1) / 2)
    assert run.summary["lesion-precision[wt]"] == pytest.approx((1 + 0.5) / 2)
    assert run.summary["lesion-fp[et]"] == 0.0
    with pytest.raises(UsageError, match="--labels and --regions"):
        scoring.score(tmp_path / "truth", [tmp_path / "pred"],
                      scoring.Settings(["dice"], labels=[1], regions={"wt": (1,)}))


def test_segmentation_shape_and_geometry_mismatch_fail_the_run(tmp_path):
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    _write_cases(tmp_path / "truth", {"a": mask, "b": mask})
    _write_cases(tmp_path / "shape", {"a": mask, "b": mask[:, :7]})
    _write_cases(tmp_path / "grid", {"a": mask}, spacing=(2.0, 1.0, 1.5))
    _write_cases(tmp_path / "good", {"a": mask, "b": mask})
    errors = []
    runs = scoring.score(tmp_path / "truth", [tmp_path / "shape", tmp_path / "grid", tmp_path / "good"],
                         scoring.Settings(["dice"]), on_error=errors.append)
    by_name = {r.name: r for r in runs}
    assert by_name[str(tmp_path / "good")].rank == 1 and by_name[str(tmp_path / "good")].summary["dice"] == 1
    assert "shape 4 x 7 x 8 differs from the truth's 4 x 8 x 8" in str(by_name[str(tmp_path / "shape")].failures[0][1])
    assert "geometry" in str(by_name[str(tmp_path / "grid")].failures[0][1])
    assert len(errors) == 2 and all(r.rank is None for r in runs if not r.ok)
