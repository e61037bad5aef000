"""What a learning task is, and the one registry of them.

A task is what ``medtool train <task>`` trains and ``medtool predict`` runs: segmentation
(:mod:`medtool.segmentation`), classification (:mod:`medtool.classify`) and detection
(:mod:`medtool.detection`). Each subclasses :class:`Task`, which holds what they share (the
options, the recipe, the split into training and validation cases, the preprocessing cache),
and provides the rest of the interface :func:`medtool.train.fit` uses:

``prepare(cache, *, seed, workers, progress, build_cache, on_error)``
    find and split the cases, plan the recipe (unless it came from a checkpoint), write or
    read the cache; sets ``train_cases`` and ``val_cases``.
``model_spec()``, ``build_loss()``, ``dataset(length=, seed=)``, ``augmenter(seed)``,
``metric_names``, ``validate(model, device=, amp_dtype=)``
    the network, the loss, the training samples, their augmentation, the validation metrics
    (``score`` is the one best.pt is chosen by).
``example_batch(batch_size)`` (optional)
    a batch to time the memory layouts on, for tasks whose model can run channels-last.
``held_out(checkpoint, device=, out=, fold=)`` and ``pool(held)``
    what ``train --cv`` needs (:mod:`medtool.crossval`): one fold's model on its held-out
    cases (out-of-fold rows and the fold's metrics, as a :class:`HeldOut`) and the metrics of
    all folds' held-out predictions together. ``plan_keys`` are the recipe entries the folds
    share (planned on the first fold), so that the folds' models can be ensembled.

:data:`REGISTRY` names each task's class, options, predictor and loop defaults, so a fourth
task touches its own module and this registry.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .datasets import EpochSet, SharedEpoch
from .errors import InputError, UsageError, check_choice
from .intensity import CT_WINDOW

#: The cache index of a run's preprocessed cases (``RUN/cache/index.json``).
CACHE_INDEX = "index.json"
#: Ids a message names at the most (the rest: "...").
NAMED_IDS = 5


@dataclass(frozen=True)
class TaskInfo:
    """A task in the registry: where its parts live (``"module:name"``, imported on use) and
    the loop defaults that differ by task (``steps`` 0: one pass over the training cases)."""

    name: str
    task: str
    options: str
    predict: str
    summary: str
    steps: int
    batch_size: int
    #: What predict reads: volume files, or 2D pictures of any file name (DICOM, PNG).
    reads: str = "volumes"
    #: predict writes a file per case (``--suffix`` names them), else one table.
    per_case_outputs: bool = False
    #: predict can average the folds of a ``--cv`` run (class probabilities).
    ensembles: bool = True
    #: gradcam explains its models.
    explainable: bool = True



#: Every task: name -> :class:`TaskInfo`, in the order ``medtool train --help`` lists them.
REGISTRY: dict[str, TaskInfo] = {
    "segment": TaskInfo("segment", "medtool.segmentation:SegmentTask", "medtool.segmentation:SegmentOptions",
                        "medtool.segmentation:predict_files", "U-Net 2D/3D from volumes and masks",
                        steps=50, batch_size=2, per_case_outputs=True),
    "classify": TaskInfo("classify", "medtool.classify:ClassifyTask", "medtool.classify:ClassifyOptions",
                         "medtool.classify:predict_files", "2D/3D CNN from volumes and a label table",
                         steps=0, batch_size=8),
    "detect": TaskInfo("detect", "medtool.detection:DetectTask", "medtool.detection:DetectOptions",
                       "medtool.detection:predict_files", "RetinaNet from X-rays and a box table",
                       steps=0, batch_size=8, reads="pictures", ensembles=False, explainable=False),
}


def load(spec: str):
    """The object ``"module:name"`` names."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def info(name: str) -> TaskInfo:
    """The registry entry of task ``name``.

    Raises
    ------
    UsageError
        No such task.
    """
    if name not in REGISTRY:
        raise UsageError(f"unknown task {name!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def make_task(name: str, options: Any, recipe: dict[str, Any] | None = None) -> "Task":
    """The task ``name`` built from its options (a dataclass, or the dict a checkpoint stores)."""
    entry = info(name)
    if isinstance(options, dict):
        options = load(entry.options)(**options)
    return load(entry.task)(options, recipe=recipe)


# -- what the tasks share ---------------------------------------------------------------------
@dataclass
class TaskOptions:
    """The options every task has (each task's options dataclass adds its own): the training
    images, the split, the intensity normalisation and the augmentation."""

    images: str | None = None
    folds: str | None = None
    fold: int | None = None
    val_fraction: float = 0.2
    normalize: str = "auto"
    window: list[float] = field(default_factory=lambda: list(CT_WINDOW))
    augment: str = "light"
    aug: list[str] = field(default_factory=list)
    #: The options given on the command line (field names); ``None``: not known (Python callers).
    given: list[str] | None = None

    def source(self, name: str) -> str:
        """``given`` or ``default`` for option ``name`` (a plan line's source)."""
        if self.given is None:
            return "option"
        return "given" if name in self.given else "default"

    def check_shared(self, *, paste: bool = False) -> None:
        """Raise :class:`UsageError` for an unknown normalisation, an empty window or a bad
        augmentation setting (lesion copy-paste only where ``paste``)."""
        from .augment import make_config
        from .intensity import NORMALIZATIONS

        check_choice("--normalize", self.normalize, NORMALIZATIONS)
        if self.window[0] >= self.window[1]:
            raise UsageError("--window LOW HIGH needs LOW < HIGH")
        if make_config(self.augment, self.aug).paste > 0 and not paste:
            raise UsageError("--aug paste (lesion copy-paste) is for train segment")


@dataclass
class HeldOut:
    """One fold's model on its held-out cases: the out-of-fold table's ``rows`` (``columns``),
    the fold's ``metrics`` and what :meth:`Task.pool` needs to score all folds together."""

    rows: list[dict[str, Any]]
    columns: list[str]
    metrics: dict[str, float]
    data: Any = None


class Task:
    """The shared part of every task (see the module docstring for the interface)."""

    name = ""
    #: The model takes the targets in its forward pass (torchvision detection models do).
    model_takes_targets = False
    #: The plural :meth:`split` names in its message ("cases", "images").
    items = "cases"
    #: Recipe entries the folds of ``train --cv`` share (planned on the first fold).
    plan_keys: tuple[str, ...] = ()

    def __init__(self, options: Any, *, recipe: dict[str, Any] | None = None):
        options.check()
        self.options = options
        self.recipe: dict[str, Any] = recipe or {}
        self.train_cases: list[dict[str, Any]] = []
        self.val_cases: list[dict[str, Any]] = []
        #: The validation cases as found (their source files), set by :meth:`split`.
        self.val_sources: list[Any] = []

    def describe(self) -> dict[str, Any]:
        """What the checkpoint stores to rebuild the task (``make_task(name, options)``)."""
        return {"options": asdict(self.options)}

    def plan_device(self, config, device) -> None:
        """Adapt the options and loop settings not given to the device before anything is
        planned from the data (``config.given``, ``options.given``); nothing by default."""

    def apply_cpu_plan(self, config, device, options: dict[str, Any], loop: dict[str, Any], why: str, *,
                       keep: Sequence[str] = ()) -> None:
        """On a CPU, set each of ``options`` (task options) and ``loop`` (loop settings) that was
        not given, and record ``why`` for its plan line in ``device_choices``; ``keep`` names
        options left as they are. Only settings whose ``given`` is known are changed (the command
        line's; Python callers keep what they set), and nothing off a CPU."""
        o = self.options
        self.device_choices = {}
        self.loop = config              # the loop settings, for the plan's lines
        if device.type != "cpu" or o.given is None or config.given is None:
            return
        for target, plan, given in ((o, options, o.given), (config, loop, config.given)):
            for name, value in plan.items():
                if name not in given and name not in keep:
                    setattr(target, name, value)
                    self.device_choices[name] = why

    def data_line(self) -> str | None:
        """Where the cases came from, printed before the first line of training (a dataset read
        in its own layout says which); ``None``: nothing to add."""
        return None

    def init_model(self, model) -> None:
        """Prepare a new model before training (local pretrained weights); nothing by default."""

    def split(self, cases: list, *, seed: int) -> tuple[list, list]:
        """Training and validation cases: ``--folds``/``--fold`` or a seeded ``--val-fraction``
        (:func:`medtool.datasets.split_cases`).

        Raises
        ------
        UsageError
            No training case is left.
        """
        from .datasets import read_folds, split_cases

        o = self.options
        folds = read_folds(o.folds) if o.folds else None
        train, val = split_cases(cases, folds=folds, fold=o.fold, val_fraction=o.val_fraction, seed=seed)
        if not train:
            raise UsageError(f"no training {self.items} left after taking out the validation fold")
        self.val_sources = list(val)
        return train, val

    def take_cached(self, entries: list[dict[str, Any]], train: list, val: list) -> None:
        """Set :attr:`train_cases` and :attr:`val_cases` to the cache ``entries`` of the cases
        ``train`` and ``val`` (by case id)."""
        by_id = {e.get("case_id", e.get("image_id")): e for e in entries}
        self.train_cases = [by_id[c.case_id] for c in train]
        self.val_cases = [by_id[c.case_id] for c in val]

    def held_out(self, checkpoint: dict[str, Any], *, device, out: Path, fold: int) -> HeldOut:
        """The fold's model (``checkpoint``) on its held-out cases; predictions may be written
        under ``out``."""
        raise UsageError(f"--cv is not available for {self.name}")

    def pool(self, held: Sequence[HeldOut]) -> dict[str, float]:
        """The metrics of every fold's held-out predictions together."""
        raise UsageError(f"--cv is not available for {self.name}")


def named_ids(ids: Sequence[str]) -> str:
    """``ids`` as a message names them: the first :data:`NAMED_IDS`, then "..." for the rest."""
    ids = list(ids)
    return ", ".join(ids[:NAMED_IDS]) + (", ..." if len(ids) > NAMED_IDS else "")


def check_matching(unmatched: Sequence[tuple[Sequence[str], str]], *, mismatch: str, path: str | Path,
                   hint: str) -> None:
    """Refuse images and a table of them (labels, boxes) whose ids do not pair up.

    Parameters
    ----------
    unmatched
        ``(ids, what)`` of each side: the ids without a partner on the other side and what
        they are (``"images have no label"``); a side without any is left out of the message.
    mismatch
        The start of the message: what does not match what (``"the labels do not match the
        images in DIR"``).
    path, hint
        Those of the error (the table, usually).

    Raises
    ------
    InputError
        ``mismatch: N what (ids); ...`` when any side has ids without a partner.
    """
    parts = [f"{len(ids)} {what} ({named_ids(ids)})" for ids, what in unmatched if ids]
    if parts:
        raise InputError(f"{mismatch}: {'; '.join(parts)}", path=path, hint=hint)


def cached(cache: Path, key: dict[str, Any], ids: Sequence[str],
           complete: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]] | None:
    """The cache's entries for ``ids`` when its index was written for ``key`` and every entry
    is ``complete`` (its files exist); ``None`` when the cache must be built."""
    index_path = Path(cache) / CACHE_INDEX
    if not index_path.is_file():
        return None
    index = json.loads(index_path.read_text())
    have = {e.get("case_id", e.get("image_id")): e for e in index["cases"]}
    if index.get("key") != key or not all(i in have and complete(have[i]) for i in ids):
        return None
    return [have[i] for i in ids]


def build_cache(cache: Path, key: dict[str, Any], jobs: list, worker: Callable, *, workers: int,
                progress: bool, on_error, name: Callable[[Any], str]) -> list[dict[str, Any]]:
    """Preprocess ``jobs`` with ``worker`` (in ``workers`` processes) and write the cache index;
    the first failure stops the run (every case must be usable before training starts)."""
    from .batch import run_batch
    from .files import atomic_write_text

    Path(cache).mkdir(parents=True, exist_ok=True)
    outcome = run_batch(worker, jobs, workers=workers, description="preprocessing", progress=progress,
                        on_error=on_error, name=name)
    if outcome.failures:
        error = outcome.failures[0][1]
        if len(outcome.failures) > 1:
            error.what += f" (and {len(outcome.failures) - 1} more failed)"
        raise error
    atomic_write_text(Path(cache) / CACHE_INDEX, json.dumps({"key": key, "cases": outcome.results}, indent=1),
                      force=True)
    return outcome.results


def read_cache(cache: Path) -> list[dict[str, Any]]:
    """The entries of a cache another process built (``torchrun``: rank 0 builds, the rest read)."""
    return json.loads((Path(cache) / CACHE_INDEX).read_text())["cases"]


@contextlib.contextmanager
def evaluating(model) -> Iterator[None]:
    """``model`` in eval mode for the block, back in its own mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def autocast(device, dtype):
    """Mixed precision on ``device`` with ``dtype`` (``None``: off), the one way every task
    writes it."""
    import torch

    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


class EpochOrder(EpochSet):
    """A training set of ``cases`` drawn once per epoch in a seeded random order, repeated to
    fill ``length``; the order is computed once per epoch (not per item)."""

    def __init__(self, cases: list[dict[str, Any]], *, length: int, seed: int = 0):
        self.cases, self.length, self.seed = cases, int(length), seed
        self._epoch = SharedEpoch()                 # seen by DataLoader worker processes too
        self._order: tuple[int, np.ndarray] | None = None

    def case(self, item: int) -> int:
        """The index of the case drawn at position ``item`` of this epoch."""
        epoch = self.epoch
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            passes = -(-self.length // len(self.cases))
            self._order = (epoch, np.concatenate([rng.permutation(len(self.cases)) for _ in range(passes)]))
        return int(self._order[1][int(item)])
