"""K-fold cross-validation in one command (``medtool train --cv``).

Every fold of the folds CSV is validated once: ``RUN/fold_K/`` is a normal run (checkpoints,
log, curve) trained on the other folds. Its ``last.pt`` (the fixed-length run, so no
checkpoint is chosen on the cases it is then judged on) predicts the held-out fold; the
predictions of all folds make the out-of-fold table ``RUN/oof.csv`` (``case_id,
prob_<class>..., pred, truth, fold``: ``medtool score`` reads it as it is), and ``RUN/cv.json``
holds each fold's metrics, their mean and spread (sample standard deviation over the folds,
NaN folds left out and counted) and the metrics of the pooled out-of-fold predictions.

The task provides ``probabilities(model, cases, device=...)`` over its ``val_cases`` (dicts
with ``case_id`` and ``label``) and ``recipe["classes"]``; classification does.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import UsageError

#: Files of a cross-validation run.
OOF, SUMMARY = "oof.csv", "cv.json"
#: The checkpoint of each fold that predicts its held-out cases.
FOLD_CHECKPOINT = "last.pt"


def fold_dir(out: Path, fold: int) -> Path:
    return Path(out) / f"fold_{fold}"


def cross_validate(task_name: str, options: Any, config, out: str | Path, *, device, workers: int = 1,
                   force: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                   step: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train every fold of ``options.folds`` under ``out`` and write the out-of-fold
    predictions and the summary (see the module docstring); returns the summary."""
    from .classify import evaluate, prediction_columns, prediction_rows
    from .datasets import numbered_folds, read_folds
    from .files import atomic_write_text, check_writable
    from .tables import write_csv
    from .tasks import info, make_task
    from .train import build_model, fit, load_checkpoint

    say = log or (lambda text: None)
    if not info(task_name).cross_validates:
        raise UsageError(f"--cv is not available for {task_name} yet", hint="train one fold at a time: --fold K")
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
    rows: list[dict[str, Any]] = []
    truths, probs, per_fold = [], [], []
    classes: list[str] = []
    for number, fold in enumerate(folds, start=1):
        say(f"fold {fold} ({number} of {len(folds)})")
        task = make_task(task_name, dataclasses.replace(options, fold=fold))
        run = fold_dir(out, fold)
        summary = fit(task, copy.deepcopy(config), run, device=device, workers=workers, force=force,
                      progress=progress, log=log, step=step)
        model = build_model(load_checkpoint(run / FOLD_CHECKPOINT)).to(device)
        classes = task.recipe["classes"]
        p = task.probabilities(model, task.val_cases, device=device)
        t = np.array([c["label"] for c in task.val_cases])
        metrics = evaluate(t, p)
        per_fold.append({"fold": fold, "train_cases": len(task.train_cases), "val_cases": len(task.val_cases),
                         "epochs": summary["epochs"], "minutes": summary["minutes"], **metrics})
        for row, label in zip(prediction_rows([c["case_id"] for c in task.val_cases], p, classes), t):
            rows.append({**row, "truth": classes[int(label)], "fold": fold})
        truths.append(t)
        probs.append(p)
        say(f"fold {fold}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    pooled = evaluate(np.concatenate(truths), np.concatenate(probs))
    spread = {}
    for name in pooled:
        values = np.array([f[name] for f in per_fold], dtype=float)
        finite = values[np.isfinite(values)]
        spread[name] = {"mean": float(finite.mean()) if finite.size else math.nan,
                        "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                        "values": values.tolist(), "undefined_folds": int((~np.isfinite(values)).sum())}
    rows.sort(key=lambda r: r["case_id"])
    write_csv(out / OOF, [*prediction_columns(classes), "truth", "fold"], rows, force=force)
    result = {"run": str(out), "folds": len(folds), "checkpoint": FOLD_CHECKPOINT, "oof": str(out / OOF),
              "cases": len(rows), "metrics": spread, "pooled": pooled, "per_fold": per_fold}
    atomic_write_text(out / SUMMARY, json.dumps(_no_nan(result), indent=1), force=True)
    return result


def _no_nan(value):
    """``value`` with NaN floats as ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
