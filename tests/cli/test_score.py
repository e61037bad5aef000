import csv
import json

import numpy as np
import pytest
from sklearn import metrics as sk

from medtool.formats import load_volume, save_volume
from medtool.volume import Volume


def _error_lines(result):
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def lung_runs(phantom_dir, tmp_path):
    """Truth: the phantom's lung masks; run 'good' (one voxel layer off one side), 'shifted'
    (moved 3 columns, one case missing)."""
    truth = tmp_path / "truth"
    good, shifted = tmp_path / "good", tmp_path / "shifted"
    for folder in (truth, good, shifted):
        folder.mkdir()
    paths = sorted((phantom_dir / "truth").glob("*_lungs.nii.gz"))
    for i, path in enumerate(paths):
        case = path.name.replace("_lungs.nii.gz", "")
        volume = load_volume(path)
        save_volume(volume, truth / f"{case}.nii.gz")
        a = volume.array
        save_volume(volume.with_array(np.concatenate([a[:, :, 1:], a[:, :, :1] * 0], axis=2)), good / f"{case}.npz")
        if i:
            save_volume(volume.with_array(np.roll(a, 3, axis=2)), shifted / f"{case}.nii.gz")
    return truth, good, shifted, len(paths)


def test_segmentation_leaderboard_per_case_and_json(cli, lung_runs, tmp_path):
    truth, good, shifted, n = lung_runs
    per_case = tmp_path / "cases.csv"
    result = cli("score", "--metric", "dice,hd95", "--truth", truth, shifted, good,
                 "--per-case", per_case, "--bootstrap", "50", "--json")
    assert result.exit_code == 0, result.stderr
    board = json.loads(result.stdout)["leaderboard"]
    assert [row["prediction"] for row in board] == [str(good), str(shifted)]      # ranked by dice
    assert [row["rank"] for row in board] == [1, 2]
    assert board[0]["scores"]["dice"] > board[1]["scores"]["dice"]
    assert set(board[0]["scores"]) == {"dice", "dice[1]", "dice[2]", "hd95", "hd95[1]", "hd95[2]"}
    assert board[1]["missing"] == ["case_001"]
    low, high = board[0]["ci"]["dice"]
    assert low <= board[0]["scores"]["dice"] <= high
    assert "case_001" in result.stderr and "count as empty" in result.stderr
    with open(per_case) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * n * 2                                      # runs x cases x labels
    missing = [r for r in rows if r["prediction"] == str(shifted) and r["case_id"] == "case_001"]
    assert {r["flag"] for r in missing} == {"prediction missing"} and {r["dice"] for r in missing} == {"0.0"}
    dice = np.mean([float(r["dice"]) for r in rows if r["prediction"] == str(good)])
    assert dice == pytest.approx(board[0]["scores"]["dice"])
    # the table form names the runs in rank order
    table = cli("score", "-m", "dice", "-t", truth, shifted, good)
    assert table.exit_code == 0 and table.stdout.index(str(good)) < table.stdout.index(str(shifted))


def test_suffix_matches_named_masks_in_a_mixed_truth_folder(cli, phantom_dir, lung_runs, tmp_path):
    """--suffix _lungs: the phantom's truth folder (lungs and tumour masks) scores as it is, and
    predictions named case_xxx or case_xxx_lungs both match."""
    truth, good, _, n = lung_runs
    named = tmp_path / "named"
    named.mkdir()
    for path in sorted(good.glob("*.npz"))[1:]:
        save_volume(load_volume(path), named / f"{path.stem}_lungs.npz")
    direct = cli("score", "-m", "dice", "-t", truth, good, "--json")
    mixed = cli("score", "-m", "dice", "-t", phantom_dir / "truth", good, named, "--suffix", "_lungs", "--json")
    assert mixed.exit_code == 0, mixed.stderr
    board = {row["prediction"]: row for row in json.loads(mixed.stdout)["leaderboard"]}
    expected = json.loads(direct.stdout)["leaderboard"][0]["scores"]["dice"]
    assert board[str(good)]["scores"]["dice"] == pytest.approx(expected)
    assert board[str(good)]["missing"] == [] and board[str(named)]["missing"] == ["case_001"]
    assert board[str(named)]["extra"] == []


def test_segmentation_mismatch_is_one_line_and_exit_1(cli, lung_runs, tmp_path):
    truth, good, _, _ = lung_runs
    bad = tmp_path / "bad"
    bad.mkdir()
    case = sorted(truth.iterdir())[0]
    volume = load_volume(case)
    from medtool.volume import Volume

    save_volume(Volume(volume.array[:, :-1], volume.spacing, volume.origin, volume.direction), bad / case.name)
    result = cli("score", "-m", "dice", "-t", truth, bad, good)
    assert result.exit_code == 1
    errors = _error_lines(result)
    assert len(errors) == 1 and str(bad / case.name) in errors[0] and "differs from the truth's" in errors[0]
    assert "failed" in result.stdout and str(good) in result.stdout


def test_detection_scores_and_malformed_prediction(cli, phantom_dir, tmp_path):
    truth = phantom_dir / "cxr_boxes.csv"
    with open(truth) as handle:
        rows = list(csv.DictReader(handle))
    perfect = tmp_path / "perfect.csv"
    boxes = {}
    for row in rows:
        boxes.setdefault(row["patientId"], [])
        if row["Target"] == "1":
            boxes[row["patientId"]].append(f"0.9 {row['x']} {row['y']} {row['width']} {row['height']}")
    perfect.write_text("patientId,PredictionString\n" + "".join(f"{k},{' '.join(v)}\n" for k, v in boxes.items()))
    broken = tmp_path / "broken.csv"
    first = next(iter(boxes))
    broken.write_text(f"patientId,PredictionString\n{first},0.9 1 2 3\n")
    result = cli("score", "-m", "map-iou,coco-map", "-t", truth, perfect, broken, "--json")
    assert result.exit_code == 1
    board = json.loads(result.stdout)["leaderboard"]
    assert board[0]["prediction"] == str(perfect) and board[0]["rank"] == 1
    scores = board[0]["scores"]
    if any(boxes.values()):
        assert scores["map-iou"] == 1.0 and scores["coco-map"] == pytest.approx(1.0)
    assert board[1]["rank"] is None and board[1]["scores"] is None
    errors = _error_lines(result)
    assert len(errors) == 1 and f"{broken}: line 2: PredictionString" in errors[0]


def test_classification_equals_sklearn_and_cindex(cli, tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    truth = rng.integers(0, 2, n)
    prob = np.clip(truth * 0.3 + rng.random(n) * 0.7, 0, 1).round(3)
    time = rng.integers(1, 50, n)
    event = rng.integers(0, 2, n)
    (tmp_path / "truth.csv").write_text("case_id,label,months,died\n" + "".join(
        f"c{i},{truth[i]},{time[i]},{event[i]}\n" for i in range(n)))
    pred = (prob > 0.5).astype(int)
    (tmp_path / "pred.csv").write_text("case_id,prob_0,prob_1,pred\n" + "".join(
        f"c{i},{1 - prob[i]:.3f},{prob[i]:.3f},{pred[i]}\n" for i in reversed(range(n))))
    result = cli("score", "-m", "accuracy,balanced-accuracy,auc,sensitivity,specificity,f1,cindex",
                 "-t", tmp_path / "truth.csv", tmp_path / "pred.csv", "--time", "months", "--event", "died", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)["leaderboard"]
    s = row["scores"]
    assert s["accuracy"] == pytest.approx(sk.accuracy_score(truth, pred))
    assert s["balanced-accuracy"] == pytest.approx(sk.balanced_accuracy_score(truth, pred))
    assert s["auc"] == pytest.approx(sk.roc_auc_score(truth, prob))
    assert s["sensitivity"] == pytest.approx(sk.recall_score(truth, pred))
    assert s["specificity"] == pytest.approx(sk.recall_score(truth, pred, pos_label=0))
    assert s["f1"] == pytest.approx(sk.f1_score(truth, pred))
    assert row["confusion"]["matrix"] == sk.confusion_matrix(truth, pred).tolist()
    pairs = [(i, j) for i in range(n) for j in range(n) if event[i] and time[i] < time[j]]
    expected = np.mean([1.0 if prob[i] > prob[j] else 0.5 if prob[i] == prob[j] else 0.0 for i, j in pairs])
    assert s["cindex"] == pytest.approx(expected)
    # a classifier that skipped a case is refused, not scored on the rest
    (tmp_path / "short.csv").write_text("case_id,prob_0,prob_1\nc0,0.5,0.5\n")
    short = cli("score", "-m", "auc", "-t", tmp_path / "truth.csv", tmp_path / "short.csv")
    assert short.exit_code == 1
    errors = _error_lines(short)
    assert len(errors) == 1 and "no prediction for 79 of 80 cases" in errors[0]


def test_usage_errors(cli, tmp_path):
    result = cli("score", "-m", "dice,auc", "-t", tmp_path, tmp_path)
    assert result.exit_code == 2 and "different tasks" in result.stderr
    result = cli("score", "-m", "cindex", "-t", tmp_path / "t.csv", tmp_path / "p.csv")
    assert result.exit_code != 0 and len(_error_lines(result)) == 1


def test_brats_regions_on_the_brain_phantom(cli, tmp_path):
    """score --regions brats on phantom cases (truth in the BraTS layout, --suffix _seg): the
    voxel counts equal scikit-learn's on the flattened region masks."""
    from medtool.phantom.brats import write_brain_dataset

    data = tmp_path / "brats"
    write_brain_dataset(data, cases=2, seed=2, shape=40)
    pred = tmp_path / "pred"
    pred.mkdir()
    expected = {"sensitivity": [], "specificity": []}
    for path in sorted(data.glob("*/*_seg.nii.gz")):
        seg = load_volume(path)
        guess = np.roll(seg.array, 1, axis=2)
        save_volume(seg.with_array(guess), pred / path.name.replace("_seg", ""))
        t, p = np.isin(seg.array, (1, 3, 4)).ravel(), np.isin(guess, (1, 3, 4)).ravel()
        expected["sensitivity"].append(sk.recall_score(t, p))
        expected["specificity"].append(sk.recall_score(~t, ~p))
    result = cli("score", "-m", "dice,sensitivity,specificity,nsd,slice-dice,lesion-dice,lesion-f1",
                 "--regions", "brats", "--nsd-tolerance", "2", "--suffix", "_seg", "--lesion-dilation", "3", "--min-lesion", "50",
                 "-t", data, pred, "--json")
    assert result.exit_code == 0, result.stderr
    assert "regions: wt (whole tumour) = 1+2+3+4, tc (tumour core) = 1+3+4, et (enhancing tumour) = 4" in result.stderr
    out = json.loads(result.stdout)
    assert out["regions"] == {"wt": [1, 2, 3, 4], "tc": [1, 3, 4], "et": [4]}
    assert out["lesions"] == {"dilation": 3, "min_volume_mm3": 50.0} and out["nsd_tolerance_mm"] == 2.0
    scores = out["leaderboard"][0]["scores"]
    assert {k for k in scores if "[" in k} == {f"{m}[{r}]" for r in ("wt", "tc", "et") for m in
                                              ("dice", "sensitivity", "specificity", "nsd", "slice-dice", "lesion-dice",
                                               "lesion-f1")}
    assert scores["sensitivity[tc]"] == pytest.approx(np.mean(expected["sensitivity"]))
    assert scores["specificity[tc]"] == pytest.approx(np.mean(expected["specificity"]))
    assert 0 < scores["dice[et]"] < scores["dice[tc]"] < scores["dice[wt]"] < 1      # thin rim suffers most
    # the table: too many columns for one row per run, so one row per region under the mean
    table = cli("score", "-m", "dice,sensitivity,specificity,nsd,lesion-dice", "--regions", "brats",
                "--suffix", "_seg", "-t", data, pred)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "regions" in lines[0] and "dice[wt]" not in table.stdout
    first = {line.split()[0]: i for i, line in reversed(list(enumerate(lines))) if line.split()}
    assert first["wt"] < first["tc"] < first["et"]
    assert f"{scores['dice[et]']:.4f}" in lines[first["et"]]


def test_sensitivity_alone_scores_volumes_as_segmentation(cli, lung_runs):
    truth, good, _, _ = lung_runs
    result = cli("score", "-m", "sensitivity,specificity", "-t", truth, good, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["task"] == "segmentation" and "sensitivity[1]" in out["leaderboard"][0]["scores"]


def test_region_usage_errors(cli, lung_runs):
    truth, good, _, _ = lung_runs
    for args, words in ((("--regions", "brats", "--labels", "1"), "--labels and --regions"),
                        (("--regions", "wt=1+x"), "not a list of labels"),
                        (("--regions", "brats", "-m", "auc"), "different tasks")):
        result = cli("score", "-m", "dice", "-t", truth, good, *args)
        assert result.exit_code == 2, args
        assert len(_error_lines(result)) == 1 and words in result.stderr, result.stderr
    result = cli("score", "-m", "auc", "--regions", "brats", "-t", "truth.csv", "pred.csv")
    assert result.exit_code == 2 and "--regions is for segmentation" in result.stderr


def test_nsd_tolerance_default_is_the_library_default():
    from medtool.cli import load
    from medtool.metrics import NSD_TOLERANCE_MM

    command = load("score")
    assert next(p for p in command.params if p.name == "nsd_tolerance").default == NSD_TOLERANCE_MM


def test_per_slice_dice_table(cli, tmp_path):
    """--per-slice: one row per slice holding truth or prediction, each slice's Dice computed
    here slice by slice; their mean per case is the case's slice-dice."""
    rng = np.random.default_rng(4)
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    truth_dir.mkdir()
    pred_dir.mkdir()
    arrays = {}
    for case in ("a", "b"):
        truth = np.zeros((7, 16, 16), np.uint8)
        truth[1:5, 3:11, 4:12] = 1
        pred = np.where(rng.random(truth.shape) < 0.15, 0, truth).astype(np.uint8)
        pred[6, 2:4, 2:4] = 1                                  # a slice with prediction only
        arrays[case] = (truth, pred)
        save_volume(Volume(truth, (2.0, 1.0, 1.0)), truth_dir / f"{case}.nii.gz")
        save_volume(Volume(pred, (2.0, 1.0, 1.0)), pred_dir / f"{case}.nii.gz")
    out, cases = tmp_path / "slices.csv", tmp_path / "cases.csv"
    result = cli("score", "-m", "dice,slice-dice", "-t", truth_dir, pred_dir, "--per-slice", out, "--per-case", cases)
    assert result.exit_code == 0, result.stderr
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["prediction", "case_id", "label", "slice", "dice", "truth_voxels", "predicted_voxels"]
    with open(cases) as handle:
        per_case = {r["case_id"]: float(r["slice-dice"]) for r in csv.DictReader(handle)}
    for case, (truth, pred) in arrays.items():
        mine = [r for r in rows if r["case_id"] == case]
        expected = {k: 2 * np.sum((truth[k] == 1) & (pred[k] == 1)) / (np.sum(truth[k] == 1) + np.sum(pred[k] == 1))
                    for k in range(len(truth)) if (truth[k] == 1).any() or (pred[k] == 1).any()}
        assert [int(r["slice"]) for r in mine] == sorted(expected) == [1, 2, 3, 4, 6]
        for row in mine:
            assert float(row["dice"]) == pytest.approx(expected[int(row["slice"])])
            assert int(row["truth_voxels"]) == np.sum(truth[int(row["slice"])] == 1)
        assert per_case[case] == pytest.approx(np.mean(list(expected.values())))
    refused = cli("score", "-m", "dice", "-t", truth_dir, pred_dir, "--per-slice", tmp_path / "x.csv")
    assert refused.exit_code == 2 and "needs the metric slice-dice" in refused.stderr
