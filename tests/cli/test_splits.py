"""Hold-out splits through every command: folds --test -> train --folds --fold K -> predict and
score --folds --fold test, on exactly the test cases; score of a folder of submissions, and
--cases restricting to a table's cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def lctsc_like(tmp_path_factory):
    """Six phantom CT cases as HU volumes and their lung truth."""
    from medtool.phantom import write_dataset

    root = tmp_path_factory.mktemp("splits")
    write_dataset(root / "data", cases=6, seed=43, shape=48, cxr=0)
    return root / "data"


def test_a_test_split_flows_from_folds_through_train_predict_and_score(cli, tmp_path, lctsc_like):
    hu = tmp_path / "hu"
    assert cli("dicom2npy", lctsc_like / "ct", hu, "--hu").exit_code == 0
    result = cli("folds", hu, tmp_path / "folds.csv", "--k", "2", "--test", "0.34")
    assert result.exit_code == 0, result.stderr
    folds = {r["case_id"]: r["fold"] for r in _rows(tmp_path / "folds.csv")}
    test = sorted(c for c, f in folds.items() if f == "test")
    assert len(test) == 2 and len(folds) == 6
    result = cli("train", "--task", "segment", "--images", hu, "--masks", lctsc_like / "truth",
                 "--mask-suffix", "_lungs", "--folds", tmp_path / "folds.csv", "--fold", "0",
                 "--dim", "2d", "--width", "4", "--depth", "2", "--epochs", "1", "--steps", "1",
                 "--batch-size", "2", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    zero = sum(1 for f in folds.values() if f == "0")
    assert f"{4 - zero} training / {zero} validation cases" in " ".join(result.stderr.split())

    result = cli("predict", tmp_path / "run" / "last.pt", hu, tmp_path / "pred", "--suffix", "_lungs",
                 "--folds", tmp_path / "folds.csv", "--fold", "test")
    assert result.exit_code == 0, result.stderr
    assert "predicting fold test of" in result.stderr
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.npy")) == [f"{c}_lungs.npy" for c in test]

    result = cli("score", "--truth", lctsc_like / "truth", "--suffix", "_lungs", tmp_path / "pred",
                 "--metric", "dice", "--folds", tmp_path / "folds.csv", "--fold", "test", "--json")
    assert result.exit_code == 0, result.stderr
    board = json.loads(result.stdout)["leaderboard"][0]
    assert board["cases"] == 2 and board["missing"] == [] and board["extra"] == []
    assert "scored only fold test of" in result.stderr and ": 2 cases" in result.stderr
    # without the selection the four cases with no prediction would count as empty masks
    whole = cli("score", "--truth", lctsc_like / "truth", "--suffix", "_lungs", tmp_path / "pred",
                "--metric", "dice", "--json")
    assert len(json.loads(whole.stdout)["leaderboard"][0]["missing"]) == 4


def test_score_a_folder_of_submissions_restricted_to_a_fold(cli, tmp_path):
    truth = tmp_path / "boxes.csv"
    truth.write_text("patientId,x,y,width,height,Target\na,10,10,20,20,1\nb,,,,,0\nc,5,5,10,10,1\n"
                     "c,40,40,10,10,1\nd,,,,,0\n")
    (tmp_path / "folds.csv").write_text("case_id,fold\na,0\nb,0\nc,1\nd,1\n")
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "perfect_on_a.csv").write_text("patientId,PredictionString\na,0.9 10 10 20 20\nb,\n")
    (subs / "nothing.csv").write_text("patientId,PredictionString\na,\nb,\nc,\nd,\n")
    result = cli("score", "--truth", truth, subs, "--metric", "map-iou", "--folds", tmp_path / "folds.csv",
                 "--fold", "0", "--json")
    assert result.exit_code == 0, result.stderr
    board = {Path(r["prediction"]).name: r for r in json.loads(result.stdout)["leaderboard"]}
    assert set(board) == {"perfect_on_a.csv", "nothing.csv"}
    # fold 0 is a (a box, found exactly: 1.0) and b (no box, no prediction: not counted)
    assert board["perfect_on_a.csv"]["scores"]["map-iou"] == pytest.approx(1.0)
    assert board["perfect_on_a.csv"]["cases"] == 2 and board["perfect_on_a.csv"]["missing"] == []
    assert board["nothing.csv"]["scores"]["map-iou"] == pytest.approx(0.0)


def test_cases_table_restricts_classification_scores_and_unknown_cases_are_one_error(cli, tmp_path):
    truth = tmp_path / "labels.csv"
    truth.write_text("case_id,label\na,0\nb,1\nc,0\nd,1\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("case_id,prob_0,prob_1,pred\na,0.9,0.1,0\nb,0.2,0.8,1\n")
    (tmp_path / "some.csv").write_text("case_id\na\nb\n")
    result = cli("score", "--truth", truth, pred, "--metric", "accuracy", "--cases", tmp_path / "some.csv", "--json")
    assert result.exit_code == 0, result.stderr
    board = json.loads(result.stdout)["leaderboard"][0]
    assert board["scores"]["accuracy"] == 1.0 and board["cases"] == 2
    # without the selection, c and d have no prediction: a classifier must predict every case
    assert cli("score", "--truth", truth, pred, "--metric", "accuracy").exit_code == 1
    (tmp_path / "other.csv").write_text("case_id\na\nz\n")
    bad = cli("score", "--truth", truth, pred, "--metric", "accuracy", "--cases", tmp_path / "other.csv")
    assert bad.exit_code == 1
    assert f"1 of 2 selected cases (the cases of {tmp_path / 'other.csv'}) have no truth (z)" in \
        " ".join(bad.stderr.split())
    both = cli("score", "--truth", truth, pred, "--metric", "accuracy", "--cases", tmp_path / "some.csv",
               "--folds", tmp_path / "some.csv", "--fold", "0")
    assert both.exit_code == 2 and "not both" in both.stderr
