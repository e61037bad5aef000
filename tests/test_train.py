"""The training loop: it learns, checkpoints reproduce predictions, resume continues the run,
and two gloo processes train under torchrun."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medtool.formats import load_volume
from medtool.metrics import dice
from medtool.segmentation import PredictSettings, SegmentOptions, predict_volume
from medtool.train import LAST, LOG, TrainConfig, build_model, fastest_layout, fit, load_checkpoint, make_task

from .segdata import write_ball_dataset


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    return write_ball_dataset(tmp_path_factory.mktemp("balls"), cases=4)


def _options(images, masks, **kwargs):
    base = dict(images=str(images), masks=str(masks), dim=3, patch=[8, 16, 16], width=8, depth=3,
                augment="none", loss="dice-ce", pos_ratio=0.5, channels_last=False)   # runs compared bit for bit
    return SegmentOptions(**{**base, **kwargs})


def _config(**kwargs):
    return TrainConfig(**{**dict(epochs=4, steps_per_epoch=20, batch_size=2, lr=3e-3, schedule="constant", seed=0),
                           **kwargs})


def _log(run):
    with open(run / LOG, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(balls, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "balls"
    task = make_task("segment", _options(*balls, val_fraction=0.25))
    summary = fit(task, _config(), run, device=torch.device("cpu"), progress=False)
    return run, summary, task


def test_the_loop_learns(trained, balls):
    run, summary, task = trained
    rows = _log(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    # Dice on training cases, predicted from files the way `medtool predict` does
    model = build_model(load_checkpoint(run / LAST))
    images, masks = balls
    for case in task.train_cases[:2]:
        name = case["case_id"] + ".npy"
        labels, _ = predict_volume(model, load_volume(images / name), load_checkpoint(run / LAST)["recipe"],
                                   PredictSettings(), device=torch.device("cpu"))
        assert dice(load_volume(masks / name).array > 0, labels.array > 0) > 0.9
    assert (run / "curve.png").stat().st_size > 1000
    assert summary["samples_per_s"] > 0 and 0 <= summary["data_wait"] < 1
    # the summary reports best.pt's validation, not the last epoch's
    best = load_checkpoint(run / "best.pt")
    assert summary["best_epoch"] == best["training"]["epoch"] + 1
    assert summary["metrics"] == best["metrics"]
    assert summary["last_metrics"] == load_checkpoint(run / LAST)["metrics"]


def test_checkpoint_reproduces_the_validation_predictions(trained):
    run, _, task = trained
    checkpoint = load_checkpoint(run / LAST)
    assert checkpoint["recipe"]["classes"] == ["background", "label_1"]
    assert checkpoint["recipe"]["spacing"] == [2.0, 1.0, 1.0] and checkpoint["task"] == "segment"
    again = task.validate(build_model(checkpoint), device=torch.device("cpu"))
    assert again == checkpoint["metrics"]                       # bit-for-bit the same Dice
    assert checkpoint["metrics"]["dice_label_1"] > 0.9


def test_resume_continues_the_same_run(balls, tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    options = _options(*balls, val_fraction=0.25)
    fit(make_task("segment", options), _config(epochs=2, steps_per_epoch=3), straight,
        device=torch.device("cpu"), progress=False)
    # stop after the first epoch (time limit 0), then resume from last.pt
    first = fit(make_task("segment", options), _config(epochs=2, steps_per_epoch=3, max_minutes=0), halves,
                device=torch.device("cpu"), progress=False)
    assert first["epochs"] == 1 and "time limit" in first["stopped"]
    checkpoint = load_checkpoint(halves / LAST)
    assert checkpoint["training"]["epoch"] == 0
    assert checkpoint["training"]["optimizer"]["state"]           # Adam moments were saved
    resumed = make_task("segment", checkpoint["training"]["options"], recipe=checkpoint["recipe"])
    fit(resumed, _config(epochs=2, steps_per_epoch=3), halves, device=torch.device("cpu"),
        resume=True, checkpoint=checkpoint, progress=False)
    a, b = load_checkpoint(straight / LAST), load_checkpoint(halves / LAST)
    assert b["training"]["epoch"] == 1
    assert [r["epoch"] for r in _log(halves)] == ["1", "2"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["training"]["best_score"] == b["training"]["best_score"]


def test_resume_with_more_epochs_follows_the_new_cosine_schedule(balls, tmp_path):
    options = _options(*balls, val_fraction=0.25)
    fit(make_task("segment", options), _config(epochs=2, steps_per_epoch=2, lr=1e-3, schedule="cosine"),
        tmp_path, device=torch.device("cpu"), progress=False)
    checkpoint = load_checkpoint(tmp_path / LAST)
    # the stopped run ended at the bottom of its schedule: lr 0 in the saved optimizer state
    assert checkpoint["training"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    resumed = make_task("segment", checkpoint["training"]["options"], recipe=checkpoint["recipe"])
    fit(resumed, _config(epochs=4, steps_per_epoch=2, lr=1e-3, schedule="cosine"), tmp_path,
        device=torch.device("cpu"), resume=True, checkpoint=checkpoint, progress=False)
    lrs = [float(r["lr"]) for r in _log(tmp_path)]
    # epochs 1-2 of the 2-epoch run, then epochs 3 and 4 of a 4-epoch cosine: 2/4 and 3/4 of the way
    assert lrs == pytest.approx([1e-3, 5e-4, *[1e-3 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in (2, 3)]], rel=1e-5)
    # a constant schedule resumed with another --lr runs at that lr
    checkpoint = load_checkpoint(tmp_path / LAST)
    resumed = make_task("segment", checkpoint["training"]["options"], recipe=checkpoint["recipe"])
    fit(resumed, _config(epochs=5, steps_per_epoch=2, lr=2e-4), tmp_path, device=torch.device("cpu"),
        resume=True, checkpoint=checkpoint, progress=False)
    assert float(_log(tmp_path)[-1]["lr"]) == pytest.approx(2e-4)


def test_two_d_sigmoid_bce_dice_with_deep_supervision(balls, tmp_path):
    options = _options(*balls, dim=2, patch=[16, 16], loss="bce-dice", deep_supervision=True,
                       residual=True, augment="heavy", val_fraction=0.25)
    summary = fit(make_task("segment", options), _config(epochs=2, steps_per_epoch=4), tmp_path / "run",
                  device=torch.device("cpu"), progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / LAST)
    assert checkpoint["recipe"]["activation"] == "sigmoid" and checkpoint["recipe"]["patch"] == [1, 16, 16]
    assert checkpoint["recipe"]["spacing"][0] is None            # slices kept as they are
    assert checkpoint["model"]["config"]["dim"] == 2 and checkpoint["model"]["config"]["out_channels"] == 1
    assert np.isfinite(summary["final_loss"])


def test_ddp_with_two_gloo_processes(balls, tmp_path):
    images, masks = balls
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "medtool", "train", "--images", str(images), "--masks", str(masks), "--out", str(run),
               "--dim", "3d", "--patch", "8", "16", "16", "--width", "4", "--depth", "3", "--epochs", "2",
               "--steps", "2", "--batch-size", "2", "--augment", "none", "--channels-last", "--device", "cpu", "--json", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Grad strides do not match bucket view strides" not in done.stderr     # torch's DDP layout warning
    summary = json.loads(done.stdout)                            # rank 0 alone prints
    assert summary["epochs"] == 2 and summary["rank"] == 0
    checkpoint = load_checkpoint(run / LAST)
    assert checkpoint["training"]["epoch"] == 1
    assert "module." not in next(iter(checkpoint["state_dict"]))   # unwrapped weights
    assert len(_log(run)) == 2


def test_cosine_schedule_follows_epochs_or_the_time_limit():
    from medtool.train import cosine_factor

    by_epochs = TrainConfig(epochs=10, lr=1.0)
    # the epoch-based schedule is torch's CosineAnnealingLR (eta_min 0)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    for epoch in range(1, 11):
        optimizer.step()
        reference.step()
        assert cosine_factor(epoch, by_epochs, elapsed_s=1e9) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-9)
    # with a time limit, whichever is further along: 45 s of a 1-minute budget is 3/4 of the way
    timed = TrainConfig(epochs=100, max_minutes=1.0)
    assert cosine_factor(2, timed, elapsed_s=45.0) == pytest.approx(0.5 * (1 + np.cos(0.75 * np.pi)))
    assert cosine_factor(90, timed, elapsed_s=6.0) == pytest.approx(0.5 * (1 + np.cos(0.9 * np.pi)))
    assert cosine_factor(3, timed, elapsed_s=120.0) == 0.0          # past the limit: the floor


def test_amp_on_a_cpu_is_bf16_only_when_asked_and_native(monkeypatch):
    import medtool.train as train
    from medtool.errors import UsageError

    cpu = torch.device("cpu")
    assert train.amp_dtype("auto", cpu) is None and train.amp_dtype("off", cpu) is None
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        train.amp_dtype("fp16", cpu)
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    with pytest.raises(UsageError, match="no native bfloat16"):
        train.amp_dtype("bf16", cpu)
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.amp_dtype("bf16", cpu) is torch.bfloat16


@pytest.mark.skipif(not __import__("medtool.train").train.cpu_has_bf16(), reason="CPU without native bfloat16")
def test_bf16_on_a_cpu_trains_and_validates(balls, tmp_path):
    options = _options(*balls, val_fraction=0.25)
    summary = fit(make_task("segment", options), _config(epochs=2, steps_per_epoch=10, amp="bf16"),
                  tmp_path / "run", device=torch.device("cpu"), progress=False)
    rows = _log(tmp_path / "run")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert 0 <= summary["metrics"]["dice_label_1"] <= 1
    # the checkpoint is float32 whatever the autocast dtype
    state = load_checkpoint(tmp_path / "run" / LAST)["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_ema_is_the_running_average_of_the_weights():
    from medtool.train import make_ema

    model = torch.nn.Linear(2, 1, bias=False)
    ema = make_ema(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.update_parameters(model)              # the first update copies
        model.weight.fill_(3.0)
        ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))


def test_ema_checkpoints_hold_the_average_and_resume_continues_the_same_run(balls, tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    options = _options(*balls, val_fraction=0.25)
    config = dict(epochs=2, steps_per_epoch=3, ema=0.9)
    task = make_task("segment", options)
    fit(task, _config(**config), straight, device=torch.device("cpu"), progress=False)
    a = load_checkpoint(straight / LAST)
    raw, kept = a["training"]["raw_state_dict"], a["state_dict"]
    assert a["training"]["ema_updates"] == 6
    assert any(not torch.equal(raw[k], kept[k]) for k in kept)      # the checkpoint is the average
    # validation scored the averaged weights that predict will load
    assert task.validate(build_model(a), device=torch.device("cpu")) == a["metrics"]
    fit(make_task("segment", options), _config(**config, max_minutes=0), halves, device=torch.device("cpu"),
        progress=False)
    checkpoint = load_checkpoint(halves / LAST)
    resumed = make_task("segment", checkpoint["training"]["options"], recipe=checkpoint["recipe"])
    fit(resumed, _config(**config), halves, device=torch.device("cpu"), resume=True, checkpoint=checkpoint,
        progress=False)
    b = load_checkpoint(halves / LAST)
    for key in kept:
        assert torch.equal(kept[key], b["state_dict"][key]), key
        assert torch.equal(raw[key], b["training"]["raw_state_dict"][key]), key


def test_ema_decay_outside_zero_one_is_refused():
    from medtool.errors import UsageError

    with pytest.raises(UsageError, match="--ema 1"):
        _config(ema=1.0).check()


def test_a_run_times_both_memory_layouts_when_not_told(balls, tmp_path):
    task = make_task("segment", _options(*balls, val_fraction=0.25, channels_last=None))
    lines = []
    fit(task, _config(epochs=1, steps_per_epoch=2, max_minutes=0), tmp_path, device=torch.device("cpu"),
        progress=False, log=lines.append)
    checkpoint = load_checkpoint(tmp_path / LAST)
    chosen = checkpoint["model"]["config"]["channels_last"]
    assert isinstance(chosen, bool) and checkpoint["training"]["options"]["channels_last"] is chosen  # resume keeps it
    line = next(text for text in lines if text.startswith("memory layout"))
    assert line.startswith(f"memory layout {'channels-last' if chosen else 'contiguous'}:")
    rates = [float(word) for word in line.replace(",", " ").split() if word.replace(".", "").isdigit()]
    assert (rates[0] > rates[1]) == chosen
    # the timing leaves the seeded random streams alone
    spec = {**checkpoint["model"], "config": {**checkpoint["model"]["config"], "channels_last": None}}
    torch.manual_seed(5)
    timed = fastest_layout(spec, task.example_batch(2), task.build_loss(), device=torch.device("cpu"), dtype=None)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
    assert set(timed) == {"contiguous", "channels_last"} and min(timed.values()) > 0


def test_one_pass_epochs_are_whole_passes_of_at_least_ten_batches():
    from medtool.train import pass_steps

    assert pass_steps(24, 8) == 12          # 3 batches a pass: 4 passes, not 10 batches (3.3 passes)
    assert pass_steps(30, 8) == 12          # 4 batches a pass (the last one short): 3 passes
    assert pass_steps(3, 3) == 10           # one batch a pass: ten passes
    assert pass_steps(100, 8) == 13         # a pass is 13 batches already


def test_the_validation_interval_keeps_validation_to_its_share_of_the_time():
    from medtool.train import VAL_TIME_SHARE, paced_val_every

    # 25 s of validation against 4.4 s of training an epoch (the lung recipe on the 2-core
    # machine): every 33 epochs is 14.7 % of the time, every 32 epochs 15.1 %
    assert VAL_TIME_SHARE == 0.15
    assert paced_val_every(4.4, 25.0) == 33
    assert 25 / (33 * 4.4 + 25) <= 0.15 < 25 / (32 * 4.4 + 25)
    assert paced_val_every(10.0, 1.0) == 1                      # cheap validation: every epoch
    assert paced_val_every(10.0, 1.0, at_least=8) == 8          # never below the planned interval
    assert paced_val_every(0.0, 5.0, at_least=3) == 3


def test_a_timed_run_paces_slow_validation_and_validates_its_last_epoch(balls, tmp_path, monkeypatch):
    """Under --max-minutes with --val-every not given, a validation that costs far more than an
    epoch of training is done rarely (the interval is set from its measured cost), and the last
    epoch before the time limit is validated, so best.pt and the summary see the end of the run.
    Given --val-every, the interval stands."""
    import time as clock

    def run(folder, given):
        task = make_task("segment", _options(*balls, val_fraction=0.25))
        validate = task.validate

        def slow(*args, **kwargs):
            clock.sleep(0.5)
            return validate(*args, **kwargs)

        monkeypatch.setattr(task, "validate", slow)
        summary = fit(task, _config(epochs=10_000, steps_per_epoch=1, max_minutes=0.1, given=given),
                      tmp_path / folder, device=torch.device("cpu"), progress=False)
        rows = _log(tmp_path / folder)
        return summary, [int(r["epoch"]) for r in rows if r["val_score"] not in ("", None)], rows

    summary, validated, rows = run("paced", [])
    assert "time limit" in summary["stopped"] and len(rows) >= 4
    assert validated[0] == 1 and validated[-1] == len(rows)        # the first and the last epoch
    assert len(validated) <= 3 < len(rows)
    assert load_checkpoint(tmp_path / "paced" / LAST)["training"]["config"]["val_every"] > 1
    _, fixed, fixed_rows = run("fixed", ["val_every"])
    assert fixed == [int(r["epoch"]) for r in fixed_rows]          # --val-every 1 given: each epoch


def test_the_budget_line_says_what_the_minutes_buy_at_the_timed_rate():
    from medtool.train import budget_line

    # 10 min at 10 samples/s: 6,000 samples, 75 epochs of 40 steps of 2
    assert budget_line(10, 10.0, 80) == ("budget: 10 min at about 10.0 samples/s (timed) is at most "
                                         "about 6,000 training samples, 75 epochs of 80")
