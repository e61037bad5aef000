"""``medtool train`` from the command line: a run folder, resume, and one-line errors."""

import csv
import json

import pytest

from medtool.train import LAST, load_checkpoint

from ..segdata import write_ball_dataset

TINY = ["--dim", "3d", "--patch", "8", "16", "16", "--width", "4", "--depth", "3", "--steps", "3",
        "--batch-size", "2", "--augment", "light", "--seed", "1"]


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    return write_ball_dataset(tmp_path_factory.mktemp("balls"), cases=3)


def test_train_writes_a_run_and_resumes(cli, balls, tmp_path):
    images, masks = balls
    run = tmp_path / "run"
    result = cli("train", "--images", images, "--masks", masks, "--out", run, "--epochs", "1",
                 "--class-names", "ball", *TINY)
    assert result.exit_code == 0, result.output
    assert "1 epochs" in result.stdout and "its validation Dice ball" in result.stdout
    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt", "log.csv", "curve.png", "cache"}
    checkpoint = load_checkpoint(run / LAST)
    assert checkpoint["recipe"]["classes"] == ["background", "ball"]
    assert checkpoint["history"][0]["command"].startswith("medtool train")
    # an existing run is not overwritten by accident
    again = cli("train", "--images", images, "--masks", masks, "--out", run, "--epochs", "1", *TINY)
    assert again.exit_code == 2 and "holds a run already" in again.stderr and "--resume" in again.stderr
    # resume to two epochs: same run, one more row, JSON summary
    resumed = cli("train", "--out", run, "--resume", "--epochs", "2", "--json")
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert summary["epochs"] == 2
    with open(run / "log.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]
    assert load_checkpoint(run / LAST)["training"]["epoch"] == 1


def test_folds_pick_the_validation_cases(cli, balls, tmp_path):
    images, masks = balls
    folds = tmp_path / "folds.csv"
    folds.write_text("case_id,fold\nball_00,0\nball_01,1\nball_02,1\n")
    run = tmp_path / "run"
    result = cli("train", "--images", images, "--masks", masks, "--out", run, "--epochs", "1",
                 "--folds", folds, "--fold", "0", "--sample-dice", *TINY)
    assert result.exit_code == 0, result.output
    assert "2 training / 1 validation cases" in result.stderr
    assert load_checkpoint(run / LAST)["training"]["options"]["batch_dice"] is False


def test_one_line_errors(cli, balls, tmp_path):
    images, masks = balls
    missing = cli("train", "--images", images, "--masks", masks, "--mask-suffix", "_lungs",
                  "--out", tmp_path / "a", *TINY)
    assert missing.exit_code == 1
    assert "no mask ball_00_lungs for this image" in missing.stderr and "Traceback" not in missing.output
    no_folds = cli("train", "--images", images, "--masks", masks, "--fold", "1", "--out", tmp_path / "b", *TINY)
    assert no_folds.exit_code == 2 and "--fold needs --folds" in no_folds.stderr
    bad_loss = cli("train", "--images", images, "--masks", masks, "--loss", "hinge", "--out", tmp_path / "c")
    assert bad_loss.exit_code == 2 and "choose one of" in bad_loss.stderr
    bad_topk = cli("train", "--images", images, "--masks", masks, "--loss", "jaccard", "--topk", "10",
                   "--out", tmp_path / "e")
    assert bad_topk.exit_code == 2 and "--topk applies to the cross-entropy" in bad_topk.stderr
    assert not (tmp_path / "e").exists()
    bad_patch = cli("train", "--images", images, "--masks", masks, "--dim", "2d", "--patch", "4", "16", "16",
                    "--out", tmp_path / "d")
    assert bad_patch.exit_code == 2 and "a 2d patch is 1 Y X" in bad_patch.stderr
    no_run = cli("train", "--out", tmp_path / "nothing", "--resume")
    assert no_run.exit_code == 1 and "no such checkpoint" in no_run.stderr


# -- one sub-command per task ----------------------------------------------------------------------
@pytest.mark.parametrize("task, own, foreign", [
    ("segment", ["--masks", "--patch", "--deep-supervision", "--dataset", "--cv"], ["--labels", "--boxes", "--anchor-sizes"]),
    ("classify", ["--labels", "--shape", "--cv", "--image-suffix"], ["--masks", "--patch", "--boxes", "--dataset"]),
    ("detect", ["--boxes", "--anchor-sizes", "--fpn-width", "--cv"], ["--masks", "--labels", "--dim", "--image-suffix"]),
])
def test_each_task_has_its_own_options_and_help(cli, task, own, foreign):
    result = cli("train", task, "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"Usage: medtool train {task} [OPTIONS]" in text
    assert all(option in text for option in own)
    assert not any(f"{option} " in text for option in foreign)
    for option in foreign:                            # another task's option: a usage error
        refused = cli("train", task, option, "x", "--out", "run")
        assert refused.exit_code == 2 and f"No such option: {option}" in " ".join(refused.output.split())


def test_help_shows_the_librarys_defaults():
    """The defaults are the options dataclass's (a Python caller gets the same ones)."""
    from medtool.classify import ClassifyOptions
    from medtool.cli.train import library_defaults
    from medtool.detection import DetectOptions
    from medtool.segmentation import SegmentOptions

    segment, classify, detect = (library_defaults(t) for t in ("segment", "classify", "detect"))
    assert segment["model"] == SegmentOptions().model == "unet" and segment["batch_size"] == 2
    assert classify["dropout"] == ClassifyOptions().dropout and classify["steps"] == 0
    assert detect["augment"] == DetectOptions().augment == "detect" and detect["batch_size"] == 8


def test_task_options_from_the_command_line_equal_the_library_defaults():
    from medtool.cli.train import loop_config, task_options
    from medtool.segmentation import SegmentOptions
    from medtool.train import TrainConfig

    # the same values; the command line also records which were given (for the plan)
    assert task_options("segment", {"images": None, "dim": "2d", "patch": (1, 16, 16)}) == \
        SegmentOptions(dim=2, patch=[16, 16], given=["dim", "patch"])
    assert loop_config("classify", {"epochs": 3}) == TrainConfig(epochs=3, steps_per_epoch=0, batch_size=8,
                                                                 given=["epochs"])


def test_the_old_task_option_still_works(cli, tmp_path):
    result = cli("train", "--task", "classify", "--help")
    assert result.exit_code == 0 and "Usage: medtool train classify" in " ".join(result.output.split())
    result = cli("train", "--images", tmp_path, "--help")             # no task: segment, as before
    assert "Usage: medtool train segment" in " ".join(result.output.split())
