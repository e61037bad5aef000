"""K-fold cross-validation in one command (``medtool train <task> --cv``), for every task.

Every fold of the folds CSV is validated once: ``RUN/fold_K/`` is a normal run (checkpoints,
log, curve) trained on the other numbered folds (the ``test`` fold is in none). Its
``last.pt`` (the fixed-length run, so no checkpoint is chosen on the cases it is then judged
on) predicts the held-out fold (:meth:`medtool.tasks.Task.held_out`): the out-of-fold table
``RUN/oof.csv`` gets a row per held-out case with its fold (classify: ``case_id,
prob_<class>..., pred, truth``, read by ``medtool score`` as it is; segment: ``case_id,
output, dice_<class>...`` with the label volumes under ``RUN/oof/``; detect: the RSNA
``patientId,PredictionString`` rows). ``RUN/cv.json`` holds each fold's metrics, their mean
and spread (sample standard deviation over the folds, NaN folds left out and counted) and the
metrics of the pooled out-of-fold predictions.

The folds share the recipe planned on the first fold (``Task.plan_keys``: spacing, patch or
input shape, normalisation, classes), so their models take the same inputs and ``medtool
predict RUN`` can average them (:func:`fold_checkpoints`). ``--max-minutes`` is the budget of
the whole run: each fold gets the time left over the folds left.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import UsageError

#: Files of a cross-validation run.
OOF, SUMMARY = "oof.csv", "cv.json"
#: The checkpoint of each fold that predicts its held-out cases.
FOLD_CHECKPOINT = "last.pt"
#: The folder of a run's out-of-fold predictions that are files (segmentation label volumes).
OOF_DIR = "oof"
#: A fold whose share of ``--max-minutes`` is spent still trains (one epoch: 0 would mean no limit).
MIN_FOLD_MINUTES = 1e-3


def fold_dir(out: Path, fold: int) -> Path:
    return Path(out) / f"fold_{fold}"


def cross_validate(task_name: str, options: Any, config, out: str | Path, *, device, workers: int = 1,
                   force: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                   step: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train every fold of ``options.folds`` under ``out`` and write the out-of-fold
    predictions and the summary (see the module docstring); returns the summary."""
    from .datasets import numbered_folds, read_folds
    from .files import atomic_write_text, check_writable
    from .tables import write_csv
    from .tasks import make_task
    from .train import fit, load_checkpoint

    say = log or (lambda text: None)
    if not getattr(options, "folds", None):
        raise UsageError("--cv needs --folds folds.csv", hint="make one with medtool folds")
    if options.fold is not None:
        raise UsageError("--cv trains every fold; leave out --fold")
    out = Path(out)
    for name in (OOF, SUMMARY):
        check_writable(out / name, force=force)
    folds = numbered_folds(read_folds(options.folds))
    if len(folds) < 2:
        raise UsageError(f"--cv needs at least two folds, {options.folds} has {len(folds)}")
    deadline = None if not config.max_minutes else time.monotonic() + 60 * config.max_minutes
    rows: list[dict[str, Any]] = []
    held, per_fold, plan, columns = [], [], None, []
    task = None
    for number, fold in enumerate(folds, start=1):
        say(f"fold {fold} ({number} of {len(folds)})")
        task = make_task(task_name, dataclasses.replace(options, fold=fold), recipe=copy.deepcopy(plan))
        run = fold_dir(out, fold)
        fold_config = copy.deepcopy(config)
        if deadline is not None:
            fold_config.max_minutes = max(MIN_FOLD_MINUTES, (deadline - time.monotonic()) / 60 / (len(folds) - number + 1))
        summary = fit(task, fold_config, run, device=device, workers=workers, force=force,
                      progress=progress, log=log, step=step, tracking_root=out)
        if plan is None:
            plan = {k: v for k, v in task.recipe.items() if k in task.plan_keys} or None
        result = task.held_out(load_checkpoint(run / FOLD_CHECKPOINT), device=device, out=out / OOF_DIR, fold=fold)
        held.append(result)
        columns = [*result.columns, "fold"]
        per_fold.append({"fold": fold, "train_cases": len(task.train_cases), "val_cases": len(task.val_cases),
                         "epochs": summary["epochs"], "minutes": summary["minutes"], **result.metrics})
        rows.extend({**row, "fold": fold} for row in result.rows)
        say(f"fold {fold}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items()))
    pooled = task.pool(held)
    spread = {}
    for name in pooled:
        values = np.array([f.get(name, math.nan) for f in per_fold], dtype=float)
        finite = values[np.isfinite(values)]
        spread[name] = {"mean": float(finite.mean()) if finite.size else math.nan,
                        "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                        "values": values.tolist(), "undefined_folds": int((~np.isfinite(values)).sum())}
    key = columns[0]
    rows.sort(key=lambda r: r[key])
    write_csv(out / OOF, columns, rows, force=force)
    result = {"run": str(out), "task": task_name, "folds": len(folds), "checkpoint": FOLD_CHECKPOINT,
              "oof": str(out / OOF), "cases": len(rows), "metrics": spread, "pooled": pooled, "per_fold": per_fold}
    atomic_write_text(out / SUMMARY, json.dumps(_no_nan(result), indent=1), force=True)
    return result


def fold_checkpoints(run: str | Path) -> list[Path]:
    """The ``last.pt`` of every fold of a ``--cv`` run folder, in fold order (what ``medtool
    predict RUN`` averages).

    Raises
    ------
    InputError
        ``run`` holds no ``fold_K/last.pt``.
    """
    from .errors import InputError

    run = Path(run)
    found = sorted((int(p.parent.name.split("_", 1)[1]), p) for p in run.glob(f"fold_*/{FOLD_CHECKPOINT}")
                   if p.parent.name.split("_", 1)[1].isdigit())
    if not found:
        raise InputError(f"no fold_K/{FOLD_CHECKPOINT} in this folder", path=run,
                         hint="give a checkpoint file, or the run folder of train --cv")
    return [p for _, p in found]


def _no_nan(value):
    """``value`` with NaN floats as ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
