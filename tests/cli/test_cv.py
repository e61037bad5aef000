"""``train <task> --cv`` for segmentation and detection (classification: test_train_classify.py),
the whole-run --max-minutes, and ``predict RUN`` averaging the folds (nnU-Net's ensemble)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medtool.formats import load_volume
from medtool.train import load_checkpoint
from tests.layout_fixtures import write_nnunet

TINY = ("--dim", "2d", "--width", "4", "--depth", "2", "--epochs", "1", "--steps", "1", "--batch-size", "2")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def segment_cv(tmp_path_factory):
    """A 2-fold --cv segmentation run on a four-case nnU-Net dataset (one test case left out)."""
    from typer.testing import CliRunner

    from medtool.cli import app

    root = tmp_path_factory.mktemp("cv")
    dataset = write_nnunet(root, cases=5)
    folds = root / "folds.csv"
    folds.write_text("case_id,fold\nbox_000,0\nbox_001,1\nbox_002,0\nbox_003,1\nbox_004,test\n")
    result = CliRunner().invoke(app, ["train", "segment", "--dataset", str(dataset), "--folds", str(folds), "--cv",
                                      *TINY, "--max-minutes", "5", "--json", "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return dataset, folds, root / "run", json.loads(result.stdout)


def test_segment_cv_writes_out_of_fold_label_volumes_and_their_dice(segment_cv):
    dataset, _, run, summary = segment_cv
    assert summary["task"] == "segment" and summary["folds"] == 2 and summary["cases"] == 4
    rows = _rows(run / "oof.csv")
    assert [r["case_id"] for r in rows] == ["box_000", "box_001", "box_002", "box_003"]    # never the test case
    assert [r["fold"] for r in rows] == ["0", "1", "0", "1"]
    for row in rows:
        pred = load_volume(row["output"])
        truth = load_volume(dataset / "labelsTr" / f"{row['case_id']}.nii.gz")
        assert pred.same_grid(truth)                                  # on the case's own grid
        for value, name in ((1, "organ"), (2, "lesion")):
            t, p = truth.array == value, pred.array == value
            expected = 2 * (t & p).sum() / (t.sum() + p.sum()) if (t.any() or p.any()) else np.nan
            assert float(row[f"dice_{name}"]) == pytest.approx(expected, nan_ok=True)
    organ = np.array([float(r["dice_organ"]) for r in rows])
    assert summary["pooled"]["dice_organ"] == pytest.approx(np.nanmean(organ))
    per_fold = [f["dice_organ"] for f in summary["per_fold"]]
    assert summary["metrics"]["dice_organ"]["mean"] == pytest.approx(np.mean(per_fold))


def test_segment_cv_folds_share_one_plan_and_split_the_time(segment_cv):
    _, _, run, _ = segment_cv
    first, second = (load_checkpoint(run / f"fold_{k}" / "last.pt") for k in (0, 1))
    for key in ("spacing", "patch", "normalize", "classes"):
        assert first["recipe"][key] == second["recipe"][key]
    budget = [c["training"]["config"]["max_minutes"] for c in (first, second)]
    assert budget[0] == pytest.approx(2.5, abs=0.01)               # half of 5 minutes for the first of two
    assert 2.0 < budget[1] <= 5.0 - budget[0] + 2.5                 # what was left, for the last


def test_predict_on_the_cv_run_averages_the_fold_probabilities(cli, segment_cv, tmp_path):
    dataset, _, run, _ = segment_cv
    test = dataset / "imagesTr" / "box_004_0000.nii.gz"
    result = cli("predict", run, test, tmp_path / "ensemble", "--probabilities", "--keep-largest", "0")
    assert result.exit_code == 0, result.stderr
    assert "ensemble of 2 folds (fold_0, fold_1)" in " ".join(result.stderr.split())
    singles = []
    for k in (0, 1):
        assert cli("predict", run / f"fold_{k}" / "last.pt", test, tmp_path / f"fold{k}", "--probabilities").exit_code == 0
        singles.append(load_volume(tmp_path / f"fold{k}" / "box_004_prob_organ.nii.gz").array)
    ensemble = load_volume(tmp_path / "ensemble" / "box_004_prob_organ.nii.gz").array
    np.testing.assert_allclose(ensemble, np.mean(singles, axis=0), atol=1e-6)
    assert np.abs(singles[0] - singles[1]).max() > 1e-3              # the folds' models differ
    labels = load_volume(tmp_path / "ensemble" / "box_004.nii.gz").array
    probs = [np.mean([load_volume(tmp_path / f"fold{k}" / f"box_004_prob_{n}.nii.gz").array for k in (0, 1)], axis=0)
             for n in ("organ", "lesion")]
    background = 1 - probs[0] - probs[1]
    np.testing.assert_array_equal(labels, np.argmax([background, *probs], axis=0))


def test_classify_ensemble_is_the_mean_of_the_folds(cli, tmp_path):
    from tests.test_checkpoints import classify_inputs

    crops = classify_inputs(tmp_path / "crops")           # six volumes c0..c5 and their labels.csv
    (tmp_path / "labels.csv").write_bytes((crops / "labels.csv").read_bytes())
    (tmp_path / "folds.csv").write_text("case_id,fold\n" + "".join(f"c{i},{i // 3}\n" for i in range(6)))
    result = cli("train", "classify", "--images", crops, "--labels", tmp_path / "labels.csv", "--folds",
                 tmp_path / "folds.csv", "--cv", "--model", "simple3d", "--width", "4", "--epochs", "1",
                 "--normalize", "zscore", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    tables = []
    for name in ("run", "run/fold_0/last.pt", "run/fold_1/last.pt"):
        out = tmp_path / f"{name.replace('/', '_')}.csv"
        assert cli("predict", tmp_path / name, crops, out).exit_code == 0
        tables.append(np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in _rows(out)]))
    np.testing.assert_allclose(tables[0], (tables[1] + tables[2]) / 2, atol=1e-6)


def test_detect_cv_on_the_rsna_layout(cli, tmp_path):
    """stage_2_train_images/<patientId>.dcm and the Kaggle box table (several rows per patient):
    folds from the table, train detect --cv, the out-of-fold submission scored per fold."""
    from medtool.phantom import write_dataset

    write_dataset(tmp_path / "ph", cases=1, seed=6, shape=48, cxr=6)   # 3 of 6 positive, one with two boxes
    images = tmp_path / "stage_2_train_images"
    images.mkdir()
    for path in (tmp_path / "ph" / "cxr").iterdir():
        (images / path.name).write_bytes(path.read_bytes())
    table = tmp_path / "stage_2_train_labels.csv"
    table.write_text((tmp_path / "ph" / "cxr_boxes.csv").read_text())
    result = cli("folds", table, tmp_path / "folds.csv", "--id-column", "patientId", "--stratify", "Target", "--k", "2")
    assert result.exit_code == 0, result.stderr
    folds = {r["case_id"]: r["fold"] for r in _rows(tmp_path / "folds.csv")}
    assert len(folds) == 6
    result = cli("train", "detect", "--images", images, "--boxes", table, "--folds", tmp_path / "folds.csv", "--cv",
                 "--model", "resnet18-fpn", "--fpn-width", "16", "--size", "64", "--batch-size", "2", "--steps", "1",
                 "--epochs", "1", "--augment", "none", "--json", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = _rows(tmp_path / "run" / "oof.csv")
    assert sorted(r["patientId"] for r in rows) == sorted(folds) and all(r["fold"] == folds[r["patientId"]] for r in rows)
    # each fold's map-iou is what score says of that fold's out-of-fold boxes
    for fold in summary["per_fold"]:
        scored = cli("score", "--truth", table, tmp_path / "run" / "oof" / f"fold_{fold['fold']}.csv",
                     "--metric", "map-iou", "--folds", tmp_path / "folds.csv", "--fold", str(fold["fold"]), "--json")
        assert scored.exit_code == 0, scored.stderr
        board = json.loads(scored.stdout)["leaderboard"][0]
        assert board["cases"] == 3 and board["scores"]["map-iou"] == pytest.approx(fold["map_iou"], nan_ok=True)
    # one fold's model on its fold, and a folder of submissions scored on that fold only
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "oof_fold_0.csv").write_bytes((tmp_path / "run" / "oof" / "fold_0.csv").read_bytes())
    result = cli("predict", tmp_path / "run" / "fold_0" / "last.pt", images, subs / "fold_0_again.csv",
                 "--folds", tmp_path / "folds.csv", "--fold", "0")
    assert result.exit_code == 0, result.stderr
    assert len(_rows(subs / "fold_0_again.csv")) == 3
    scored = cli("score", "--truth", table, subs, "--metric", "map-iou", "--folds", tmp_path / "folds.csv",
                 "--fold", "0", "--json")
    assert scored.exit_code == 0, scored.stderr
    board = json.loads(scored.stdout)["leaderboard"]
    assert len(board) == 2 and all(row["cases"] == 3 and row["missing"] == [] for row in board)
    assert board[0]["scores"]["map-iou"] == pytest.approx(board[1]["scores"]["map-iou"], nan_ok=True)
    result = cli("predict", tmp_path / "run", images, tmp_path / "sub.csv")
    assert result.exit_code == 2 and "averaging detect folds is not available" in result.stderr
