"""``train ... --log tensorboard,mlflow``: the trackers hold exactly the values of log.csv (step =
epoch), the plan and the options; the MLflow file store is read back by hand and, where mlflow is
installed, by MlflowClient; --cv logs a run per fold and --resume appends without duplicates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medtool import tracking
from medtool.errors import UsageError
from medtool.segmentation import SegmentOptions
from medtool.train import LOG, TrainConfig, fit, load_checkpoint, make_task

from .segdata import write_ball_dataset

#: A 2-epoch run on four balls, a few seconds on a CPU.
TINY = ("--dim", "3d", "--patch", "8", "16", "16", "--width", "4", "--depth", "3", "--epochs", "2", "--steps", "2",
        "--batch-size", "2", "--augment", "none", "--contiguous", "--lr", "0.003", "--seed", "1")


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    return write_ball_dataset(tmp_path_factory.mktemp("balls"), cases=4)


@pytest.fixture(scope="module")
def tracked(balls, tmp_path_factory):
    """One CLI run with both trackers."""
    from typer.testing import CliRunner

    from medtool.cli import app

    pytest.importorskip("tensorboard")
    images, masks = balls
    run = tmp_path_factory.mktemp("tracked") / "balls"
    result = CliRunner().invoke(app, ["train", "segment", "--images", str(images), "--masks", str(masks), *TINY,
                                      "--val-fraction", "0.25", "--log", "tensorboard,mlflow", "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    return run


def _log(run: Path) -> list[dict[str, str]]:
    with open(run / LOG, newline="") as handle:
        return list(csv.DictReader(handle))


def _mlflow_runs(store: Path) -> dict[str, Path]:
    """The run folders of experiment 0 by their mlflow.runName tag."""
    return {(meta.parent / "tags" / "mlflow.runName").read_text(): meta.parent
            for meta in (store / "0").glob("*/meta.yaml")}


def _metric(folder: Path, name: str) -> list[tuple[int, str]]:
    """(step, value text) of each line of an MLflow metric file (``<timestamp_ms> <value> <step>``)."""
    lines = [line.split(" ") for line in (folder / "metrics" / name).read_text().splitlines()]
    assert all(len(parts) == 3 and int(parts[0]) > 1.7e12 for parts in lines)   # milliseconds since 1970
    return [(int(step), value) for _, value, step in lines]


def _expected(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r[name])) for r in rows if r[name] != ""]


def _scalars(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_log_names_are_checked(monkeypatch):
    assert tracking.parse(None) == () and tracking.parse("none") == ()
    assert tracking.parse("mlflow") == ("mlflow",)
    with pytest.raises(UsageError, match="choose tensorboard, mlflow"):
        tracking.parse("wandb")
    with pytest.raises(UsageError, match="none goes alone"):
        tracking.parse("none,mlflow")
    monkeypatch.setattr(tracking, "_available", lambda package: False)
    with pytest.raises(UsageError, match=r"pip install 'medtool\[tensorboard\]'"):
        TrainConfig(log="tensorboard").check()
    assert tracking.parse("mlflow") == ("mlflow",)             # the file store needs no package


def test_tensorboard_missing_fails_before_training(cli, balls, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_available", lambda package: False)
    images, masks = balls
    result = cli("train", "segment", "--images", images, "--masks", masks, *TINY, "--log", "mlflow,tensorboard",
                 "--out", tmp_path / "run")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'medtool[tensorboard]'" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()                     # nothing prepared, nothing trained


def test_mlflow_file_store_holds_the_log_csv_values(tracked):
    rows = _log(tracked)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    store = tracked / "mlruns"
    experiment = (store / "0" / "meta.yaml").read_text()
    assert 'experiment_id: "0"' in experiment and 'name: "balls"' in experiment
    runs = _mlflow_runs(store)
    assert list(runs) == ["balls"]
    folder = runs["balls"]
    meta = (folder / "meta.yaml").read_text()
    assert f'run_id: "{folder.name}"' in meta and "status: 3\n" in meta and 'run_name: "balls"' in meta
    assert f'artifact_uri: "{(folder / "artifacts").as_uri()}"' in meta
    for name in rows[0]:
        if name == "epoch":
            continue
        # the very texts of log.csv, as numbers, at step = epoch
        assert [(step, float(value)) for step, value in _metric(folder, name)] == _expected(rows, name), name
    assert {p.name for p in (folder / "metrics").iterdir()} == set(rows[0]) - {"epoch"}
    params = {p.name: p.read_text() for p in (folder / "params").iterdir()}
    assert params["lr"] == "0.003" and params["epochs"] == "2" and params["task"] == "segment"
    assert params["patch"] == "[8, 16, 16]" and params["log"] == "tensorboard,mlflow"
    assert params["plan.spacing"] == "[2.0, 1.0, 1.0]"          # planned values as plan.NAME
    assert (folder / "tags" / "mlflow.source.type").read_text() == "LOCAL"
    assert "spacing" in (folder / "tags" / "mlflow.note.content").read_text()
    assert (folder / "artifacts" / "curve.png").read_bytes() == (tracked / "curve.png").read_bytes()
    assert (folder / "artifacts" / "plan.json").read_bytes() == (tracked / "plan.json").read_bytes()


def test_mlflow_client_reads_the_run(tracked, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")      # mlflow 3 asks file stores to opt in
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file:{tracked / 'mlruns'}")
    (run,) = client.search_runs(["0"])
    assert run.info.run_name == "balls" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.003" and run.data.params["batch_size"] == "2"
    rows = _log(tracked)
    for name in ("train_loss", "lr", "val_score", "dice_label_1"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [(m.step, m.value) for m in history] == _expected(rows, name)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"curve.png", "plan.json"}


def test_tensorboard_events_hold_the_log_csv_values(tracked):
    (folder,) = (tracked / "tensorboard").iterdir()
    assert folder.name == "balls"
    events = _scalars(folder)
    rows = _log(tracked)
    assert set(events.Tags()["scalars"]) == set(rows[0]) - {"epoch"}
    for name in events.Tags()["scalars"]:
        got = [(e.step, e.value) for e in events.Scalars(name)]
        assert [s for s, _ in got] == [s for s, _ in _expected(rows, name)], name
        assert [v for _, v in got] == pytest.approx([v for _, v in _expected(rows, name)], rel=1e-6), name
    (curve,) = events.Images("curve")
    assert curve.step == 2 and curve.width == 900                 # curve.png's 9 inches at 100 dpi
    assert {"plan/text_summary", "options/text_summary"} <= set(events.Tags()["tensors"])
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    assert set(content) == {f"_hparams_/{k}" for k in ("experiment", "session_start_info", "session_end_info")}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(0.003) and start.hparams["model"].string_value == "unet"


def test_resume_appends_to_the_same_runs_without_duplicate_epochs(balls, tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "halves"
    options = SegmentOptions(images=str(balls[0]), masks=str(balls[1]), dim=3, patch=[8, 16, 16], width=4, depth=3,
                             augment="none", loss="dice-ce", channels_last=False, val_fraction=0.25)
    config = dict(epochs=2, steps_per_epoch=2, batch_size=2, schedule="constant", log="tensorboard,mlflow")
    first = fit(make_task("segment", options), TrainConfig(**config, max_minutes=0), run,
                device=torch.device("cpu"), progress=False)
    assert first["epochs"] == 1
    # as if the stopped run had logged an epoch 2 that its checkpoint does not hold
    (folder,) = _mlflow_runs(run / "mlruns").values()
    with open(folder / "metrics" / "train_loss", "a") as handle:
        handle.write("1800000000000 9.5 2\n")
    stray = SummaryWriter(str(run / "tensorboard" / "halves"))
    stray.add_scalar("train_loss", 9.5, 2)
    stray.close()
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["tracking"] == {"root": ".", "name": "halves"}
    fit(make_task("segment", checkpoint["training"]["options"], recipe=checkpoint["recipe"]), TrainConfig(**config),
        run, device=torch.device("cpu"), resume=True, checkpoint=checkpoint, progress=False)
    rows = _log(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(_mlflow_runs(run / "mlruns").values()) == [folder]            # the same MLflow run
    assert [(s, float(v)) for s, v in _metric(folder, "train_loss")] == _expected(rows, "train_loss")
    assert "status: 3\n" in (folder / "meta.yaml").read_text()
    got = [(e.step, e.value) for e in _scalars(run / "tensorboard" / "halves").Scalars("train_loss")]
    assert [s for s, _ in got] == [1, 2]                                        # the stray epoch 2 purged
    assert [v for _, v in got] == pytest.approx([v for _, v in _expected(rows, "train_loss")], rel=1e-6)


def test_cv_logs_a_run_per_fold_and_a_resumed_fold_joins_them(cli, balls, tmp_path):
    images, masks = balls
    folds = tmp_path / "folds.csv"
    folds.write_text("case_id,fold\nball_00,0\nball_01,1\nball_02,0\nball_03,1\n")
    run = tmp_path / "cv"
    small = ("--dim", "2d", "--width", "4", "--depth", "2", "--steps", "1", "--batch-size", "2", "--augment", "none")
    result = cli("train", "segment", "--images", images, "--masks", masks, "--folds", folds, "--cv", *small,
                 "--epochs", "1", "--log", "mlflow", "--out", run, "-q")
    assert result.exit_code == 0, result.output
    runs = _mlflow_runs(run / "mlruns")
    assert sorted(runs) == ["fold_0", "fold_1"]
    for name, folder in runs.items():
        assert _metric(folder, "train_loss") == [(1, str(float(_log(run / name)[0]["train_loss"])))]
        assert json.loads((folder / "artifacts" / "plan.json").read_text()) == json.loads((run / name / "plan.json").read_text())
    assert not (run / "fold_0" / "mlruns").exists()
    resumed = cli("train", "segment", "--out", run / "fold_0", "--resume", "--epochs", "2", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert _mlflow_runs(run / "mlruns") == runs                 # fold_0's own run, in the --cv store
    assert [s for s, _ in _metric(runs["fold_0"], "train_loss")] == [1, 2]
    assert not (run / "fold_0" / "mlruns").exists()


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_classify_and_detect_log_their_metrics(cli, task, tmp_path):
    import numpy as np

    from medtool.formats import save_volume
    from medtool.phantom import write_dataset
    from medtool.volume import Volume

    if task == "classify":        # six random volumes, three of each class
        rng = np.random.default_rng(0)
        for i in range(6):
            save_volume(Volume(rng.normal(0, 100, (4, 16, 16)).astype(np.int16), (2.0, 1.0, 1.0),
                               meta={"units": "HU"}), tmp_path / "images" / f"c{i}.npy")
        (tmp_path / "labels.csv").write_text("case_id,label\n" + "".join(f"c{i},{i % 2}\n" for i in range(6)))
        data = ("--images", tmp_path / "images", "--labels", tmp_path / "labels.csv", "--width", "4",
                "--shape", "4", "16", "16", "--val-fraction", "0.34")
    else:
        write_dataset(tmp_path / "cxr", cases=1, seed=2, shape=48, cxr=4)
        data = ("--images", tmp_path / "cxr" / "cxr", "--boxes", tmp_path / "cxr" / "cxr_boxes.csv",
                "--model", "resnet18-fpn", "--fpn-width", "16", "--size", "64")
    run = tmp_path / "run"
    result = cli("train", task, *data, "--epochs", "2", "--steps", "2", "--batch-size", "2", "--augment", "none",
                 "--log", "mlflow", "--out", run, "-q")
    assert result.exit_code == 0, result.output
    (folder,) = _mlflow_runs(run / "mlruns").values()
    rows = _log(run)
    names = {p.name for p in (folder / "metrics").iterdir()}
    assert "val_score" in names and names == {k for k in rows[0] if k != "epoch" and any(r[k] for r in rows)}
    for name in names:
        assert [(s, float(v)) for s, v in _metric(folder, name)] == _expected(rows, name), name
    assert (folder / "params" / "task").read_text() == task
