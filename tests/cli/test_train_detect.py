"""``medtool train --task detect`` and ``predict`` from the command line: one-line errors before
any training, and a tiny run whose RSNA CSV ``score`` reads back (resume included)."""

import csv
import json

import numpy as np
import pytest

from medtool.formats import save_volume
from medtool.volume import Volume

TINY = ["--model", "resnet18-fpn", "--fpn-width", "16", "--size", "64", "--batch-size", "2", "--steps", "2",
        "--augment", "none", "--seed", "1"]


@pytest.fixture(scope="module")
def xrays(tmp_path_factory):
    from medtool.phantom import write_dataset

    root = tmp_path_factory.mktemp("cxr")
    write_dataset(root, cases=1, seed=2, shape=48, cxr=4)
    return root


def _error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_ct_volume_among_the_xrays_stops_before_training(cli, xrays, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in (xrays / "cxr").iterdir():
        (images / path.name).write_bytes(path.read_bytes())
    save_volume(Volume(np.zeros((4, 32, 32), np.int16), (2.0, 1.0, 1.0)), images / "ct.npy")
    with open(xrays / "cxr_boxes.csv") as handle:
        table = handle.read() + "ct,,,,,0\n"
    (tmp_path / "boxes.csv").write_text(table)
    result = cli("train", "--task", "detect", "--images", images, "--boxes", tmp_path / "boxes.csv",
                 "--out", tmp_path / "run", "--epochs", "1", *TINY)
    assert result.exit_code == 1
    line = _error_line(result)
    assert line.startswith("error: ") and "ct.npy: a 3D volume (4 slices" in line and "not a 2D X-ray" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_boxes_naming_missing_images_stop_before_training(cli, xrays, tmp_path):
    with open(xrays / "cxr_boxes.csv") as handle:
        table = handle.read() + "nobody,10,10,20,20,1\n"
    (tmp_path / "boxes.csv").write_text(table)
    result = cli("train", "--task", "detect", "--images", xrays / "cxr", "--boxes", tmp_path / "boxes.csv",
                 "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 1
    assert "1 ids of the box table have no image (nobody)" in _error_line(result)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_resume_predict_score(cli, xrays, tmp_path):
    run = tmp_path / "run"
    first = cli("train", "--task", "detect", "--images", xrays / "cxr", "--boxes", xrays / "cxr_boxes.csv",
                "--out", run, "--epochs", "1", "--val-fraction", "0.25", "--schedule", "plateau", *TINY)
    assert first.exit_code == 0, first.output
    plan = {line["name"]: line for line in json.loads((run / "plan.json").read_text())["plan"]}
    assert plan["anchor_sizes"]["source"] == "planned" and "percentile of the training boxes" in plan["anchor_sizes"]["why"]
    assert plan["size"]["source"] == "given" and "plan:" in first.stderr
    resumed = cli("train", "--out", run, "--resume", "--epochs", "2", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["epochs"] == 2
    with open(run / "log.csv", newline="") as handle:
        log = list(csv.DictReader(handle))
    assert [row["epoch"] for row in log] == ["1", "2"] and all(row["map_iou"] for row in log)
    out = tmp_path / "submission.csv"
    predicted = cli("predict", run / "last.pt", xrays / "cxr", out, "--min-score", "0.01", "--nms", "0.3")
    assert predicted.exit_code == 0, predicted.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["patientId", "PredictionString"] and len(rows) == 4
    scored = cli("score", "--truth", xrays / "cxr_boxes.csv", out, "--metric", "map-iou", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["leaderboard"][0]["cases"] == 4
    again = cli("predict", run / "last.pt", xrays / "cxr", out)
    assert again.exit_code != 0 and "--force" in again.stderr
