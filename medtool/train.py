"""The training loop shared by every task (``medtool train --task ...``).

A task (:class:`medtool.segmentation.SegmentTask`; classification and detection add their own)
provides the data set, the model spec, the loss, the augmentation and the validation metric;
:func:`fit` does the rest: AdamW or SGD, a cosine / plateau / constant schedule, mixed
precision on CUDA (bf16 or fp16 with a gradient scaler), gradient clipping, early stopping on
the validation score, seeds, checkpoints ``last.pt`` / ``best.pt`` holding the whole recipe,
``--resume``, a log CSV and a learning-curve PNG, and a progress display on stderr.

Launched by ``torchrun --nproc_per_node N`` it runs DistributedDataParallel: each process
draws its share of the epoch's samples (DistributedSampler), gradients are averaged, and
rank 0 alone validates, logs and writes checkpoints.

Checkpoint layout (a dict, ``torch.save``)::

    format, format_version, medtool_version, task,
    model: {name, config}, recipe: {...task's recipe...}, state_dict,
    training: {epoch (last finished, 0-based), best_score, best_epoch, stale_epochs,
               config (TrainConfig), options (task options), optimizer, scheduler, scaler},
    metrics: {validation metrics of that epoch},
    tracking: {root (of the --log trackers, relative to the run folder), name (the run's there)}
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import InputError, UsageError, check_choice
from .intensity import Normalization
from .tasks import autocast, make_task  # noqa: F401  (make_task: the task API's entry point)

#: Identifies a medtool checkpoint and its layout version.
CHECKPOINT_FORMAT = "medtool-checkpoint"
CHECKPOINT_VERSION = 1
#: The plan of a run (:mod:`medtool.plan`), beside its checkpoints.
PLAN_FILE = "plan.json"
#: Files of a run folder.
LAST, BEST, LOG, CURVE, CACHE = "last.pt", "best.pt", "log.csv", "curve.png", "cache"
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "plateau", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
#: Untimed and timed training steps per memory layout when a run picks its layout (:func:`fastest_layout`).
LAYOUT_WARMUP, LAYOUT_STEPS = 1, 3
#: Plateau schedule: factor and patience (epochs) of the learning-rate cut.
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 5
#: Momentum of SGD (nnU-Net's, with Nesterov).
SGD_MOMENTUM = 0.99
#: Under ``--max-minutes`` with ``--val-every`` not given, validation is paced to take at most
#: this share of the time: its cost is measured at the first validation and the interval
#: lengthened to match (never shortened below the planned one); the last epoch before the time
#: limit is always validated (:func:`paced_val_every`).
VAL_TIME_SHARE = 0.15


#: ``steps_per_epoch`` meaning one pass over the training cases (decided once they are known),
#: or whole passes making at least ``MIN_PASS_STEPS`` batches (batch-norm statistics need
#: updates on small sets; :func:`pass_steps`).
ONE_PASS, MIN_PASS_STEPS = 0, 10


@dataclass
class TrainConfig:
    """Loop settings common to every task (``steps_per_epoch`` :data:`ONE_PASS`: one pass
    over the training cases, at least :data:`MIN_PASS_STEPS` batches)."""

    epochs: int = 100
    steps_per_epoch: int = 50
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    amp: str = "auto"
    grad_clip: float = 12.0
    patience: int = 0
    val_every: int = 1
    seed: int = 0
    max_minutes: float | None = None
    ema: float = 0.0
    #: Experiment tracking (``--log``): ``tensorboard``, ``mlflow``, both comma-separated, or
    #: ``none`` (:mod:`medtool.tracking`).
    log: str = "none"
    #: The loop settings given on the command line (field names); ``None``: not known.
    given: list[str] | None = None

    def check(self) -> None:
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        check_choice("--schedule", self.schedule, SCHEDULES)
        check_choice("--amp", self.amp, AMP_MODES)
        if self.epochs < 1 or self.steps_per_epoch < 0 or self.batch_size < 1:
            raise UsageError("--epochs, --steps and --batch-size must be at least 1")
        if self.lr <= 0:
            raise UsageError("--lr must be positive")
        if not 0 <= self.ema < 1:
            raise UsageError(f"--ema {self.ema:g}: the decay must be in [0, 1) (0: off; 0.99-0.999 is usual)")
        from .tracking import parse

        parse(self.log)


# -- distributed ------------------------------------------------------------------------------------
@dataclass
class Distributed:
    """Where this process stands in a torchrun launch (world size 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def distributed_from_env(device) -> Distributed:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); no-op otherwise."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# -- checkpoints ------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (on the CPU).

    Raises
    ------
    InputError
        Not a file, not a torch file, or not a medtool checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("no such checkpoint", path=path, hint="give the best.pt or last.pt of a run")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"cannot read checkpoint ({type(exc).__name__})", path=path,
                         hint="the file is truncated or not a torch checkpoint") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputError("not a medtool checkpoint", path=path, hint="train one with medtool train")
    if checkpoint.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputError(f"checkpoint format {checkpoint['format_version']} is newer than this medtool",
                         path=path, hint="upgrade medtool")
    return checkpoint


def build_model(checkpoint: dict[str, Any]):
    """The checkpoint's model with its weights, in eval mode (on the CPU)."""
    from . import models

    model = models.build(checkpoint["model"]["name"], checkpoint["model"]["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def _save(path: Path, payload: dict[str, Any]) -> None:
    import torch

    from .files import atomic_output

    with atomic_output(path, force=True) as temp:
        torch.save(payload, temp)


# -- helpers ----------------------------------------------------------------------------------------
def amp_dtype(mode: str, device):
    """Autocast dtype for ``--amp`` on ``device``.

    CUDA: ``auto`` is bf16 where the GPU supports it, else fp16. CPU: only an explicit ``bf16``,
    and only on CPUs with native bfloat16 (AVX512-BF16 or AMX), where thin 3D U-Nets train
    1.4-1.7x faster; ``auto`` keeps a CPU run in float32 (its numbers do not depend on the CPU
    model), and emulated bf16 would be slower than float32. Other devices run in float32.

    Raises
    ------
    UsageError
        ``bf16`` on a CPU without native bfloat16, or ``fp16`` on a CPU.
    """
    import torch

    from .errors import UsageError

    if mode == "off":
        return None
    if device.type == "cuda":
        if mode == "fp16":
            return torch.float16
        if mode == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if device.type != "cpu" or mode == "auto":
        return None
    if mode == "fp16":
        raise UsageError("--amp fp16 needs a CUDA device", hint="on a CPU use --amp bf16 (CPUs with AVX512-BF16 or AMX) or --amp off")
    if not cpu_has_bf16():
        raise UsageError("--amp bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so it would run "
                         "slower than float32", hint="drop --amp (float32 on CPUs)")
    return torch.bfloat16


def fastest_layout(spec: dict[str, Any], example, loss_fn, *, device, dtype) -> dict[str, float]:
    """Training samples per second of the model ``spec`` with contiguous and with channels-last
    weights and activations, timed here on the batch ``example`` (inputs, targets).

    Which layout oneDNN or cuDNN runs faster depends on the processor, the dtype and the model
    (2 Intel cores with AMX, 3D U-Net of width 8: bfloat16 trains 2x faster contiguous, float32
    1.7x faster channels-last), so a run measures it as ``torch.backends.cudnn.benchmark``
    measures convolution algorithms. Each layout gets :data:`LAYOUT_WARMUP` untimed and
    :data:`LAYOUT_STEPS` timed forward and backward passes, alternating; the fastest pass counts.
    The random number generators are left as they were.
    """
    import torch

    from . import models

    inputs, targets = (t.to(device) for t in example)
    best = {"contiguous": math.inf, "channels_last": math.inf}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        built = {name: models.build(spec["name"], dict(spec["config"], channels_last=name == "channels_last")).to(device)
                 for name in best}
        for step in range(LAYOUT_WARMUP + LAYOUT_STEPS):
            for name, model in built.items():
                _synchronize(device)
                start = time.perf_counter()
                with autocast(device, dtype):
                    outputs = model(inputs)
                loss_fn(outputs, targets).backward()
                _synchronize(device)
                if step >= LAYOUT_WARMUP:
                    best[name] = min(best[name], time.perf_counter() - start)
                model.zero_grad(set_to_none=True)
    return {name: len(inputs) / seconds for name, seconds in best.items()}


def _settle_layout(task, spec: dict[str, Any], loss_fn, *, batch_size: int, device, dtype,
                   dist_info) -> tuple[str, float]:
    """Time both memory layouts (:func:`fastest_layout`), write the faster into ``spec`` and the
    task's options (so a resumed run keeps it; under DDP every rank takes rank 0's), and return
    the line that reports it and the kept layout's samples/s."""
    import torch

    timed = fastest_layout(spec, task.example_batch(batch_size), loss_fn, device=device, dtype=dtype)
    channels_last = timed["channels_last"] > timed["contiguous"]
    if dist_info.active:
        flag = torch.tensor([float(channels_last)], device=device)
        torch.distributed.broadcast(flag, src=0)
        channels_last = bool(flag.item())
    spec["config"]["channels_last"] = task.options.channels_last = channels_last
    return (f"memory layout {'channels-last' if channels_last else 'contiguous'}: "
            f"{timed['channels_last']:.1f} samples/s channels-last, {timed['contiguous']:.1f} contiguous",
            timed["channels_last" if channels_last else "contiguous"])


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's own check: AVX512-BF16 or AMX)."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def threads_for(workers: int, world: int) -> int:
    """torch compute threads of one process: the cores shared by the processes, minus the
    loader processes (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    loaders = workers if workers > 1 else 0
    return max(1, cores // max(1, world) - loaders // 2)


@dataclass
class EpochRow:
    """One line of the log CSV."""

    epoch: int
    train_loss: float
    lr: float
    seconds: float
    samples_per_s: float
    data_wait: float
    metrics: dict[str, float] = field(default_factory=dict)


# -- the loop -----------------------------------------------------------------------------------------
@dataclass
class _Run:
    """What one training run carries from epoch to epoch."""

    model: Any
    kept: Any                   # validated and checkpointed: the running average, if there is one
    train_model: Any            # the model, or its DistributedDataParallel wrapper
    optimizer: Any
    scheduler: Any
    scaler: Any
    ema: Any
    loss_fn: Any
    dtype: Any
    start_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    stale: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    rows: list[EpochRow] = field(default_factory=list)
    stopped: str = "epochs"
    tracking: Any = None        # the trackers of --log (medtool.tracking.Tracking; rank 0)
    paced: bool = False         # validation paced by time (see VAL_TIME_SHARE)
    val_floor: int = 1          # the planned interval, which pacing never shortens
    val_seconds: float | None = None    # the last validation's duration
    last_val: int = -1          # the last validated epoch
    timed_rate: float | None = None     # samples/s of the layout timing (None: not timed)
    epoch_end: float = 0.0      # when the last epoch ended (time.monotonic)


def fit(task, config: TrainConfig, out: str | os.PathLike, *, device, workers: int = 1,
        resume: bool = False, force: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None, step: dict[str, Any] | None = None,
        checkpoint: dict[str, Any] | None = None, tracking_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train ``task`` with ``config``, writing the run folder ``out``; returns a summary.

    ``checkpoint`` (with ``resume``) is the ``last.pt`` to continue from: its epoch counter,
    weights, optimizer, schedule and scaler states, best score and patience count.
    ``tracking_root`` is where ``config.log``'s trackers write (:mod:`medtool.tracking`; a
    ``--cv`` run's folder, whose runs are its folds): ``out`` when not given, or the resumed
    run's own.
    """
    import torch

    from . import __version__
    from .tracking import Tracking

    config.check()
    out = Path(out)
    dist_info = distributed_from_env(device)
    if dist_info.active and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    say = log if (log is not None and dist_info.main) else (lambda text: None)
    if dist_info.main and not resume and (out / LAST).exists() and not force:
        raise UsageError(f"{out} holds a run already", hint="pass --resume to continue it or --force to start over")
    torch.set_num_threads(threads_for(workers, dist_info.world))
    seed_everything(config.seed + dist_info.rank)
    if not resume:
        task.plan_device(config, device)
    _prepare(task, config, out, workers=workers, progress=progress, dist_info=dist_info)
    spec = task.model_spec()
    run, layout_note = _build(task, config, spec, device=device, resume=resume, checkpoint=checkpoint,
                              dist_info=dist_info)
    run.paced, run.val_floor = paces_validation(config), config.val_every
    run.last_val = run.start_epoch - 1
    samples = config.steps_per_epoch * config.batch_size * dist_info.world
    dataset, sampler, loader = _loader(task, config, samples, device=device, workers=workers, dist_info=dist_info)
    columns = ["epoch", "train_loss", "lr", "seconds", "samples_per_s", "data_wait",
               "val_score", *task.metric_names]
    if dist_info.main:
        _start_log(out / LOG, columns, keep_until=run.start_epoch if resume else 0)
    if task.data_line():
        say(task.data_line())
    say(_start_line(task, device, dist_info))
    if run.paced:
        _plan_paced(task.recipe)
    _say_plan(task, out, say, write=dist_info.main)
    if layout_note:
        say(layout_note)
    if config.max_minutes and run.timed_rate:
        say(budget_line(config.max_minutes, run.timed_rate, samples))
    if run.paced:
        say(f"validation paced by time: at most {VAL_TIME_SHARE:.0%} of the {config.max_minutes:.3g} "
            f"min (interval set from the first validation's cost, at least {_epochs(config.val_every)}); "
            "the last epoch before the limit is validated (--val-every to fix it)")
    tracked = _tracking_place(out, tracking_root, checkpoint if resume else None)
    payload_base = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                    "medtool_version": __version__, "task": task.name, "model": spec,
                    "recipe": task.recipe, "history": [step] if step else [],
                    "tracking": {"root": os.path.relpath(tracked[0], out), "name": tracked[1]}}
    run.tracking = (_start_tracking(task, config, out, tracked, resume_after=run.start_epoch if resume else None)
                    if dist_info.main else Tracking())
    started = run.epoch_end = time.monotonic()
    display = _Display(progress and dist_info.main, config.epochs, config.steps_per_epoch, run.start_epoch)
    try:
        with display:
            for epoch in range(run.start_epoch, config.epochs):
                mean_loss, seconds, waited = _train_epoch(task, run, config, epoch, dataset, sampler, loader,
                                                          device=device, dist_info=dist_info, display=display)
                stop = _end_epoch(task, run, config, epoch, mean_loss, EpochRow(
                    epoch, mean_loss, run.optimizer.param_groups[0]["lr"], seconds, samples / seconds,
                    waited / seconds), out=out, columns=columns, payload_base=payload_base, started=started,
                    device=device, dist_info=dist_info, display=display, say=say, log=log)
                if stop:
                    break
    except BaseException:
        run.tracking.finish([], failed=True)
        raise
    run.tracking.finish([out / CURVE, out / PLAN_FILE])
    if dist_info.active:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return _summary(run, out, started=started, rank=dist_info.rank)


def _tracking_place(out: Path, root: str | os.PathLike | None, checkpoint: dict[str, Any] | None) -> tuple[Path, str]:
    """Where the trackers of the run ``out`` write and the run's name there: ``root`` (a
    ``--cv`` run's folder) or ``out``; a resumed run keeps its checkpoint's."""
    kept = (checkpoint or {}).get("tracking")
    if root is None and kept:
        return out / kept["root"], kept["name"]
    return (Path(root) if root is not None else out), out.name


def _start_tracking(task, config: TrainConfig, out: Path, place: tuple[Path, str], *, resume_after: int | None):
    """Open ``config.log``'s trackers of this run (:mod:`medtool.tracking`) with its plan and options."""
    from .tracking import open_tracking

    plan = json.loads((out / PLAN_FILE).read_text()) if (out / PLAN_FILE).is_file() else {}
    tracking = open_tracking(config.log, *place)
    tracking.start(out, plan, {"task": task.name, "options": task.describe()["options"], "loop": asdict(config)},
                   resume_after=resume_after)
    return tracking


def plan_only(task, config: TrainConfig, out: str | os.PathLike, *, device, workers: int = 1, progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``train ... --plan-only``: find and preprocess the cases, print the plan and write
    ``RUN/plan.json``, train nothing; returns the plan (:mod:`medtool.plan`)."""
    config.check()
    out = Path(out)
    say = log or (lambda text: None)
    task.plan_device(config, device)
    _prepare(task, config, out, workers=workers, progress=progress, dist_info=Distributed())
    if task.data_line():
        say(task.data_line())
    if paces_validation(config):
        _plan_paced(task.recipe)
    _say_plan(task, out, say, write=True)
    return {"run": str(out), "plan": task.recipe.get("plan", []), "fingerprint": task.recipe.get("fingerprint")}


def _say_plan(task, out: Path, say: Callable[[str], None], *, write: bool) -> None:
    """Print the task's plan, a line per value, and write it as ``RUN/plan.json``."""
    from .files import atomic_write_text

    lines = task.recipe.get("plan")
    if not lines:
        return
    from .plan import PlanLine

    say("plan:")
    for line in lines:
        say(PlanLine(**line).describe())
    if write:
        atomic_write_text(out / PLAN_FILE, json.dumps({"plan": lines, "fingerprint": task.recipe.get("fingerprint")},
                                                      indent=1), force=True)


def _prepare(task, config: TrainConfig, out: Path, *, workers: int, progress: bool, dist_info) -> None:
    """The task's data (rank 0 builds the cache, the others wait and read it), and the steps
    of a one-pass epoch."""
    import torch

    cache = out / CACHE
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        task.prepare(cache, seed=config.seed, workers=workers, progress=progress, build_cache=True)
    if dist_info.active:
        torch.distributed.barrier()
        if not dist_info.main:
            task.prepare(cache, seed=config.seed, build_cache=False)
    if config.steps_per_epoch == ONE_PASS:
        config.steps_per_epoch = pass_steps(len(task.train_cases), config.batch_size * dist_info.world)


def pass_steps(cases: int, batch: int) -> int:
    """Steps of an epoch of whole passes over ``cases`` (``batch`` samples a step): one pass,
    or as many whole passes as make at least :data:`MIN_PASS_STEPS` batches, so that every case
    is seen equally often in an epoch (24 cases in batches of 8: 4 passes, 12 steps)."""
    one = max(1, math.ceil(cases / batch))
    return one * math.ceil(MIN_PASS_STEPS / one)


def _build(task, config: TrainConfig, spec: dict[str, Any], *, device, resume: bool,
           checkpoint: dict[str, Any] | None, dist_info) -> tuple[_Run, str | None]:
    """The model (its memory layout timed when left open), optimizer, schedule, scaler and
    running average, restored from ``checkpoint`` when resuming; and the layout line."""
    import torch

    from . import models

    loss_fn = task.build_loss()
    dtype = amp_dtype(config.amp, device)
    layout_note, rate = None, None
    if spec["config"].get("channels_last", False) is None:      # left to this machine: time both
        layout_note, rate = _settle_layout(task, spec, loss_fn, batch_size=config.batch_size,
                                           device=device, dtype=dtype, dist_info=dist_info)
    model = models.build(spec["name"], spec["config"])
    if not resume:                                     # e.g. local pretrained weights
        task.init_model(model)
    model = model.to(device)
    optimizer = _optimizer(model, config)
    ema = make_ema(model, config.ema) if config.ema else None
    run = _Run(model=model, kept=ema.module if ema is not None else model, train_model=model, optimizer=optimizer,
               scheduler=_scheduler(optimizer, config), ema=ema, loss_fn=loss_fn, dtype=dtype,
               scaler=torch.amp.GradScaler("cuda", enabled=dtype == torch.float16))
    run.timed_rate = rate
    if resume and checkpoint is not None:
        _restore(run, config, checkpoint)
    if dist_info.active:
        run.train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return run, layout_note


def _restore(run: _Run, config: TrainConfig, checkpoint: dict[str, Any]) -> None:
    """Continue from ``checkpoint``: weights (raw and averaged), optimizer, schedule, scaler,
    epoch counter, best score and patience count."""
    state = checkpoint["training"]
    run.model.load_state_dict(state.get("raw_state_dict") or checkpoint["state_dict"])
    if run.ema is not None:
        run.ema.module.load_state_dict(checkpoint["state_dict"])
        run.ema.n_averaged.fill_(state.get("ema_updates", 1))
    run.optimizer.load_state_dict(state["optimizer"])
    if state.get("scheduler") is not None and run.scheduler is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = state["epoch"] + 1
    run.best_score, run.best_epoch, run.stale = state["best_score"], state["best_epoch"], state["stale_epochs"]
    # the learning rate follows from this run's --lr, --epochs and --schedule (which may differ
    # from the stopped run's), not from the optimizer state saved with its old schedule
    _set_lr(run.optimizer, config, run.start_epoch, elapsed_s=0.0)


def _loader(task, config: TrainConfig, samples: int, *, device, workers: int, dist_info):
    """The epoch's samples: the task's data set, its sampler and the DataLoader."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler
    from torch.utils.data.distributed import DistributedSampler

    dataset = task.dataset(length=samples, seed=config.seed)
    sampler = (DistributedSampler(dataset, num_replicas=dist_info.world, rank=dist_info.rank,
                                  shuffle=True, seed=config.seed, drop_last=True)
               if dist_info.active else RandomSampler(dataset, generator=torch.Generator()))
    loaders = workers if workers > 1 else 0
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=loaders,
                        pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=loaders > 0)
    return dataset, sampler, loader


def _start_line(task, device, dist_info) -> str:
    """The first line of a run: cases, input size, spacing, device and normalisation."""
    recipe = task.recipe
    normalise = ""
    if isinstance(recipe.get("normalize"), dict):
        chosen = Normalization(recipe["normalize"], recipe.get("normalize_why", "from the checkpoint"))
        normalise = f", normalise {chosen.describe()}"
    elif recipe.get("normalize"):           # one per input channel, each said in its why
        normalise = f", normalise {recipe.get('normalize_why', '')}"
    return (f"training {task.name}: {len(task.train_cases)} training / {len(task.val_cases)} validation cases, "
            f"{'patch' if 'patch' in recipe else 'input'} {recipe.get('patch', recipe.get('shape'))}, "
            f"spacing {recipe.get('spacing')}, device {device}{normalise}"
            + (f", {dist_info.world} processes" if dist_info.active else ""))


def _train_epoch(task, run: _Run, config: TrainConfig, epoch: int, dataset, sampler, loader, *, device,
                 dist_info, display) -> tuple[float, float, float]:
    """One epoch of training steps: its mean loss (over every process), seconds and data wait."""
    import numpy as np
    import torch

    epoch_seed = _epoch_seed(config.seed, epoch, dist_info.rank)
    torch.manual_seed(epoch_seed)
    dataset.set_epoch(epoch)
    if dist_info.active:
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(epoch_seed)
    augment = task.augmenter(epoch_seed)
    run.train_model.train()
    losses, waited, t0 = [], 0.0, time.perf_counter()
    fetched = time.perf_counter()
    for inputs, targets in loader:
        waited += time.perf_counter() - fetched
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.no_grad():
            inputs, targets = augment(inputs, targets)
        losses.append(_step(task, run, config, inputs, targets, device))
        display.step(epoch, np.mean(losses))
        fetched = time.perf_counter()
    seconds = time.perf_counter() - t0
    mean_loss = float(np.mean(losses))
    if dist_info.active:
        tensor = torch.tensor([mean_loss], device=device)
        torch.distributed.all_reduce(tensor)
        mean_loss = float(tensor) / dist_info.world
    return mean_loss, seconds, waited


def _step(task, run: _Run, config: TrainConfig, inputs, targets, device) -> float:
    """One optimizer step on a batch; its loss. Detection models take the targets in their
    forward pass and return their losses."""
    import torch

    run.optimizer.zero_grad(set_to_none=True)
    arguments = (inputs, targets) if task.model_takes_targets else (inputs,)
    with autocast(device, run.dtype):
        outputs = run.train_model(*arguments)
    loss = run.loss_fn(outputs, targets)
    run.scaler.scale(loss).backward()
    if config.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    return float(loss.detach())


def _end_epoch(task, run: _Run, config: TrainConfig, epoch: int, mean_loss: float, row: EpochRow, *,
               out: Path, columns, payload_base, started: float, device, dist_info, display, say, log) -> bool:
    """Validate (rank 0), step the schedule, log, write the checkpoints, and decide whether to
    stop (patience, time limit); every rank gets rank 0's decision."""
    import torch

    validate = _validates(run, config, epoch, elapsed=time.monotonic() - started)
    metrics: dict[str, float] = {}
    if dist_info.main and validate:
        began = time.monotonic()
        metrics = task.validate(run.kept, device=device, amp_dtype=run.dtype)
        run.val_seconds, run.last_val = time.monotonic() - began, epoch
    score = metrics.get("score", -mean_loss)
    if config.schedule == "plateau":
        run.scheduler.step(score)
    elif config.schedule == "cosine":
        _set_lr(run.optimizer, config, epoch + 1, elapsed_s=_elapsed(started, dist_info, device))
    stop = False
    if dist_info.main:
        improved = validate and score > run.best_score
        if improved:
            run.best_score, run.best_epoch, run.stale, run.best_metrics = score, epoch, 0, metrics
        elif validate:
            run.stale += 1
        row.metrics = metrics
        run.rows.append(row)
        run.tracking.epoch(_append_log(out / LOG, columns, row))
        _checkpoint(task, run, config, epoch, metrics, out=out, payload_base=payload_base, improved=improved)
        display.epoch_done(epoch, mean_loss, metrics)
        if not display.enabled and log is not None:
            dice = "  ".join(f"{k[5:] if k.startswith('dice_') else k} {v:.3f}"
                             for k, v in metrics.items() if k != "score")
            say(f"epoch {epoch + 1}/{config.epochs}  loss {mean_loss:.4f}  {dice}  "
                f"{row.samples_per_s:.1f} samples/s  data wait {row.data_wait:.0%}")
        if run.paced and validate:                      # an epoch's time but its validation:
            ended = time.monotonic()                    # training, logging, checkpoints
            _pace(run, config, train_s=ended - run.epoch_end - run.val_seconds, say=say)
        if config.patience and run.stale >= config.patience:
            stop, run.stopped = True, f"early stop: no better validation score for {run.stale} epochs"
        if config.max_minutes is not None and time.monotonic() - started > config.max_minutes * 60:
            stop, run.stopped = True, f"time limit of {config.max_minutes:g} min reached"
    if dist_info.active:
        flag = torch.tensor([1.0 if stop else 0.0], device=device)
        torch.distributed.broadcast(flag, 0)
        stop = bool(flag.item())
    run.epoch_end = time.monotonic()
    return stop


def paces_validation(config: TrainConfig) -> bool:
    """Whether the run paces its validation by time: ``--max-minutes`` given and ``--val-every``
    not (known from the command line's ``given``; Python callers keep their interval)."""
    return (config.max_minutes is not None and config.given is not None
            and "val_every" not in config.given)


def budget_line(minutes: float, rate: float, samples_per_epoch: int) -> str:
    """What ``minutes`` of training buy at the timed ``rate`` (samples/s): samples and epochs
    (an upper bound: validation, data loading and checkpoints take some of the time)."""
    total = rate * minutes * 60
    return (f"budget: {minutes:.3g} min at about {rate:.1f} samples/s (timed) is at most about "
            f"{total:,.0f} training samples, {total / max(1, samples_per_epoch):,.0f} epochs of "
            f"{samples_per_epoch}")


def _plan_paced(recipe: dict[str, Any]) -> None:
    """The plan's ``val_every`` line (where the task's plan has one) when validation is paced."""
    from .plan import PLANNED

    for line in recipe.get("plan") or []:
        if line.get("name") == "val_every":
            first = "" if line.get("source") != PLANNED else f"{line.get('why')}; "
            line["source"] = PLANNED
            line["why"] = (f"{first}at least this, lengthened from the first validation's cost so "
                           f"that validating takes at most {VAL_TIME_SHARE:.0%} of --max-minutes, "
                           "and the last epoch validated")


def paced_val_every(train_s: float, val_s: float, *, share: float = VAL_TIME_SHARE,
                    at_least: int = 1) -> int:
    """Epochs between validations so that validating (``val_s`` seconds each time) takes at
    most ``share`` of the time when an epoch trains ``train_s`` seconds: the least ``k`` with
    ``val_s / (k * train_s + val_s) <= share``, and at least ``at_least``."""
    if train_s <= 0:
        return at_least
    needed = val_s * (1.0 - share) / (share * train_s)
    return max(at_least, math.ceil(needed - 1e-9))


def _validates(run: _Run, config: TrainConfig, epoch: int, *, elapsed: float) -> bool:
    """Whether ``epoch`` ends with a validation: every ``val_every`` epochs and the last one;
    when paced, counted from the last validation, and also the last epoch the time limit
    leaves (the validation would end past it)."""
    if epoch + 1 == config.epochs:
        return True
    if not run.paced:
        return (epoch + 1) % config.val_every == 0
    if epoch - run.last_val >= config.val_every:
        return True
    return elapsed + (run.val_seconds or 0.0) >= config.max_minutes * 60


def _pace(run: _Run, config: TrainConfig, *, train_s: float, say: Callable[[str], None]) -> None:
    """Set the validation interval from the validation just timed and the epoch's other time
    ``train_s`` (and say so when it changes)."""
    every = paced_val_every(train_s, run.val_seconds, at_least=run.val_floor)
    if every != config.val_every:
        say(f"validation takes {run.val_seconds:.1f} s against {train_s:.1f} s for the rest of an "
            f"epoch: validating every {_epochs(every)} and at the last")
        config.val_every = every


def _epochs(count: int) -> str:
    return "epoch" if count == 1 else f"{count} epochs"


def _checkpoint(task, run: _Run, config: TrainConfig, epoch: int, metrics: dict[str, float], *, out: Path,
                payload_base: dict[str, Any], improved: bool) -> None:
    """Write last.pt (and best.pt when the score improved) and the learning curve."""
    payload = {**payload_base, "state_dict": _cpu_state(run.kept), "metrics": metrics,
               "training": {"epoch": epoch, "best_score": run.best_score, "best_epoch": run.best_epoch,
                            "stale_epochs": run.stale, "config": asdict(config),
                            "options": task.describe()["options"],
                            "optimizer": run.optimizer.state_dict(),
                            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
                            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None}}
    if run.ema is not None:        # resuming needs the raw weights as well as their average
        payload["training"].update(raw_state_dict=_cpu_state(run.model), ema_updates=int(run.ema.n_averaged))
    _save(out / LAST, payload)
    if improved:
        _save(out / BEST, payload)
    _plot(out / LOG, out / CURVE, task.metric_names)


def _summary(run: _Run, out: Path, *, started: float, rank: int) -> dict[str, Any]:
    """What :func:`fit` returns."""
    import numpy as np

    rows = run.rows
    last = rows[-1] if rows else None
    return {"run": str(out), "epochs": (last.epoch + 1) if last else run.start_epoch, "stopped": run.stopped,
            "best_epoch": run.best_epoch + 1, "best_score": run.best_score,
            "final_loss": last.train_loss if last else None,
            # best.pt's validation metrics (a resumed run that found no better epoch: the last's)
            "metrics": run.best_metrics or (last.metrics if last else {}),
            "last_metrics": last.metrics if last else {},
            "samples_per_s": float(np.mean([r.samples_per_s for r in rows])) if rows else None,
            "data_wait": float(np.mean([r.data_wait for r in rows])) if rows else None,
            "minutes": (time.monotonic() - started) / 60, "rank": rank}


def _cpu_state(model) -> dict[str, Any]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def make_ema(model, decay: float):
    """An exponential moving average of ``model``'s weights (and buffers) for ``--ema DECAY``:
    after each optimizer step ``average = decay * average + (1 - decay) * weights``, starting
    from the first step's weights. Validation, ``best.pt`` and ``last.pt`` use the average
    (smoother than the last step's weights when batches are small and noisy)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _optimizer(model, config: TrainConfig):
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=SGD_MOMENTUM, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(optimizer, config: TrainConfig):
    """The plateau scheduler; ``None`` for cosine (set each epoch from :func:`cosine_factor`)
    and constant."""
    import torch

    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=PLATEAU_FACTOR,
                                                          patience=PLATEAU_PATIENCE)
    return None


def cosine_factor(epoch: int, config: TrainConfig, elapsed_s: float) -> float:
    """The cosine schedule's share of ``--lr`` after ``epoch`` epochs.

    The schedule runs over ``--epochs``; with ``--max-minutes`` it runs over whichever ends
    first, the epochs or the time (by the time spent so far), so a run cut short by its time
    limit still ends at a learning rate near zero rather than halfway down.
    """
    progress = epoch / config.epochs
    if config.max_minutes:
        progress = max(progress, elapsed_s / (config.max_minutes * 60.0))
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _set_lr(optimizer, config: TrainConfig, epoch: int, *, elapsed_s: float) -> None:
    """The learning rate for ``epoch`` under the cosine or constant schedule (the plateau
    scheduler keeps its own)."""
    if config.schedule == "plateau":
        return
    factor = cosine_factor(epoch, config, elapsed_s) if config.schedule == "cosine" else 1.0
    for group in optimizer.param_groups:
        group["lr"] = config.lr * factor


def _elapsed(started: float, dist_info, device) -> float:
    """Seconds since ``started`` on rank 0, the same number on every rank."""
    import torch

    elapsed = time.monotonic() - started
    if dist_info.active:
        tensor = torch.tensor([elapsed], device=device, dtype=torch.float64)
        torch.distributed.broadcast(tensor, 0)
        elapsed = float(tensor)
    return elapsed


def _start_log(path: Path, columns: list[str], *, keep_until: int) -> None:
    """Start the log CSV; on resume keep the rows of the epochs before ``keep_until``."""
    kept = []
    if keep_until and path.is_file():
        with open(path, newline="") as handle:
            kept = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= keep_until]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)


def _append_log(path: Path, columns: list[str], row: EpochRow) -> dict[str, str]:
    """Write ``row`` into the log CSV; returns its values by column (what the trackers log)."""
    values = {"epoch": row.epoch + 1, "train_loss": f"{row.train_loss:.6f}", "lr": f"{row.lr:.6g}",
              "seconds": f"{row.seconds:.2f}", "samples_per_s": f"{row.samples_per_s:.2f}",
              "data_wait": f"{row.data_wait:.4f}",
              "val_score": f"{row.metrics['score']:.6f}" if "score" in row.metrics else ""}
    values.update({k: f"{v:.6f}" for k, v in row.metrics.items() if k != "score"})
    with open(path, "a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore").writerow(values)
    return {k: str(values.get(k, "")) for k in columns}


#: Logged validation values that are not scores in [0, 1] (a score cut, false-positive ml):
#: kept in log.csv, left out of the curve.
UNPLOTTED, UNPLOTTED_PREFIXES = {"min_score"}, ("fp_ml_",)


def _plot(log_path: Path, png: Path, metric_names: list[str]) -> None:
    """The learning curve: training loss and the validation metrics per epoch (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from .files import atomic_output

    with open(log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [float(r["train_loss"]) for r in rows], marker=".")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    metric_names = [n for n in metric_names if n not in UNPLOTTED and not n.startswith(UNPLOTTED_PREFIXES)]
    for name in metric_names:
        points = [(e, float(r[name])) for e, r in zip(epochs, rows) if r.get(name)]
        if points:
            right.plot(*zip(*points), marker=".", label=name[5:] if name.startswith("dice_") else name)
    dice_only = all(name.startswith("dice_") for name in metric_names)
    right.set(xlabel="epoch", ylabel="Dice" if dice_only else "score", title="validation",
              ylim=(0, 1))
    if right.lines:
        right.legend(fontsize="small")
    figure.tight_layout()
    with atomic_output(png, force=True) as temp:
        figure.savefig(temp, dpi=100, format="png")
    plt.close(figure)


class _Display:
    """A rich progress bar over epochs and steps on stderr (off in pipes and with --quiet)."""

    def __init__(self, enabled: bool, epochs: int, steps: int, start: int):
        from .console import stderr

        self.enabled = enabled and stderr.is_terminal
        self.epochs, self.steps, self.start = epochs, steps, start
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from .console import stderr

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                      console=stderr.console, transient=False)
            self._progress.start()
            self._epochs = self._progress.add_task("epochs", total=self.epochs, completed=self.start, info="")
            self._steps = self._progress.add_task("steps", total=self.steps, info="")
        return self

    def step(self, epoch: int, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._steps, advance=1, description=f"epoch {epoch + 1}",
                                  info=f"loss {loss:.4f}")

    def epoch_done(self, epoch: int, loss: float, metrics: dict[str, float]) -> None:
        if self._progress is not None:
            dice = " ".join(f"{k[5:]} {v:.3f}" for k, v in metrics.items() if k.startswith("dice_"))
            self._progress.update(self._epochs, completed=epoch + 1, info=f"loss {loss:.4f} {dice}")
            self._progress.reset(self._steps)

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()
