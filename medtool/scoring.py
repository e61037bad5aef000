"""Scoring prediction sets against truth: case matching, per-case tables, leaderboard, bootstrap.

One *run* is one prediction set (a folder of masks, a PredictionString CSV, a classifier CSV).
Cases are matched to the truth by case id. A case of the truth without a prediction counts as an
empty prediction (segmentation, detection) and is reported; a classifier run must cover every
case. Predictions for cases not in the truth are reported and left out. A case that cannot be
scored (shape or geometry mismatch, unreadable file) fails its run: the run gets no score rather
than a partial one.

Segmentation scores each label on its own, or with ``regions`` (:mod:`medtool.metrics.regions`,
``--regions brats``) each named region: the binary mask of a set of labels, such as BraTS's
whole tumour, tumour core and enhancing tumour.

Two metric names belong to two tasks: ``sensitivity`` and ``specificity`` are voxel counts for
segmentation and class counts for classification. Given with metrics of one task they are that
task's; given alone, the truth decides (a ``.csv`` table: classification, else segmentation).

Summaries are means over cases (segmentation: per label, and the mean over labels; detection:
map-iou over the images it counts) or the metric on all cases (classification, coco-map).
``--bootstrap N`` resamples cases with replacement (seeded) and reports the 2.5 and 97.5
percentiles of the summary as a 95% confidence interval; the same resamples serve every run, so
runs are compared on the same draws.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .metrics import boxes as box_metrics
from . import metrics
from .metrics import classification
from .errors import InputError, MedtoolError, UsageError
from .files import VOLUME_SUFFIXES, volume_cases
from .metrics.lesions import LesionRule
from .tables import CASE_ID, read_table

SEGMENTATION = "segmentation"
DETECTION = "detection"
CLASSIFICATION = "classification"
#: Detection metrics; coco-map reports AP@[.50:.95] and AP50.
DETECTION_METRICS = ("map-iou", "coco-map")
COCO_AP50 = "coco-ap50"
#: The metrics of each task.
TASK_METRICS = {SEGMENTATION: metrics.SEGMENTATION_METRICS, DETECTION: DETECTION_METRICS,
                CLASSIFICATION: classification.CLASSIFICATION_METRICS}
#: Every metric and the tasks it belongs to (sensitivity and specificity: two), in the order
#: ``--help`` lists them.
TASKS_OF: dict[str, tuple[str, ...]] = {}
for _task, _names in TASK_METRICS.items():
    for _name in _names:
        TASKS_OF[_name] = (*TASKS_OF.get(_name, ()), _task)
#: Suffix of a truth file that is a table (classification) rather than a volume folder.
TABLE_SUFFIX = ".csv"
HIGHER_IS_BETTER = metrics.HIGHER_IS_BETTER | set(DETECTION_METRICS) | {COCO_AP50} | (
    set(classification.CLASSIFICATION_METRICS))
#: Two-sided confidence level of --bootstrap intervals.
CI_LEVEL = 0.95
#: Grid agreement (mm) required between a prediction and its truth (NIfTI stores float32).
GRID_TOLERANCE_MM = 1e-3
#: Prefix of probability columns in a classifier's predictions.
PROB_PREFIX = "prob_"
#: Column of a classifier's predicted class, and of a survival risk.
PRED_COLUMN, RISK_COLUMN = "pred", "risk"
#: Missing-prediction flag in per-case tables.
FLAG_MISSING = "prediction missing"


@dataclass
class Run:
    """The scores of one prediction set."""

    name: str
    summary: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_case: list[dict[str, Any]] = field(default_factory=list)
    per_slice: list[dict[str, Any]] = field(default_factory=list)
    cases: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    nan: dict[str, list[str]] = field(default_factory=dict)
    failures: list[tuple[str, MedtoolError]] = field(default_factory=list)
    confusion: dict[str, Any] | None = None
    extra_labels: list[int] = field(default_factory=list)
    rank: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "prediction": self.name, "cases": self.cases,
                "scores": self.summary if self.ok else None,
                "ci": {k: list(v) for k, v in self.ci.items()} if self.ok else None,
                "missing": self.missing, "extra": self.extra, "nan": self.nan,
                "failed": [str(error) for _, error in self.failures],
                **({"confusion": self.confusion} if self.confusion else {})}


@dataclass
class Settings:
    """What to score and how (the command's options)."""

    metrics: list[str]
    bootstrap: int = 0
    seed: int = 0
    labels: list[int] | None = None
    truth_column: str = "label"
    time_column: str | None = None
    event_column: str | None = None
    workers: int = 1
    progress: bool = False
    suffix: str = ""
    selection: Any = None                # datasets.Selection: score only these cases
    regions: dict[str, tuple[int, ...]] | None = None   # segmentation: score these label sets
    lesions: LesionRule = LesionRule()   # how the lesion-wise metrics match lesions
    tolerance_mm: float = metrics.NSD_TOLERANCE_MM   # of nsd
    per_slice: bool = False              # keep each slice's Dice (slice-dice) in Run.per_slice
    task_name: str = ""                  # set by score() from the metrics and the truth

    @property
    def task(self) -> str:
        return self.task_name or task_of(self.metrics)


def parse_metrics(values: Sequence[str]) -> list[str]:
    """``--metric dice --metric hd95,assd`` -> names; all of one task; a usage error otherwise."""
    names = [m.strip().lower() for value in values for m in value.split(",") if m.strip()]
    if not names:
        raise UsageError("no --metric given", hint=f"choose from {', '.join(TASKS_OF)}")
    unknown = [m for m in names if m not in TASKS_OF]
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r}", hint=f"choose from {', '.join(TASKS_OF)}")
    task_of(names)
    return list(dict.fromkeys(names))


def task_of(names: Sequence[str], truth: str | os.PathLike | None = None) -> str:
    """The task of metrics ``names``: the one task they all belong to; for names of two tasks
    only (sensitivity, specificity), classification when the truth is a table (or not given)
    and segmentation otherwise.

    Raises
    ------
    UsageError
        The metrics belong to different tasks.
    """
    common = set(TASK_METRICS)
    for name in names:
        common &= set(TASKS_OF[name])
    if not common:
        tasks = sorted({TASKS_OF[m][0] for m in names if len(TASKS_OF[m]) == 1})
        raise UsageError(f"metrics of different tasks ({', '.join(tasks)}) in one run",
                         hint="score segmentation, detection and classification separately")
    if len(common) == 1:
        return common.pop()
    tabular = truth is None or Path(truth).suffix.lower() == TABLE_SUFFIX
    return CLASSIFICATION if tabular else SEGMENTATION


def score(truth: str | os.PathLike, predictions: Sequence[str | os.PathLike], settings: Settings,
          *, on_error: Callable[[MedtoolError], None] | None = None) -> list[Run]:
    """Score every prediction set against ``truth``; return the runs ranked."""
    settings.task_name = settings.task_name or task_of(settings.metrics, truth)
    if settings.regions and settings.labels:
        raise UsageError("--labels and --regions both given", hint="score labels or regions, not both")
    if settings.per_slice and "slice-dice" not in settings.metrics:
        raise UsageError("--per-slice writes the Dice of each slice, and needs the metric slice-dice",
                         hint="add -m slice-dice")
    if settings.regions and settings.task != SEGMENTATION:
        raise UsageError(f"--regions is for segmentation, not {settings.task}",
                         hint="give segmentation metrics (dice, sensitivity, ...) with --regions")
    scorer = {SEGMENTATION: _score_segmentation, DETECTION: _score_detection,
              CLASSIFICATION: _score_classification}[settings.task]
    paths = [Path(p) for p in predictions]
    if settings.task != SEGMENTATION:         # a folder of submissions: one prediction set each
        paths = [q for p in paths for q in _tables_in(p)]
    runs = scorer(Path(truth), paths, settings, on_error)
    rank_runs(runs, primary_column(settings))
    return runs


def primary_column(settings: Settings) -> str:
    """The summary column runs are ranked by: the first metric (over all labels)."""
    return settings.metrics[0]


def rank_runs(runs: list[Run], column: str) -> None:
    """Sort ``runs`` best first by ``column`` (NaN and failed runs last, unranked)."""
    sign = -1.0 if column in HIGHER_IS_BETTER else 1.0

    def key(run: Run):
        value = run.summary.get(column, math.nan) if run.ok else math.nan
        return (math.isnan(value), sign * value if not math.isnan(value) else 0.0)

    runs.sort(key=key)
    rank = 0
    for run in runs:
        value = run.summary.get(column, math.nan)
        run.rank = (rank := rank + 1) if run.ok and not math.isnan(value) else None


def _tables_in(path: Path) -> list[Path]:
    """``path``, or the CSV files of a folder of submissions (sorted)."""
    if not path.is_dir():
        return [path]
    tables = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith("."))
    if not tables:
        raise InputError("a folder with no .csv submissions", path=path,
                         hint="give prediction tables, or a folder of them")
    return tables


def selected(ids: Sequence[str], settings: Settings, truth: Path) -> list[str]:
    """The truth cases ``ids`` that ``settings.selection`` keeps (all without one), in order.

    Raises
    ------
    InputError
        Selected cases the truth does not have.
    """
    if settings.selection is None:
        return list(ids)
    known = set(ids)
    absent = sorted(settings.selection.ids - known)
    if absent:
        raise InputError(f"{len(absent)} of {len(settings.selection.ids)} selected cases "
                         f"({settings.selection.what}) have no truth "
                         f"({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''})", path=truth,
                         hint="give the truth of every selected case, or the folds made from it")
    return [c for c in ids if c in settings.selection.ids]


def _in_selection(pred_ids, settings: Settings) -> list[str]:
    """Predicted cases outside the selection are neither scored nor reported."""
    return list(pred_ids) if settings.selection is None else [c for c in pred_ids if c in settings.selection.ids]


# -- matching case ids -------------------------------------------------------------------------
def match_cases(truth_ids: Sequence[str], pred_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """The truth cases without a prediction, and the predicted cases not in the truth."""
    truth_set, pred_set = set(truth_ids), set(pred_ids)
    return ([c for c in truth_ids if c not in pred_set], sorted(c for c in pred_set if c not in truth_set))


# -- bootstrap ---------------------------------------------------------------------------------
def resamples(n_cases: int, n: int, seed: int) -> np.ndarray:
    """``(n, n_cases)`` case indices drawn with replacement (the same for every run)."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(n, n_cases))


def interval(values: np.ndarray) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values`` (NaN resamples left out; NaN if all are)."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not len(values):
        return (math.nan, math.nan)
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


# -- segmentation ------------------------------------------------------------------------------
@dataclass
class _SegJob:
    case: str
    truth: Path
    pred: Path | None
    metrics: list[str]
    labels: list[int] | None
    regions: dict[str, tuple[int, ...]] | None = None
    lesions: LesionRule = LesionRule()
    tolerance_mm: float = metrics.NSD_TOLERANCE_MM


def _score_volume_pair(job: _SegJob) -> dict[int | str, metrics.MaskScore]:
    from .formats import load_volume

    truth = load_volume(job.truth)
    _check_labels(truth.array, job.truth)
    if job.pred is None:
        return _score_arrays(job, truth.array, np.zeros(truth.shape, np.uint8), truth.spacing)
    pred = load_volume(job.pred)
    if pred.shape != truth.shape:
        raise InputError(f"shape {_shape(pred.shape)} differs from the truth's {_shape(truth.shape)} "
                         f"({job.truth.name})", path=job.pred,
                         hint="resample the prediction onto the truth's grid")
    if not truth.same_grid(pred, atol=GRID_TOLERANCE_MM):
        raise InputError(f"geometry (origin, spacing or direction) differs from the truth's "
                         f"({job.truth.name})", path=job.pred,
                         hint="predict on the truth's grid, or resample onto it")
    _check_labels(pred.array, job.pred)
    return _score_arrays(job, truth.array, pred.array, truth.spacing)


def _score_arrays(job: _SegJob, truth: np.ndarray, pred: np.ndarray, spacing) -> dict[int | str, metrics.MaskScore]:
    options = dict(lesions=job.lesions, tolerance_mm=job.tolerance_mm)
    if job.regions:
        return metrics.score_regions(truth, pred, spacing, job.metrics, job.regions, **options)
    return metrics.score_labels(truth, pred, spacing, job.metrics, job.labels, **options)


def _shape(shape) -> str:
    return " x ".join(map(str, shape))


def _check_labels(array: np.ndarray, path: Path) -> None:
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise InputError("not a label mask (fractional values)", path=path,
                         hint="threshold probabilities into integer labels first")


def _score_segmentation(truth: Path, predictions: list[Path], settings: Settings, on_error) -> list[Run]:
    from .batch import run_batch

    truth_cases = volume_cases(truth, settings.suffix, required=True)
    if not truth_cases:
        raise InputError("no truth volumes", path=truth, hint=f"give a folder of {', '.join(VOLUME_SUFFIXES)} masks")
    ids = selected(sorted(truth_cases), settings, truth)
    runs, jobs, owner = [], [], []
    for pred in predictions:
        run = Run(str(pred))
        runs.append(run)
        try:
            pred_cases = volume_cases(pred, settings.suffix)
        except MedtoolError as error:
            run.failures.append((str(pred), error))
            if on_error:
                on_error(error)
            continue
        if pred.is_file() and truth.is_file():          # one file each: the same case
            pred_cases = {ids[0]: pred}
        run.missing, run.extra = match_cases(ids, _in_selection(pred_cases, settings))
        run.cases = len(ids)
        for case in ids:
            jobs.append(_SegJob(case, truth_cases[case], pred_cases.get(case), settings.metrics,
                                settings.labels, settings.regions, settings.lesions, settings.tolerance_mm))
            owner.append(run)
    outcome = run_batch(_score_volume_pair, jobs, workers=settings.workers, description="scoring",
                        progress=settings.progress, on_error=on_error,
                        name=lambda job: str(job.pred or job.truth))
    errors = dict(outcome.failures)
    for job, run, result in zip(jobs, owner, outcome.results):
        if result is None:
            name = str(job.pred or job.truth)
            run.failures.append((name, errors.get(name) or InputError("could not be scored", path=name)))
    draws = resamples(len(ids), settings.bootstrap, settings.seed) if settings.bootstrap else None
    # the labels are the truth's (the same for every run); labels only predicted are named
    labels = list(settings.regions or settings.labels or sorted(
        {label for result in outcome.results if result for label, score_ in result.items()
         if score_.flag != metrics.FLAG_TRUTH_EMPTY}))
    for run in runs:
        if run.failures:
            continue
        results = [(job, result) for job, run_of, result in zip(jobs, owner, outcome.results)
                   if run_of is run]
        run.extra_labels = sorted({label for _, result in results for label in result} - set(labels))
        _summarise_segmentation(run, results, labels, settings, draws)
    return runs


def _summarise_segmentation(run: Run, results, labels: list[int], settings: Settings, draws) -> None:
    both_empty = metrics.score_masks(np.zeros((1, 1), bool), np.zeros((1, 1), bool), (1.0, 1.0),
                                     settings.metrics, lesions=settings.lesions)
    values = np.full((len(results), len(labels), len(settings.metrics)), np.nan)
    for i, (job, scores) in enumerate(results):
        for j, label in enumerate(labels):
            score_ = scores.get(label, both_empty)
            flag = FLAG_MISSING if job.pred is None else score_.flag
            values[i, j] = [score_.values[m] for m in settings.metrics]
            run.per_case.append({"prediction": run.name, CASE_ID: job.case, "label": label,
                                 **score_.values, "flag": flag})
            if settings.per_slice and score_.slices is not None:
                run.per_slice += _slice_rows(run.name, job.case, label, score_.slices)
    cases = [job.case for job, _ in results]
    for k, metric in enumerate(settings.metrics):
        per_label = values[:, :, k]
        for j, label in enumerate(labels):
            column = per_label[:, j]
            bad = [cases[i] for i in np.flatnonzero(np.isnan(column))]
            if bad:
                run.nan[_column(metric, label, labels)] = bad
        label_means = _nanmean(per_label, axis=0)
        run.summary[metric] = float(np.mean(label_means)) if len(labels) else math.nan
        if len(labels) > 1:
            for j, label in enumerate(labels):
                run.summary[f"{metric}[{label}]"] = float(label_means[j])
        if draws is not None:
            sampled = _nanmean(per_label[draws], axis=1)                 # (N, labels)
            run.ci[metric] = interval(sampled.mean(axis=1))
            if len(labels) > 1:
                for j, label in enumerate(labels):
                    run.ci[f"{metric}[{label}]"] = interval(sampled[:, j])


#: Columns of the per-slice table (``score --per-slice``).
PER_SLICE_COLUMNS = ("prediction", CASE_ID, "label", "slice", "dice", "truth_voxels", "predicted_voxels")


def _slice_rows(run: str, case: str, label, slices: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per slice where the truth or the prediction has the label."""
    return [{"prediction": run, CASE_ID: case, "label": label, "slice": int(k), "dice": float(d),
             "truth_voxels": int(t), "predicted_voxels": int(p)}
            for k, d, t, p in zip(slices["slice"], slices["dice"], slices["truth"], slices["predicted"])]


def _column(metric: str, label, labels) -> str:
    return metric if len(labels) == 1 else f"{metric}[{label}]"


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    counts = np.sum(~np.isnan(values), axis=axis)
    sums = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# -- detection ---------------------------------------------------------------------------------
def _score_detection(truth: Path, predictions: list[Path], settings: Settings, on_error) -> list[Run]:
    truth_boxes = box_metrics.read_truth(truth)
    ids = selected(truth_boxes.ids, settings, truth)
    if len(ids) < len(truth_boxes.ids):
        truth_boxes = truth_boxes.take(ids)
    draws = resamples(len(ids), settings.bootstrap, settings.seed) if settings.bootstrap else None
    runs = []
    for path in predictions:
        run = Run(str(path), cases=len(ids))
        runs.append(run)
        try:
            pred = box_metrics.read_predictions(path)
        except MedtoolError as error:
            run.failures.append((str(path), error))
            if on_error:
                on_error(error)
            continue
        run.missing, run.extra = match_cases(ids, _in_selection(pred.ids, settings))
        pred = pred.take(ids)
        per_image = None
        if "map-iou" in settings.metrics:
            per_image = box_metrics.map_iou_per_image(truth_boxes, pred)
            counted = ~np.isnan(per_image)
            run.summary["map-iou"] = float(per_image[counted].mean()) if counted.any() else math.nan
            if draws is not None:
                run.ci["map-iou"] = interval(_nanmean(per_image[draws], axis=1))
        if "coco-map" in settings.metrics:
            matches = box_metrics.coco_matches(truth_boxes, pred)
            run.summary["coco-map"], run.summary[COCO_AP50] = box_metrics.coco_accumulate(matches)
            if draws is not None:
                weights = np.stack([np.bincount(d, minlength=len(ids)) for d in draws])
                sampled = np.array([box_metrics.coco_accumulate(matches, w) for w in weights])
                run.ci["coco-map"], run.ci[COCO_AP50] = interval(sampled[:, 0]), interval(sampled[:, 1])
        for i, image in enumerate(ids):
            row = {"prediction": run.name, CASE_ID: image, "truth_boxes": int(truth_boxes.counts[i]),
                   "predicted_boxes": int(pred.counts[i])}
            if per_image is not None:
                row["map-iou"] = float(per_image[i])
                row["flag"] = ("no truth, no prediction: not counted" if np.isnan(per_image[i])
                               else FLAG_MISSING if image in run.missing else "")
            run.per_case.append(row)
    return runs


# -- classification ----------------------------------------------------------------------------
@dataclass
class _ClassTruth:
    ids: list[str]
    labels: list[str]
    time: np.ndarray | None
    event: np.ndarray | None


def _read_class_truth(path: Path, settings: Settings) -> _ClassTruth:
    table = read_table(path)
    ids = table.column(CASE_ID if CASE_ID in table.columns else table.columns[0])
    duplicated = [c for c, n in Counter(ids).items() if n > 1]
    if duplicated:
        raise InputError(f"case {duplicated[0]} appears more than once", path=path, hint="give each case once")
    needs_labels = set(settings.metrics) - classification.NEEDS_SURVIVAL
    labels = table.column(settings.truth_column, purpose="the true class; see --truth-column") \
        if needs_labels else [""] * len(ids)
    time = event = None
    if classification.NEEDS_SURVIVAL & set(settings.metrics):
        if not settings.time_column or not settings.event_column:
            raise UsageError("cindex needs --time COL and --event COL (columns of the truth table)",
                             hint="name the follow-up time and event indicator columns")
        time = _numbers(table, settings.time_column)
        event = _numbers(table, settings.event_column)
        if not np.isin(event, (0, 1)).all():
            raise InputError(f"column {settings.event_column!r} is not 0/1", path=path,
                             hint="1 = event observed, 0 = censored")
    return _ClassTruth(ids, labels, time, event)


def _numbers(table, column: str) -> np.ndarray:
    values = table.column(column)
    out = np.empty(len(values))
    for i, value in enumerate(values):
        try:
            out[i] = float(value)
        except ValueError:
            raise table.error(i, f"{column} {value!r} is not a number", "fill in a number") from None
        if not math.isfinite(out[i]):
            raise table.error(i, f"{column} is {value}", "fill in a finite number")
    return out


def _score_classification(truth_path: Path, predictions: list[Path], settings: Settings,
                          on_error) -> list[Run]:
    truth = _read_class_truth(truth_path, settings)
    keep = selected(truth.ids, settings, truth_path)
    if len(keep) < len(truth.ids):
        index = [i for i, c in enumerate(truth.ids) if c in settings.selection.ids]
        truth = _ClassTruth(keep, [truth.labels[i] for i in index],
                            None if truth.time is None else truth.time[index],
                            None if truth.event is None else truth.event[index])
    draws = resamples(len(truth.ids), settings.bootstrap, settings.seed) if settings.bootstrap else None
    runs = []
    for path in predictions:
        run = Run(str(path), cases=len(truth.ids))
        runs.append(run)
        try:
            _score_classifier_run(run, path, truth, settings, draws)
        except MedtoolError as error:
            run.failures.append((str(path), error))
            run.summary.clear()
            if on_error:
                on_error(error)
    return runs


def _score_classifier_run(run: Run, path: Path, truth: _ClassTruth, settings: Settings, draws) -> None:
    table = read_table(path)
    id_column = CASE_ID if CASE_ID in table.columns else table.columns[0]
    ids = table.column(id_column)
    prob_columns = [c for c in table.columns if c.startswith(PROB_PREFIX)]
    run.missing, run.extra = match_cases(truth.ids, _in_selection(ids, settings))
    if run.missing:
        raise InputError(f"no prediction for {len(run.missing)} of {len(truth.ids)} cases "
                         f"({', '.join(run.missing[:5])}{', ...' if len(run.missing) > 5 else ''})",
                         path=path, hint="a classifier must predict every case of the truth")
    row_of = {case: i for i, case in enumerate(ids)}
    rows = [row_of[c] for c in truth.ids]
    if prob_columns:
        classes = [c[len(PROB_PREFIX):] for c in prob_columns]
        prob = np.array([[_number(table, i, c) for c in prob_columns] for i in rows])
    else:
        classes = sorted(set(truth.labels) | {table.rows[i].get(PRED_COLUMN, "") for i in rows} - {""})
        prob = None
    needs_prob = classification.NEEDS_PROBABILITIES & set(settings.metrics)
    if needs_prob and prob is None:
        raise InputError(f"{', '.join(sorted(needs_prob))} needs probabilities, the table has no "
                         f"{PROB_PREFIX}<class> columns", path=path, hint="write one prob_<class> column per class")
    needs_labels = set(settings.metrics) - classification.NEEDS_SURVIVAL
    truth_index, pred_index = (_class_indices(table, path, rows, truth, classes, prob) if needs_labels
                               else (np.zeros(len(rows), np.intp), np.zeros(len(rows), np.intp)))
    risk = None
    if classification.NEEDS_SURVIVAL & set(settings.metrics):
        if RISK_COLUMN in table.columns:
            risk = np.array([_number(table, i, RISK_COLUMN) for i in rows])
        elif prob is not None and prob.shape[1] == 2:
            risk = prob[:, 1]
        else:
            raise InputError(f"cindex needs a {RISK_COLUMN!r} column (or two-class probabilities)",
                             path=path, hint="write the predicted risk, higher for earlier events")
    n_classes = len(classes)
    functions = {m: classification.metric_function(m, n_classes) for m in settings.metrics}

    def evaluate(take: np.ndarray) -> dict[str, float]:
        return {m: f(truth_index[take], pred_index[take], None if prob is None else prob[take],
                     None if truth.time is None else truth.time[take],
                     None if truth.event is None else truth.event[take],
                     None if risk is None else risk[take])
                for m, f in functions.items()}

    run.summary.update(evaluate(np.arange(len(rows))))
    for metric, value in run.summary.items():
        if math.isnan(value):
            run.nan[metric] = ["(all cases)"]
    if draws is not None:
        sampled = [evaluate(d) for d in draws]
        run.ci.update({m: interval(np.array([s[m] for s in sampled])) for m in settings.metrics})
    if needs_labels:
        run.confusion = {"classes": classes,
                         "matrix": classification.confusion_matrix(truth_index, pred_index, n_classes).tolist()}
    for n, case in enumerate(truth.ids):
        row = {"prediction": run.name, CASE_ID: case}
        if needs_labels:
            row.update(truth=classes[truth_index[n]], pred=classes[pred_index[n]],
                       correct=int(truth_index[n] == pred_index[n]))
        if risk is not None:
            row.update(time=truth.time[n], event=int(truth.event[n]), risk=risk[n])
        run.per_case.append(row)


def _class_indices(table, path: Path, rows: list[int], truth: "_ClassTruth", classes: list[str],
                   prob: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The true and the predicted class of each case as indices into ``classes`` (the table's
    ``pred`` column, else the arg-max of its probabilities).

    Raises
    ------
    InputError
        A true or predicted class that is not one of ``classes``, or neither predictions nor
        probabilities.
    """
    index = {name: k for k, name in enumerate(classes)}
    truth_index = np.zeros(len(rows), np.intp)
    for n, label in enumerate(truth.labels):
        if label not in index:
            raise InputError(f"true class {label!r} of case {truth.ids[n]} is not one of the predicted "
                             f"classes {', '.join(classes)}", path=path,
                             hint=f"add a {PROB_PREFIX}{label} column, or check --truth-column")
        truth_index[n] = index[label]
    if PRED_COLUMN in table.columns:
        pred_index = np.zeros(len(rows), np.intp)
        for n, i in enumerate(rows):
            value = table.rows[i][PRED_COLUMN]
            if value not in index:
                raise table.error(i, f"pred {value!r} is not one of the classes {', '.join(classes)}",
                                  "predict one of the classes")
            pred_index[n] = index[value]
        return truth_index, pred_index
    if prob is not None:
        return truth_index, prob.argmax(axis=1)
    raise InputError(f"no {PRED_COLUMN!r} column and no probabilities", path=path,
                     hint=f"write case_id,{PROB_PREFIX}<class>...,{PRED_COLUMN}")


def _number(table, index: int, column: str) -> float:
    value = table.rows[index][column]
    try:
        number = float(value)
    except ValueError:
        raise table.error(index, f"{column} {value!r} is not a number", "write a number") from None
    if not math.isfinite(number):
        raise table.error(index, f"{column} is {value}", "write a finite number")
    return number


def per_case_columns(runs: Sequence[Run]) -> list[str]:
    """The columns of the per-case table: the union of the rows' keys, in first-seen order."""
    columns: dict[str, None] = {}
    for run in runs:
        for row in run.per_case:
            columns.update(dict.fromkeys(row))
    return list(columns)
