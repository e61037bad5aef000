"""The classification task: whole volumes (or 2D images) and a labels CSV to a class per case.

Cases are the volumes under ``images`` (any format; case id = file name without its suffix)
matched to the rows of a labels CSV by ``id_column``; the class is ``label_column``. Every
image needs a label and every label an image, or nothing is trained (one line names the
unmatched cases).

The **recipe** stored in the checkpoint: ``dim`` (2 or 3), ``spacing`` (mm; ``null`` for z in
2D), ``shape`` ``(Z, Y, X)`` (``Z = 1`` in 2D): each volume is resampled to the spacing and its
``shape`` centre voxels kept (padded where smaller) in one interpolation
(:func:`medtool.segmentation.to_model_space`), ``normalize`` (as segmentation: CT window to
[0, 1] or per-volume z-score) and ``classes`` (names, in the order of the model's outputs). By
default, training volumes that all have one shape (``medtool resample --shape --crop-z``, the
seeds' recipe) are taken as they are (each keeps its own spacing); otherwise the spacing is their
median and the shape their median size at that spacing.

Training draws the training cases once per epoch in a seeded random order, cross-entropy
weighted per class (``balanced``: ``n / (K n_k)`` over the training cases, as scikit-learn's
``class_weight="balanced"``), with the torch augmentation on the image only. Validation
reports accuracy, balanced accuracy and AUC (:mod:`medtool.metrics.classification`); the score that
picks ``best.pt`` is the AUC, or the balanced accuracy when the fold holds one class only.

Prediction (:func:`predict_files`) writes ``case_id,prob_<class>...,pred``, the table
``medtool score`` reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError, UsageError, check_choice
from .intensity import (channel_specs, constant_background, describe_spec, foreground_box, normalize_channels,
                        plan_normalization)
from .segmentation import as_3d, in_orientation, to_model_space, training_orientation
from .tasks import EpochOrder, Task, TaskOptions, autocast, build_cache, cached, check_matching, evaluating, named_ids, read_cache
from .tables import repeated

#: Class weight modes (or one weight per class).
CLASS_WEIGHTS = ("balanced", "none")
#: Validation metrics, in the names ``medtool score`` uses.
METRICS = ("accuracy", "balanced-accuracy", "auc")
#: Columns of the prediction table.
PROB_PREFIX, PRED_COLUMN = "prob_", "pred"
#: Volumes read per validation forward pass.
VALIDATION_BATCH = 8
#: ``--crop``: auto (crop when every training image has a constant outside), foreground, none.
CROP_MODES = ("auto", "foreground", "none")
#: Voxels of a planned input at most, by device kind: on a CPU about 40^3 (a fold of 32
#: lung-masked CTs trains 100 samples/s on two cores, docs/recipes.md); on a GPU 128^3.
INPUT_VOXELS = {"cpu": 2 ** 16, "cuda": 2 ** 21}
#: First-level width of each classifier on a CPU when not given (half the default: four
#: times fewer operations; the RECIST recipe of docs/recipes.md).
CPU_WIDTH = {"simple3d": 8, "resnet3d-10": 16, "resnet3d-18": 16}


@dataclass
class ClassifyOptions(TaskOptions):
    """What ``medtool train --task classify`` was asked for (stored in the checkpoint)."""

    labels: str | None = None
    image_suffix: str = ""
    channels: list[str] | None = None    # input channels: files <case>_<name> beside each other
    id_column: str = "case_id"
    cases: str | None = None            # dicom2npy's cases.csv, joined by id_column
    label_column: str = "label"
    class_names: list[str] | None = None
    dim: int = 3
    shape: list[int] | None = None
    spacing: list[float] | None = None
    model: str = "simple3d"
    width: int | None = None
    dropout: float = 0.3
    pool: str = "avgmax"
    crop: str = "auto"
    class_weights: str = "balanced"

    def check(self) -> None:
        """Raise :class:`UsageError` for impossible combinations (before any work)."""
        from .models.cnn import LEVELS, POOLS

        if self.images is None or self.labels is None:
            raise UsageError("--task classify needs --images DIR and --labels CSV")
        if self.channels and self.image_suffix:
            raise UsageError("give --channels or --image-suffix, not both",
                             hint="--channels flair,t1ce reads <case>_flair and <case>_t1ce")
        if self.dim not in (2, 3):
            raise UsageError(f"--dim must be 2d or 3d, got {self.dim}")
        if self.model not in LEVELS:
            raise UsageError(f"--model {self.model}: a classifier is one of {', '.join(LEVELS)}")
        check_choice("--pool", self.pool, POOLS)
        check_choice("--crop", self.crop, CROP_MODES)
        self.check_shared()
        if self.shape is not None and (len(self.shape) != self.dim or min(self.shape) < 1):
            raise UsageError(f"--shape needs {self.dim} positive sizes for --dim {self.dim}d, got {self.shape}")
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise UsageError(f"--spacing needs three positive values (z y x mm), got {self.spacing}")
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise UsageError(f"--class-names repeats a name: {','.join(self.class_names)}")
        parse_class_weights(self.class_weights, None)


def parse_class_weights(text: str, classes: int | None) -> list[float] | str:
    """``balanced``, ``none`` or a comma-separated weight per class (checked against ``classes``)."""
    if text in CLASS_WEIGHTS:
        return text
    try:
        weights = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--class-weights {text}: give balanced, none or numbers like 0.3,0.7") from None
    if min(weights) <= 0 or not all(math.isfinite(w) for w in weights):
        raise UsageError(f"--class-weights {text}: weights must be positive")
    if classes is not None and len(weights) != classes:
        raise UsageError(f"--class-weights gives {len(weights)} weights for {classes} classes")
    return weights


def class_weights(mode: str, labels: Sequence[int], classes: list[str]) -> list[float]:
    """Loss weight of each class; ``balanced`` is ``n / (K n_k)`` over ``labels``."""
    parsed = parse_class_weights(mode, len(classes))
    counts = np.bincount(np.asarray(labels, np.intp), minlength=len(classes))
    empty = [name for name, n in zip(classes, counts) if n == 0]
    if empty:
        raise UsageError(f"no training case of class {', '.join(empty)}",
                         hint="every class needs training cases (check the folds and the labels)")
    if parsed == "none":
        return [1.0] * len(classes)
    if parsed == "balanced":
        return [float(v) for v in len(labels) / (len(classes) * counts)]
    return list(parsed)


# -- cases and labels --------------------------------------------------------------------------------
def read_labels(path: str | Path, *, id_column: str, label_column: str,
                cases: str | Path | None = None) -> dict[str, str]:
    """``case_id -> class`` from the labels CSV; with ``cases`` (dicom2npy's cases.csv) the
    labels are keyed by ``id_column`` (e.g. PatientID) and each row labels every case with
    that value.

    Raises
    ------
    InputError
        Missing columns, empty cells or a case listed twice.
    """
    from .tables import CASE_ID, join_cases, read_table

    table = read_table(path)
    if cases is not None:
        table = join_cases(table, id_column=id_column, cases=cases)
        id_column = CASE_ID
    ids = table.column(id_column, purpose="the case id; see --id-column")
    values = table.column(label_column, purpose="the class; see --label-column")
    labels: dict[str, str] = {}
    for row, (case, value) in enumerate(zip(ids, values)):
        if not case or not value:
            raise table.error(row, f"empty {'case id' if not case else label_column}",
                              "fill in the case id and the class of every row")
        if case in labels:
            raise table.error(row, f"case {case} is listed twice", "give each case one row")
        labels[case] = value
    if not labels:
        raise InputError("no rows", path=path, hint="the labels CSV needs one row per image")
    return labels


def case_files(inputs: Sequence[str | Path], suffix: str = "") -> list[tuple[str, Path]]:
    """``(case id, path)`` of the volume files under ``inputs`` named ``<case id><suffix>``
    (:func:`~medtool.files.case_of_image`)."""
    from .files import case_of_image, find_files

    return [(case_of_image(path, suffix), path) for path in find_files(inputs) if case_of_image(path, suffix)]


def match_labels(images: str | Path, labels_path: str | Path, labels: dict[str, str], suffix: str = "",
                 *, channels=None):
    """Pair the volumes under ``images`` (named ``<case id><suffix>``) with their labels; with
    ``channels`` (:class:`~medtool.channels.InputChannels`) the images are the first channel's
    files and each case's other channels are found beside them.

    Returns
    -------
    list[Case]
        One case per image (sorted as found).

    Raises
    ------
    InputError
        No images, a case id twice, or images without a label / labels without an image
        (one line naming them).
    """
    from .datasets import Case

    if channels is not None:
        suffix = channels.suffixes[0]
    cases = [Case(case, path, [], channels.files(path)[1:] if channels is not None else [])
             for case, path in case_files([images], suffix) if path.exists()]
    if not cases:
        raise InputError(f"no volume files{f' named <case>{suffix}' if suffix else ''}", path=images,
                         hint="give the folder of training volumes (and check --image-suffix)")
    ids = [c.case_id for c in cases]
    twice = repeated(ids)
    if twice:
        raise InputError(f"case ids found twice: {named_ids(twice)}", path=images, hint="keep one volume per case")
    unlabelled = [i for i in ids if i not in labels]
    orphans = sorted(set(labels) - set(ids))
    check_matching([(unlabelled, "images have no label"), (orphans, "labels have no image")],
                   mismatch=f"the labels do not match the images in {images}", path=labels_path,
                   hint="give every image one row and every row an image (check --id-column and the image folder)")
    return cases


def class_order(values: Sequence[str], names: Sequence[str] | None, *, path: str | Path) -> list[str]:
    """The classes: ``names`` as given (every label must be one), else the labels sorted
    (numerically when they are all numbers)."""
    found = sorted(set(values))
    if names is not None:
        unknown = [v for v in found if v not in names]
        if unknown:
            raise InputError(f"classes {', '.join(unknown)} are not among --class-names {','.join(names)}",
                             path=path, hint="name every class once")
        classes = list(names)
    else:
        try:
            classes = sorted(found, key=float)
        except ValueError:
            classes = found
    if len(classes) < 2:
        raise InputError(f"only one class ({', '.join(classes)}) in the labels", path=path,
                         hint="a classifier needs at least two classes")
    return classes


def fit_budget(spacing: Sequence[float | None], extent_mm: Sequence[float],
               budget: int | None) -> tuple[list[float | None], bool]:
    """``spacing`` coarsened so that an input of ``extent_mm`` holds at most ``budget`` voxels:
    every axis finer than one spacing ``c`` is brought to ``c`` (the finest first, as nnU-Net
    evens out anisotropy), ``c`` the smallest that fits (to 0.01 mm). Axes whose spacing is
    ``None`` (z of a 2D model) do not count. Returns the spacing and whether it changed.

    >>> fit_budget([2.0, 1.0, 1.0], [100.0, 100.0, 100.0], 50 * 50 * 50)
    ([2.0, 2.0, 2.0], True)
    """
    axes = [a for a, s in enumerate(spacing) if s is not None]

    def voxels(c: float) -> float:
        return float(np.prod([max(extent_mm[a] / max(spacing[a], c), 1.0) for a in axes]))

    if budget is None or not axes or voxels(0.0) <= budget:
        return list(spacing), False
    low, high = min(spacing[a] for a in axes), max(max(extent_mm[a] for a in axes), max(spacing[a] for a in axes))
    while high - low > 1e-4:
        middle = (low + high) / 2
        low, high = (low, middle) if voxels(middle) <= budget else (middle, high)
    c = round(high, 2)
    if voxels(c) > budget:
        c = round(c + 0.01, 2)
    return [None if s is None else float(max(s, c)) for s in spacing], True


def check_dimensionality(volume, dim: int, path: str | Path) -> None:
    """A 3D model takes 3D volumes, a 2D model 2D images (or one-slice volumes)."""
    ndim = volume.ndim
    slices = volume.shape[0] if ndim == 3 else 1
    if ndim not in (2, 3):
        raise InputError(f"a {ndim}D array (shape {list(volume.shape)}) is not an image",
                         path=path, hint="give 2D images or 3D volumes")
    if dim == 3 and ndim == 2:
        raise InputError(f"a 2D image (shape {list(volume.shape)}) for a 3D model", path=path,
                         hint="train with --dim 2d on 2D images, or give volumes")
    if dim == 2 and slices > 1:
        raise InputError(f"a 3D volume ({slices} slices) for a 2D model", path=path,
                         hint="train with --dim 3d on volumes, or give 2D images")
    if volume.array.dtype.kind not in "iufb":
        raise InputError(f"cannot classify a {volume.array.dtype} array", path=path, hint="give an image")


def prepare_channels(volumes, recipe: dict[str, Any], *, path: str | Path = "", device: Any = "cpu"):
    """A case's input channels (on one grid) as the model sees them: the model-space grid (a
    volume of the first channel) and the normalised ``(C, Z, Y, X)`` float32 array."""
    volumes = list(volumes)
    specs = channel_specs(recipe["normalize"])
    if len(volumes) != len(specs):
        raise InputError(f"the model takes {len(specs)} input channels, the case has {len(volumes)}", path=path,
                         hint="give the channels it was trained on")
    prepared, box = [], None
    for volume in volumes:
        check_dimensionality(volume, recipe["dim"], path)
        volume = in_orientation(as_3d(volume), recipe)
        check_input_grid(volume, recipe, path)
        if recipe.get("crop"):          # the box of the first channel's foreground, for every channel
            box = box or foreground_box(volume.array)
            volume = volume.cropped(box)
        prepared.append(to_model_space(volume, recipe, device=device))
    return prepared[0], normalize_channels([p.array for p in prepared], recipe["normalize"])


def check_input_grid(volume, recipe: dict[str, Any], path: str | Path = "") -> None:
    """Refuse a volume of another shape than the training volumes of a model that took them as
    they were (``recipe["input_grid"]``: same-shape crops), which would otherwise be cropped to
    the trained shape in its own voxels and show the model another extent of anatomy (a whole
    CT instead of the crops around a tumour).

    Raises
    ------
    InputError
        Another shape (in-plane only for a 2D model).
    """
    grid = recipe.get("input_grid")
    if not grid:
        return
    axes = slice(1, 3) if recipe["dim"] == 2 else slice(0, 3)
    if list(volume.shape)[axes] != list(grid["shape"])[axes]:
        low, high = grid["spacing"]

        def mm(values) -> str:
            return " x ".join(f"{v:g}" for v in values)
        raise InputError(f"the model was trained on {' x '.join(map(str, grid['shape']))} volumes "
                         f"({mm(low)} to {mm(high)} mm) taken as they were; this one is "
                         f"{' x '.join(map(str, volume.shape))}", path=path,
                         hint="make it as the training volumes were made (the same crop, medtool resample --shape)")


@dataclass
class _CacheJob:
    case_id: str
    images: list[str]
    cache: str
    recipe: dict[str, Any]


def preprocess_case(job: _CacheJob) -> dict[str, Any]:
    """One case in the model's space, written to the cache as ``<case>.npy`` (a volume, or a
    ``(C, Z, Y, X)`` array for several channels)."""
    from .datasets import save_cached_image
    from .segmentation import read_inputs

    grid, array = prepare_channels(read_inputs(job.images, job.recipe), job.recipe, path=job.images[0])
    path = Path(job.cache) / f"{job.case_id}.npy"
    save_cached_image(path, grid, array)
    return {"case_id": job.case_id, "image": str(path)}


def _header(path: str | Path):
    from .formats import load_volume

    return load_volume(path, mmap=True)


# -- data set -------------------------------------------------------------------------------------------
class ClassDataset(EpochOrder):
    """The training cases, each once per epoch in a seeded random order (repeated to fill
    ``length``); items are ``(image (C, *shape), class index)``."""

    def __init__(self, cases: list[dict[str, Any]], *, length: int, seed: int = 0, two_d: bool = False):
        super().__init__(cases, length=length, seed=seed)
        self.two_d = two_d
        self._open: dict[int, np.ndarray] = {}

    def __getitem__(self, item: int):
        import torch

        from .datasets import cached_image

        index = self.case(item)
        if index not in self._open:
            self._open[index] = cached_image(self.cases[index]["image"])
        array = self._open[index]
        array = array[:, 0] if self.two_d else array
        return (torch.from_numpy(np.array(array, dtype=np.float32)),
                torch.tensor(self.cases[index]["label"], dtype=torch.int64))


class _ImageOnly:
    """The augmenter applied to the images of a batch; class targets pass through."""

    def __init__(self, augmenter):
        self.augmenter = augmenter

    def __call__(self, images, targets):
        return self.augmenter(images)[0], targets


class WeightedCrossEntropy:
    """Cross-entropy with per-class weights (moved to the logits' device on first use)."""

    def __init__(self, weights: Sequence[float]):
        import torch

        self.weights = torch.tensor(list(weights), dtype=torch.float32)

    def __call__(self, logits, targets):
        from torch.nn import functional as F

        if self.weights.device != logits.device:
            self.weights = self.weights.to(logits.device)
        return F.cross_entropy(logits.float(), targets, weight=self.weights)


# -- the task ---------------------------------------------------------------------------------------------
class ClassifyTask(Task):
    """Classification for :func:`medtool.train.fit`: data, model, loss, augmentation, validation."""

    name = "classify"
    plan_keys = ("dim", "crop", "spacing", "shape", "normalize", "normalize_why", "orientation", "classes")

    def __init__(self, options: ClassifyOptions, *, recipe: dict[str, Any] | None = None):
        super().__init__(options, recipe=recipe)
        self.weights: list[float] = []
        self.input_voxels: int | None = None
        self.device_kind = "cpu"
        self.device_choices: dict[str, str] = {}

    def plan_device(self, config, device) -> None:
        """The device's input budget (:data:`INPUT_VOXELS`) for the planned grid and, on a
        CPU, the width (:data:`CPU_WIDTH`) when not given."""
        self.device_kind = "cpu" if device.type == "cpu" else "cuda"
        self.input_voxels = INPUT_VOXELS[self.device_kind]
        if self.device_kind == "cpu" and self.options.width is None:
            self.options.width = CPU_WIDTH[self.options.model]
            self.device_choices["width"] = "a CPU: half the default width (a quarter of the operations)"

    def cases(self):
        """The matched cases and each one's class name."""
        o = self.options
        labels = read_labels(o.labels, id_column=o.id_column, label_column=o.label_column,
                             cases=o.cases)
        cases = match_labels(o.images, o.labels, labels, o.image_suffix, channels=self.input_channels)
        return cases, labels

    @property
    def input_channels(self):
        """The model's input channels (``--channels``), or ``None`` for one image per case."""
        from .layouts import input_channels

        return input_channels(None, self.options.channels)

    def prepare(self, cache: Path, *, seed: int, workers: int = 1, progress: bool = False,
                build_cache: bool = True, on_error=None) -> None:
        """Match and split the cases, check every image, plan the recipe (unless resumed),
        write/read the cache."""
        o = self.options
        cases, labels = self.cases()
        classes = self.recipe.get("classes") or class_order(list(labels.values()), o.class_names, path=o.labels)
        unknown = sorted({labels[c.case_id] for c in cases} - set(classes))
        if unknown:
            raise InputError(f"classes {', '.join(unknown)} are not among the checkpoint's {', '.join(classes)}",
                             path=o.labels, hint="train a new run for new classes")
        train, val = self.split(cases, seed=seed)
        if not self.recipe:
            headers = {c.case_id: _header(c.image) for c in cases}
            for case in cases:
                check_dimensionality(headers[case.case_id], o.dim, case.image)
            self.recipe = self._plan([(c.image, headers[c.case_id]) for c in train])
            self.recipe["classes"] = classes
        index = {name: k for k, name in enumerate(classes)}
        self.weights = class_weights(o.class_weights, [index[labels[c.case_id]] for c in train], classes)
        cache = Path(cache)
        key = {k: self.recipe.get(k) for k in ("dim", "crop", "spacing", "shape", "normalize")}
        if build_cache:
            entries = self._build_cache(train + val, cache, key, workers=workers, progress=progress,
                                        on_error=on_error)
        else:
            entries = read_cache(cache)
        by_id = {e["case_id"]: e for e in entries}
        self.train_cases = [{**by_id[c.case_id], "label": index[labels[c.case_id]]} for c in train]
        self.val_cases = [{**by_id[c.case_id], "label": index[labels[c.case_id]]} for c in val]

    def _plan(self, images) -> dict[str, Any]:
        """Crop, spacing, shape and normalisation (``images``: path, header pairs): see
        :meth:`_plan_grid` for the grid."""
        o = self.options
        volumes = [as_3d(h) for _, h in images]
        orientation = training_orientation(volumes)
        oriented = [in_orientation(v, {"orientation": orientation}) for v in volumes]
        recipe = {"dim": o.dim, **self._plan_grid(oriented), "orientation": orientation}
        channels = self.input_channels
        if channels is None:
            norm = plan_normalization(o.normalize, o.window, images)
            spec, why = norm.spec, norm.why
        else:                   # nnU-Net's rule on the names: CT the window, others a z-score
            plans = [plan_normalization(o.normalize, o.window, [], channel=(n, "--channels")) for n in channels.names]
            spec = [p.spec for p in plans]
            why = "; ".join(f"{n}: {describe_spec(p.spec)} ({p.why})" for n, p in zip(channels.names, plans))
        recipe.update(normalize=spec, normalize_why=why)
        if channels is not None:
            recipe["channels"] = channels.as_dict()
            recipe["image_suffix"] = channels.suffixes[0]
        recipe["plan"] = self._plan_lines(recipe, len(volumes))
        return recipe

    def _plan_grid(self, volumes) -> dict[str, Any]:
        """The input grid from the training volumes (in the training orientation).

        ``crop`` (``auto``: when every volume has a constant outside, a masked CT, and they
        are not all of one shape already): each image is cut to the box of the rest first. ``spacing``: the median of the volumes, or kept
        as it is when they all have one shape and nothing is cropped (the seeds' same-shape
        crops). ``shape``: the median size at that spacing, or the largest cropped box (so no
        case loses foreground). Where both are planned and the shape holds more voxels than
        the device's budget (:data:`INPUT_VOXELS`), the finest axes are coarsened until it fits.
        """
        o = self.options
        spacings = np.array([v.spacing for v in volumes], dtype=np.float64)
        one_shape = len({v.shape for v in volumes}) == 1     # crops made already (the seeds' recipe)
        crop = o.crop == "foreground" or (o.crop == "auto" and not one_shape and all(
            constant_background(v.array) is not None for v in volumes))
        if crop:
            extents = np.array([[b.stop - b.start for b in foreground_box(v.array)] for v in volumes], np.float64)
        else:
            extents = np.array([v.shape for v in volumes], dtype=np.float64)
        extents_mm = extents * spacings
        if o.spacing is not None:
            spacing: list[float | None] = [float(s) for s in o.spacing]
        elif not crop and one_shape:
            spacing = [None, None, None]        # volumes of one shape already: taken as they are
        else:
            spacing = [float(s) for s in np.median(spacings, axis=0)]
        if o.dim == 2:
            spacing[0] = None
        grid: dict[str, Any] = {"crop": crop}
        if o.spacing is None and o.shape is None and all(s is not None for s in spacing[-2:]):
            spacing, grid["coarsened"] = fit_budget(spacing, extents_mm.max(0) if crop else np.median(extents_mm, 0),
                                                    self.input_voxels)
        target = np.array([[s if s is not None else v for s, v in zip(spacing, own)] for own in spacings])
        sizes = extents_mm / target
        sizes = np.ceil(sizes.max(0) - 1e-6) if crop else np.round(np.median(sizes, axis=0))
        shape = [max(1, int(s)) for s in sizes] if o.shape is None else [int(s) for s in o.shape]
        if o.dim == 2:
            shape = [1, *shape[-2:]]
        grid.update(spacing=spacing, shape=shape)
        if all(s is None for s in spacing[-2:]):      # taken as they are: say what they were
            grid["input_grid"] = {"shape": [int(v) for v in volumes[0].shape],
                                  "spacing": [[float(v) for v in spacings.min(axis=0)],
                                              [float(v) for v in spacings.max(axis=0)]]}
        return grid

    def _plan_lines(self, recipe: dict[str, Any], count: int) -> list[dict[str, Any]]:
        """A plan line per value (:mod:`medtool.plan`): where the input grid, the normalisation
        and the model's settings came from."""
        from .models.cnn import DEFAULT_WIDTH
        from .plan import GIVEN, PLANNED, PlanLine, option_line

        o = self.options
        kept = "volumes of one shape: taken as they are" if "input_grid" in recipe else f"median of the {count} training volumes"
        if recipe.get("coarsened"):
            kept += (f", coarsened to fit the {self.device_kind} budget of {self.input_voxels:,} input voxels"
                     " (--spacing, --shape to choose)")
        crop_why = ("every training image has a constant outside (a masked image): the box of the rest"
                    if recipe.get("crop") else "volumes of one shape: taken as they are" if "input_grid" in recipe
                    else "the training images have no constant outside")
        lines = [
            option_line(o, "dim", f"{o.dim}d"),
            PlanLine("crop", "foreground" if recipe.get("crop") else "none",
                     PLANNED if o.crop == "auto" else GIVEN, crop_why if o.crop == "auto" else "given"),
            PlanLine("spacing", recipe["spacing"], GIVEN if o.spacing is not None else PLANNED,
                     "given" if o.spacing is not None else kept),
            PlanLine("shape", recipe["shape"], GIVEN if o.shape is not None else PLANNED,
                     "given" if o.shape is not None else
                     ("the largest cropped box at that spacing" if recipe.get("crop")
                      else "median size of the training volumes at that spacing")),
            PlanLine("normalize", describe_spec(channel_specs(recipe["normalize"])[0]) if isinstance(
                recipe["normalize"], dict) else "; ".join(describe_spec(n) for n in recipe["normalize"]),
                GIVEN if o.normalize != "auto" else PLANNED, recipe["normalize_why"]),
            option_line(o, "model"),
            option_line(o, "width", o.width or DEFAULT_WIDTH[o.model], chosen=self.device_choices),
            *[option_line(o, name) for name in ("dropout", "pool", "augment", "class_weights")],
            PlanLine("orientation", recipe.get("orientation"), PLANNED,
                     "the training volumes' (the most common); other inputs are reordered to it exactly"),
        ]
        return [line.as_dict() for line in lines]

    def _build_cache(self, cases, cache: Path, key, *, workers, progress, on_error):
        found = cached(cache, key, [c.case_id for c in cases], lambda entry: Path(entry["image"]).exists())
        if found is not None:
            return found
        jobs = [_CacheJob(c.case_id, [str(p) for p in c.inputs], str(cache), self.recipe) for c in cases]
        return build_cache(cache, key, jobs, preprocess_case, workers=workers, progress=progress,
                           on_error=on_error, name=lambda job: job.images[0])

    # -- model, loss, data ------------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        from .models.cnn import DEFAULT_WIDTH, LEVELS, plan_pooling

        o = self.options
        shape = self.recipe["shape"][1:] if o.dim == 2 else self.recipe["shape"]
        config = {"dim": o.dim, "in_channels": len(channel_specs(self.recipe["normalize"])),
                  "num_classes": len(self.recipe["classes"]),
                  "width": o.width or DEFAULT_WIDTH[o.model], "dropout": o.dropout, "pool": o.pool,
                  "strides": plan_pooling(shape, LEVELS[o.model])}
        return {"name": o.model, "config": config}

    def build_loss(self):
        return WeightedCrossEntropy(self.weights)

    def dataset(self, *, length: int, seed: int):
        return ClassDataset(self.train_cases, length=length, seed=seed, two_d=self.options.dim == 2)

    def augmenter(self, seed: int):
        from .augment import Augmenter, make_config

        return _ImageOnly(Augmenter(make_config(self.options.augment, self.options.aug), seed=seed))

    @property
    def metric_names(self) -> list[str]:
        return list(METRICS)

    def held_out(self, checkpoint: dict[str, Any], *, device, out: Path, fold: int):
        """Class probabilities of the held-out cases: rows ``case_id, prob_<class>..., pred,
        truth`` and :func:`evaluate`'s metrics."""
        from .tasks import HeldOut
        from .train import build_model

        model = build_model(checkpoint).to(device)
        classes = self.recipe["classes"]
        probs = self.probabilities(model, self.val_cases, device=device)
        truth = np.array([c["label"] for c in self.val_cases])
        rows = [{**row, "truth": classes[int(label)]}
                for row, label in zip(prediction_rows([c["case_id"] for c in self.val_cases], probs, classes), truth)]
        return HeldOut(rows, [*prediction_columns(classes), "truth"], evaluate(truth, probs), (truth, probs))

    def pool(self, held) -> dict[str, float]:
        return evaluate(np.concatenate([h.data[0] for h in held]), np.concatenate([h.data[1] for h in held]))

    def probabilities(self, model, cases: list[dict[str, Any]], *, device, amp_dtype=None,
                      batch_size: int = VALIDATION_BATCH) -> np.ndarray:
        """Class probabilities ``(len(cases), K)`` of cached cases (model in eval mode)."""
        from .datasets import cached_image

        arrays = (cached_image(c["image"]) for c in cases)
        return predict_arrays(model, arrays, two_d=self.recipe["dim"] == 2, device=device,
                              amp_dtype=amp_dtype, batch_size=batch_size)

    def validate(self, model, *, device, amp_dtype=None) -> dict[str, float]:
        """Accuracy, balanced accuracy and AUC on the validation cases; ``score`` is the AUC
        (the balanced accuracy where the AUC is undefined)."""
        if not self.val_cases:
            return {}
        probs = self.probabilities(model, self.val_cases, device=device, amp_dtype=amp_dtype)
        truth = np.array([c["label"] for c in self.val_cases])
        result = evaluate(truth, probs)
        result["score"] = result["auc"] if math.isfinite(result["auc"]) else result["balanced-accuracy"]
        return result


def evaluate(truth: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """:data:`METRICS` of class indices ``truth`` against probabilities ``probs`` (arg-max
    predictions), by :mod:`medtool.metrics.classification`."""
    from .metrics import classification

    pred = probs.argmax(axis=1)
    classes = probs.shape[1]
    return {"accuracy": classification.accuracy(truth, pred),
            "balanced-accuracy": classification.balanced_accuracy(truth, pred, classes),
            "auc": classification.auc(truth, probs)}


def predict_arrays(model, arrays, *, two_d: bool, device, amp_dtype=None,
                   batch_size: int = VALIDATION_BATCH) -> np.ndarray:
    """Softmax probabilities of prepared arrays ``(C, Z, Y, X)`` (an iterable), in batches."""
    import torch

    out, pending = [], []

    def flush() -> None:
        batch = torch.from_numpy(np.stack(pending)).to(device)
        with torch.no_grad(), autocast(device, amp_dtype):
            logits = model(batch)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        pending.clear()

    with evaluating(model):
        for array in arrays:
            array = np.asarray(array, dtype=np.float32)
            pending.append(array[:, 0] if two_d else array)
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def prediction_rows(case_ids: Sequence[str], probs: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Rows ``case_id, prob_<class>..., pred`` (the arg-max class)."""
    from .tables import CASE_ID

    rows = []
    for case, p in zip(case_ids, probs):
        row: dict[str, Any] = {CASE_ID: case}
        row.update({f"{PROB_PREFIX}{name}": float(v) for name, v in zip(classes, p)})
        row[PRED_COLUMN] = classes[int(np.argmax(p))]
        rows.append(row)
    return rows


def prediction_columns(classes: Sequence[str]) -> list[str]:
    from .tables import CASE_ID

    return [CASE_ID, *[f"{PROB_PREFIX}{name}" for name in classes], PRED_COLUMN]


# -- prediction -------------------------------------------------------------------------------------------
@dataclass
class _Load:
    source: str
    recipe: dict[str, Any]


def _load_prepared(job: _Load) -> np.ndarray:
    """The ``(C, Z, Y, X)`` model input of the case whose first channel is ``job.source``."""
    from .segmentation import input_files, read_inputs

    return prepare_channels(read_inputs(input_files(job.source, job.recipe), job.recipe), job.recipe,
                            path=job.source)[1]


def predict_files(checkpoint: dict[str, Any], inputs: Sequence[str | Path], out: str | Path, *,
                  batch_size: int = 4, device, amp: str = "auto", image_suffix: str = "", force: bool = False,
                  workers: int = 1, shard: tuple[int, int] | None = None, progress: bool = False,
                  on_error=None, ensemble: Sequence[dict[str, Any]] = ()):
    """``medtool predict`` for a classification checkpoint: every volume under ``inputs`` to one
    row of the CSV ``out`` (``case_id,prob_<class>...,pred``; inputs named ``<case id><image_suffix>``),
    the model loaded once, volumes
    prepared as the recipe says (in ``workers`` processes) and classified in batches;
    ``ensemble``: more checkpoints of the same recipe whose probabilities are averaged.

    Returns a :class:`~medtool.batch.BatchResult` whose results are the rows (in input order).
    """
    from .batch import BatchResult, run_batch
    from .files import check_writable, take_shard
    from .tables import write_csv
    from .train import amp_dtype, build_model

    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise UsageError(f"{out}: a classify checkpoint writes one CSV table", hint="name the output <name>.csv")
    check_writable(out, force=force)
    recipe = checkpoint["recipe"]
    found = take_shard(case_files(inputs, image_suffix), shard)
    if not found:
        raise InputError(f"no volume files{f' named <case>{image_suffix}' if image_suffix else ''}",
                         path=inputs[0] if inputs else None, hint="give volumes or folders (and check --image-suffix)")
    ids = [case for case, _ in found]
    sources = [path for _, path in found]
    twice = repeated(ids)
    if twice:
        raise UsageError(f"case ids found twice among the inputs: {named_ids(twice)}",
                         hint="the table has one row per case id (file name without suffix)")
    models = [build_model(c).to(device) for c in [checkpoint, *ensemble]]
    dtype = amp_dtype(amp, device)
    probs: dict[int, np.ndarray] = {}
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        values = np.mean([predict_arrays(model, [a for _, a in pending], two_d=recipe["dim"] == 2, device=device,
                                         amp_dtype=dtype, batch_size=len(pending)) for model in models], axis=0)
        probs.update({i: p for (i, _), p in zip(pending, values)})
        pending.clear()

    def take(index: int, array: np.ndarray) -> None:
        pending.append((index, array))
        if len(pending) == batch_size:
            flush()

    jobs = [_Load(str(s), recipe) for s in sources]
    outcome = run_batch(_load_prepared, jobs, workers=workers, description="classifying", progress=progress,
                        on_error=on_error, name=lambda job: job.source, on_result=take)
    if pending:
        flush()
    done = sorted(probs)
    rows = prediction_rows([ids[i] for i in done], np.array([probs[i] for i in done]), recipe["classes"])
    if rows:
        write_csv(out, prediction_columns(recipe["classes"]), rows, force=force)
    return BatchResult(results=rows, failures=outcome.failures)
