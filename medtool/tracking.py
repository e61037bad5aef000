"""Experiment tracking of a training run (``medtool train ... --log tensorboard,mlflow``), with
no server and no network.

``tensorboard``
    TensorBoard event files in ``ROOT/tensorboard/<run>/`` (``torch.utils.tensorboard``; the
    optional ``tensorboard`` package, ``pip install 'medtool[tensorboard]'``): the plan and the
    options as text, the simple options as hparams, every value of a ``log.csv`` row as a
    scalar of the same name at step = epoch, and the learning curve as an image at the end.
``mlflow``
    An MLflow file store in ``ROOT/mlruns/`` written as MLflow's ``FileStore`` lays it out,
    without the mlflow package: ``mlruns/0/meta.yaml`` (the experiment, named after ``ROOT``),
    ``mlruns/0/<run_id>/meta.yaml``, ``params/<name>`` (the value's text),
    ``metrics/<name>`` (lines ``<timestamp_ms> <value> <step>``), ``tags/`` (``mlflow.runName``
    ...) and ``artifacts/`` (``curve.png``, ``plan.json``). ``MlflowClient(tracking_uri=
    'file:ROOT/mlruns')`` reads it (mlflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for file
    stores).

``ROOT`` is the run folder, or the folder of a ``--cv`` run, whose folds are the runs
``fold_K``. A resumed run (``--resume``) appends to the same TensorBoard run and MLflow run and
drops what they hold of the epochs it trains again. :func:`open_tracking` builds the trackers
of one run; :func:`medtool.train.fit` calls :meth:`Tracking.start`, :meth:`Tracking.epoch` with
each row it writes into ``log.csv``, and :meth:`Tracking.finish`.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from .errors import UsageError

#: ``--log`` values: the trackers, and no tracking.
TENSORBOARD, MLFLOW, NONE = "tensorboard", "mlflow", "none"
TRACKERS = (TENSORBOARD, MLFLOW)
#: Folders of the trackers under the tracking root.
TENSORBOARD_DIR, MLFLOW_DIR = "tensorboard", "mlruns"
#: The MLflow experiment every run of a root goes into (MLflow's default experiment id).
EXPERIMENT_ID = "0"
#: MLflow's RunStatus and SourceType numbers as its FileStore writes them into meta.yaml.
RUNNING, FINISHED, FAILED = 1, 3, 4
SOURCE_LOCAL = 4
#: The log.csv column that is the step of every other value.
STEP_COLUMN = "epoch"
#: The learning-curve image's TensorBoard tag.
CURVE_TAG = "curve"


def parse(spec: str | None) -> tuple[str, ...]:
    """The trackers ``--log`` names (``tensorboard``, ``mlflow``, both comma-separated, or ``none``).

    Raises
    ------
    UsageError
        An unknown name, or ``tensorboard`` without the tensorboard package.
    """
    names = tuple(dict.fromkeys(n.strip().lower() for n in (spec or NONE).split(",") if n.strip()))
    unknown = [n for n in names if n not in (*TRACKERS, NONE)]
    if unknown:
        raise UsageError(f"--log {spec}: choose {', '.join(TRACKERS)} (comma-separated) or {NONE}")
    if NONE in names and len(names) > 1:
        raise UsageError(f"--log {spec}: {NONE} goes alone")
    if TENSORBOARD in names and not _available("tensorboard"):
        raise UsageError("--log tensorboard needs the tensorboard package", hint="pip install 'medtool[tensorboard]'")
    return tuple(n for n in names if n != NONE)


def _available(package: str) -> bool:
    """Whether ``package`` can be imported (found, not imported: ``--help`` stays fast)."""
    return importlib.util.find_spec(package) is not None


def open_tracking(spec: str | None, root: Path, name: str) -> "Tracking":
    """The trackers ``spec`` (``--log``) of the run ``name`` under the tracking ``root``."""
    makers = {TENSORBOARD: _TensorBoard, MLFLOW: _MlflowFiles}
    return Tracking([makers[n](Path(root), name) for n in parse(spec)])


class Tracking:
    """The trackers of one run, called together (none: every call does nothing)."""

    def __init__(self, trackers: list[Any] | None = None):
        self.trackers = trackers or []

    def start(self, run: Path, plan: dict[str, Any], options: dict[str, Any], *,
              resume_after: int | None = None) -> None:
        """Open the run: ``plan`` (plan.json's content) and ``options`` (``{"task": name,
        "options": {...}, "loop": {...}}``); ``resume_after``: the epochs (1-based) kept
        from the resumed run, whose later values are dropped."""
        for tracker in self.trackers:
            tracker.start(run, plan, options, resume_after=resume_after)

    def epoch(self, values: dict[str, str]) -> None:
        """One row of log.csv (its column names and texts; ``epoch`` is the step)."""
        for tracker in self.trackers:
            tracker.epoch(values)

    def finish(self, artifacts: list[Path], *, failed: bool = False) -> None:
        """Close the run; ``artifacts`` that exist go with it (the curve, plan.json)."""
        for tracker in self.trackers:
            tracker.finish([p for p in artifacts if Path(p).is_file()], failed=failed)


def _flat_options(options: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Options, loop settings and planned values as one flat name -> value table (``plan.NAME``
    for the plan's values; the bookkeeping list ``given`` left out)."""
    flat: dict[str, Any] = {"task": options.get("task")}
    for group in ("options", "loop"):
        flat.update({k: v for k, v in (options.get(group) or {}).items() if k != "given"})
    flat.update({f"plan.{line['name']}": line["value"] for line in plan.get("plan") or []})
    return flat


def _plan_text(plan: dict[str, Any]) -> str:
    """The plan as markdown lines (TensorBoard text, MLflow's run description)."""
    from .plan import PlanLine

    lines = [PlanLine(**line).describe().strip() for line in plan.get("plan") or []]
    return "\n".join(f"    {line}" for line in lines) or "(no plan)"


def _steps(values: dict[str, str]) -> tuple[int, dict[str, float]]:
    """A log.csv row's epoch and its other non-empty values as numbers."""
    return int(values[STEP_COLUMN]), {k: float(v) for k, v in values.items() if k != STEP_COLUMN and v != ""}


# -- TensorBoard ------------------------------------------------------------------------------------
class _TensorBoard:
    """TensorBoard event files of one run (``ROOT/tensorboard/<run>/``)."""

    def __init__(self, root: Path, name: str):
        self.folder = root / TENSORBOARD_DIR / name
        self.writer = None
        self.step = 0

    def start(self, run: Path, plan: dict[str, Any], options: dict[str, Any], *, resume_after: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if resume_after is None:          # a new run: start over (--force)
            for old in self.folder.glob("events.out.tfevents.*"):
                old.unlink()
        # resumed: the events of the epochs trained again are purged (TensorBoard's purge_step)
        self.writer = SummaryWriter(str(self.folder), purge_step=None if resume_after is None else resume_after + 1)
        self.step = resume_after or 0
        if resume_after is not None and len(list(self.folder.glob("events.out.tfevents.*"))) > 1:
            return                        # resumed: the text and hparams are there already
        self.writer.add_text("plan", _plan_text(plan), 0)
        self.writer.add_text("options", "\n".join(f"    {line}" for line in json.dumps(options, indent=1, default=str).splitlines()), 0)
        from torch.utils.tensorboard.summary import hparams

        simple = {k: v for k, v in _flat_options(options, plan).items() if isinstance(v, (bool, int, float, str))}
        for summary in hparams(simple, {"val_score": 0.0}):
            self.writer._get_file_writer().add_summary(summary)

    def epoch(self, values: dict[str, str]) -> None:
        self.step, numbers = _steps(values)
        for tag, value in numbers.items():
            self.writer.add_scalar(tag, value, self.step)
        self.writer.flush()

    def finish(self, artifacts: list[Path], *, failed: bool) -> None:
        if self.writer is None:
            return
        for path in artifacts:
            if path.suffix == ".png":
                from matplotlib import image

                self.writer.add_image(CURVE_TAG if path.stem == "curve" else path.stem,
                                      image.imread(path)[..., :3], self.step, dataformats="HWC")
        self.writer.close()
        self.writer = None


# -- MLflow file store ------------------------------------------------------------------------------
def _now_ms() -> int:
    return int(time.time() * 1000)


def _yaml(values: dict[str, Any]) -> str:
    """Flat YAML as MLflow writes its meta.yaml (strings quoted as JSON, which YAML reads)."""
    def text(value):
        return "null" if value is None else json.dumps(value) if isinstance(value, (str, list)) else str(value)

    return "".join(f"{key}: {text(value)}\n" for key, value in sorted(values.items()))


def _read_yaml(path: Path) -> dict[str, Any]:
    """A flat meta.yaml as written by :func:`_yaml` or by MLflow (plain scalars)."""
    values: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        key, _, raw = line.partition(": ")
        raw = raw.strip()
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw.strip("'")
    return values


class _MlflowFiles:
    """One run of an MLflow file store (``ROOT/mlruns/``), written as MLflow's FileStore does."""

    def __init__(self, root: Path, name: str):
        self.store = root.resolve() / MLFLOW_DIR
        self.experiment = self.store / EXPERIMENT_ID
        self.root_name, self.name = root.resolve().name, name
        self.folder: Path | None = None

    def start(self, run: Path, plan: dict[str, Any], options: dict[str, Any], *, resume_after: int | None) -> None:
        if not (self.experiment / "meta.yaml").is_file():
            self.experiment.mkdir(parents=True, exist_ok=True)
            (self.store / ".trash").mkdir(exist_ok=True)
            now = _now_ms()
            (self.experiment / "meta.yaml").write_text(_yaml({
                "artifact_location": self.experiment.as_uri(), "creation_time": now, "experiment_id": EXPERIMENT_ID,
                "last_update_time": now, "lifecycle_stage": "active", "name": self.root_name or "medtool"}))
        self.folder = self._resumed(resume_after) if resume_after is not None else None
        if self.folder is None:
            self.folder = self._create()
        self._meta(status=RUNNING, end_time=None)
        for key, value in _flat_options(options, plan).items():
            (self.folder / "params" / key).write_text(str(value))
        tags = {"mlflow.runName": self.name, "mlflow.source.type": "LOCAL", "mlflow.source.name": "medtool",
                "mlflow.user": _user(), "mlflow.note.content": _plan_text(plan), "task": str(options.get("task"))}
        for key, value in tags.items():
            (self.folder / "tags" / key).write_text(value)

    def _create(self) -> Path:
        run_id = uuid.uuid4().hex
        folder = self.experiment / run_id
        for sub in ("metrics", "params", "tags", "artifacts"):
            (folder / sub).mkdir(parents=True)
        (folder / "meta.yaml").write_text(_yaml({
            "artifact_uri": (folder / "artifacts").as_uri(), "end_time": None, "entry_point_name": "",
            "experiment_id": EXPERIMENT_ID, "lifecycle_stage": "active", "run_id": run_id, "run_uuid": run_id,
            "run_name": self.name, "source_name": "", "source_type": SOURCE_LOCAL, "source_version": "",
            "start_time": _now_ms(), "status": RUNNING, "tags": [], "user_id": _user()}))
        return folder

    def _resumed(self, resume_after: int) -> Path | None:
        """The latest run of this name, its metrics cut to the epochs up to ``resume_after``."""
        runs = [meta.parent for meta in self.experiment.glob("*/meta.yaml")
                if (meta.parent / "tags" / "mlflow.runName").is_file()
                and (meta.parent / "tags" / "mlflow.runName").read_text() == self.name]
        if not runs:
            return None
        folder = max(runs, key=lambda f: int(_read_yaml(f / "meta.yaml").get("start_time") or 0))
        for metric in (folder / "metrics").iterdir():
            kept = [line for line in metric.read_text().splitlines() if int(line.split()[2]) <= resume_after]
            metric.write_text("".join(f"{line}\n" for line in kept))
        return folder

    def _meta(self, **changes: Any) -> None:
        path = self.folder / "meta.yaml"
        path.write_text(_yaml({**_read_yaml(path), **changes}))

    def epoch(self, values: dict[str, str]) -> None:
        step, numbers = _steps(values)
        now = _now_ms()
        for key, value in numbers.items():
            with open(self.folder / "metrics" / key, "a") as handle:
                handle.write(f"{now} {value} {step}\n")

    def finish(self, artifacts: list[Path], *, failed: bool) -> None:
        if self.folder is None:
            return
        for path in artifacts:
            shutil.copyfile(path, self.folder / "artifacts" / Path(path).name)
        self._meta(status=FAILED if failed else FINISHED, end_time=_now_ms())
        self.folder = None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):       # no user name in a container
        return "unknown"
