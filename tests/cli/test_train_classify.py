"""``medtool train --task classify`` and ``predict`` from the command line: --cv, a CSV that
``score`` reads back, one-line errors before any training."""

import csv
import json

import numpy as np
import pytest

from medtool.classify import evaluate
from medtool.formats import save_volume
from medtool.volume import Volume

from ..classdata import FOLDS, write_class_dataset

TINY = ["--epochs", "2", "--steps", "2", "--batch-size", "2", "--width", "4", "--augment", "none", "--seed", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from typer.testing import CliRunner

    from medtool.cli import app

    runner = CliRunner()
    return write_class_dataset(tmp_path_factory.mktemp("cls"), lambda *a: runner.invoke(app, [str(x) for x in a]))


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cv_writes_out_of_fold_predictions_and_summary(cli, data, tmp_path):
    crops, labels, folds = data
    run = tmp_path / "cv"
    result = cli("train", "--task", "classify", "--images", crops, "--labels", labels, "--folds", folds, "--cv",
                 "--out", run, "--json", *TINY)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["folds"] == 2 and summary["cases"] == 6
    assert {p.name for p in run.iterdir()} >= {"fold_0", "fold_1", "oof.csv", "cv.json"}
    assert (run / "fold_1" / "last.pt").is_file()
    rows = _rows(run / "oof.csv")
    # every case once, predicted by the fold that held it out
    assert sorted(r["case_id"] for r in rows) == sorted(FOLDS)
    assert all(int(r["fold"]) == FOLDS[r["case_id"]] for r in rows)
    truth = {r["case_id"]: r["label"] for r in _rows(labels)}
    assert all(r["truth"] == truth[r["case_id"]] for r in rows)
    probs = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in rows])
    pooled = evaluate(np.array([int(r["truth"]) for r in rows]), probs)
    assert summary["pooled"] == pytest.approx(pooled)
    saved = json.loads((run / "cv.json").read_text())
    for name in ("accuracy", "auc"):
        values = [f[name] for f in saved["per_fold"]]
        assert saved["metrics"][name]["mean"] == pytest.approx(np.mean(values))
        assert saved["metrics"][name]["std"] == pytest.approx(np.std(values, ddof=1))
    # score reads the out-of-fold table as it is
    scored = cli("score", "--truth", labels, run / "oof.csv", "--metric", "auc,accuracy", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["leaderboard"][0]["scores"] == pytest.approx(
        {"auc": pooled["auc"], "accuracy": pooled["accuracy"]})


def test_predict_writes_a_csv_that_score_reads(cli, data, tmp_path):
    crops, labels, folds = data
    run = tmp_path / "run"
    trained = cli("train", "--task", "classify", "--images", crops, "--labels", labels, "--out", run,
                  "--val-fraction", "0", *TINY)
    assert trained.exit_code == 0, trained.output
    assert "2 epochs" in trained.stdout
    out = tmp_path / "pred.csv"
    result = cli("predict", run / "last.pt", crops, out, "--batch-size", "4")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert list(rows[0]) == ["case_id", "prob_0", "prob_1", "pred"]
    assert sorted(r["case_id"] for r in rows) == sorted(FOLDS)
    probs = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert [r["pred"] for r in rows] == [str(i) for i in probs.argmax(axis=1)]
    # batch size does not change the answer (the model is in eval mode)
    again = cli("predict", run / "last.pt", crops, tmp_path / "one.csv", "--batch-size", "1")
    assert again.exit_code == 0
    assert np.allclose(probs, [[float(r["prob_0"]), float(r["prob_1"])] for r in _rows(tmp_path / "one.csv")],
                       atol=1e-5)
    truth = {r["case_id"]: int(r["label"]) for r in _rows(labels)}
    expected = evaluate(np.array([truth[r["case_id"]] for r in rows]), probs)
    scored = cli("score", "--truth", labels, out, "--metric", "auc,accuracy", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["leaderboard"][0]["scores"] == pytest.approx(
        {"auc": expected["auc"], "accuracy": expected["accuracy"]})
    # an existing table needs --force; a folder is not a table
    assert cli("predict", run / "last.pt", crops, out).exit_code == 1
    folder = cli("predict", run / "last.pt", crops, tmp_path / "preds")
    assert folder.exit_code == 2 and "writes one CSV table" in folder.stderr


def test_bad_inputs_give_one_line_and_train_nothing(cli, data, tmp_path):
    crops, labels, folds = data
    short = tmp_path / "short.csv"
    short.write_text("case_id,label\n" + "".join(f"{r['case_id']},{r['label']}\n" for r in _rows(labels)[:-1])
                     + "case_099,1\n")
    result = cli("train", "--task", "classify", "--images", crops, "--labels", short, "--out", tmp_path / "a", *TINY)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1 images have no label (case_006); 1 labels have no image (case_099)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a" / "last.pt").exists()
    # a 2D image for a 3D model, and volumes for a 2D model
    flat = tmp_path / "flat"
    for name in ("x", "y"):
        save_volume(Volume(np.zeros((16, 16), np.int16), spacing=(1.0, 1.0)), flat / f"{name}.npy")
    (tmp_path / "flat.csv").write_text("case_id,label\nx,0\ny,1\n")
    two_d = cli("train", "--task", "classify", "--images", flat, "--labels", tmp_path / "flat.csv",
                "--val-fraction", "0", "--out", tmp_path / "b", *TINY)
    assert two_d.exit_code == 1 and "a 2D image (shape [16, 16]) for a 3D model" in two_d.stderr
    three_d = cli("train", "--task", "classify", "--images", crops, "--labels", labels, "--dim", "2d",
                  "--out", tmp_path / "c", *TINY)
    assert three_d.exit_code == 1 and "a 3D volume (12 slices) for a 2D model" in three_d.stderr
    one_class = tmp_path / "one.csv"
    one_class.write_text("case_id,label\n" + "".join(f"{c},1\n" for c in FOLDS))
    single = cli("train", "--task", "classify", "--images", crops, "--labels", one_class, "--out", tmp_path / "d")
    assert single.exit_code == 1 and "only one class (1)" in single.stderr
    no_folds = cli("train", "--task", "classify", "--images", crops, "--labels", labels, "--cv", "--out", tmp_path / "e")
    assert no_folds.exit_code == 2 and "--cv needs --folds" in no_folds.stderr
    wrong_model = cli("train", "--task", "classify", "--images", crops, "--labels", labels, "--model", "unet",
                      "--out", tmp_path / "f")
    assert wrong_model.exit_code == 2 and "a classifier is one of simple3d" in wrong_model.stderr
    paste = cli("train", "--task", "classify", "--images", crops, "--labels", labels, "--aug", "paste=0.5",
                "--out", tmp_path / "g")
    assert paste.exit_code == 2 and "--aug paste (lesion copy-paste) is for train segment" in paste.stderr
    for folder in "abcdefg":
        assert not (tmp_path / folder / "last.pt").exists()


def test_two_d_images_train_a_two_d_model(cli, tmp_path):
    rng = np.random.default_rng(0)
    lines = ["case_id,label"]
    for index in range(8):
        label = index % 2
        image = rng.normal(0, 0.1, (24, 24)).astype(np.float32)
        if label:
            image[8:16, 8:16] += 1.0        # a bright square
        save_volume(Volume(image, spacing=(0.5, 0.5)), tmp_path / "img" / f"p{index}.npy")
        lines.append(f"p{index},{'yes' if label else 'no'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = cli("train", "--task", "classify", "--dim", "2d", "--images", tmp_path / "img", "--labels",
                 tmp_path / "labels.csv", "--model", "resnet3d-10", "--width", "4", "--epochs", "1",
                 "--val-fraction", "0", "--out", tmp_path / "run", "--json", "--normalize", "zscore")
    assert result.exit_code == 0, result.output
    from medtool.train import load_checkpoint

    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["recipe"]["shape"] == [1, 24, 24] and checkpoint["recipe"]["classes"] == ["no", "yes"]
    assert checkpoint["model"]["config"]["dim"] == 2
    predicted = cli("predict", tmp_path / "run" / "last.pt", tmp_path / "img", tmp_path / "p.csv")
    assert predicted.exit_code == 0, predicted.output
    assert list(_rows(tmp_path / "p.csv")[0]) == ["case_id", "prob_no", "prob_yes", "pred"]


def test_a_model_of_same_shape_crops_refuses_another_grid(cli, tmp_path):
    """Crops taken as they were (one shape, no resampling) keep their grid in the recipe: a
    volume of another shape or spacing is refused in one line instead of being cropped in its
    own voxels (another anatomy than trained on)."""
    from medtool.formats import load_volume, save_volume
    from medtool.train import load_checkpoint
    from tests.test_checkpoints import classify_inputs

    crops = classify_inputs(tmp_path / "crops")
    result = cli("train", "classify", "--images", crops, "--labels", crops / "labels.csv", "--model", "simple3d",
                 "--width", "4", "--epochs", "1", "--normalize", "zscore", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    recipe = load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]
    assert recipe["input_grid"] == {"shape": [4, 8, 8], "spacing": [[2.0, 1.0, 1.0], [2.0, 1.0, 1.0]]}
    assert cli("predict", tmp_path / "run" / "last.pt", crops, tmp_path / "same.csv").exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    volume = load_volume(crops / "c0.npy")
    from medtool.volume import Volume

    save_volume(Volume(np.tile(volume.array, (2, 1, 1)), volume.spacing, meta=volume.meta), other / "long.npy")
    finer = load_volume(crops / "c1.npy")
    finer.spacing = (1.0, 0.5, 0.5)                 # the same shape at another spacing: crops vary so
    save_volume(finer, other / "finer.npy")
    result = cli("predict", tmp_path / "run" / "last.pt", other, tmp_path / "other.csv")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    text = " ".join(result.stderr.split())
    assert len(lines) == 1 and "long.npy: the model was trained on 4 x 8 x 8 volumes (2 x 1 x 1 to 2 x 1 x 1 mm)" in text
    assert "this one is 8 x 8 x 8" in text and "finer.npy" not in text
