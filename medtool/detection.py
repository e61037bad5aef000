"""The detection task: chest X-rays and an RSNA box table to a RetinaNet, and its predictions.

Images are the 2D files under ``images``: DICOM (any file name; CR/DX/..., rescale applied,
MONOCHROME1 inverted), PNG / JPEG / TIFF, or any medtool volume format holding a 2D image (or
a one-slice volume). The image id (RSNA ``patientId``) is the file name without its suffix.
The box table is RSNA form ``patientId,x,y,width,height,Target`` (pixels of the original
image): every image needs at least one row, ``Target 0`` (no box) for a negative. Nothing is
trained when the table and the images disagree (ids without an image, images without a row), a
box leaves its image or has no area, or an input is not 2D: one line names the problem.

The **recipe** stored in the checkpoint: ``size`` (the square model input: each image is scaled
by ``size / max(rows, columns)`` keeping its aspect, antialiased, and padded at the bottom /
right: a letterbox, so IoUs are unchanged and boxes map back exactly), ``normalize`` (per-image
z-score by default, as segmentation's), ``anchor_sizes`` (base size per FPN level P3-P7, planned
from the training boxes: the smallest level starts at the power of two below their 5th
percentile of ``sqrt(w h)``), ``anchor_ratios``, ``nms`` and ``min_score`` (the score cut that
gave the best validation map-iou, used by ``predict`` unless ``--min-score`` is given).

Training samples every training image once per epoch (seeded order), with the box-aware
augmentation of :mod:`medtool.augment` (``detect`` preset: the seeds' recipe) and RetinaNet's
focal + box-regression loss. Validation runs the model on the validation images and reports the
RSNA map-iou (:func:`medtool.metrics.boxes.map_iou`) at the best of a grid of score cuts (``map_iou``,
``min_score``), which also picks ``best.pt``.

Prediction (:func:`predict_files`) writes the RSNA submission table ``patientId,PredictionString``
(``conf x y w h`` groups in original pixels, best first) that ``medtool score --metric map-iou``
reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError, UsageError
from .intensity import AUTO_SAMPLE, normalize, plan_normalization
from .pictures import find_images, image_id, read_image
from .tasks import EpochOrder, Task, TaskOptions, autocast, build_cache, cached, check_matching, evaluating, named_ids, read_cache
from .tables import repeated

#: The model size must be a multiple of this (the stride of FPN level P5).
SIZE_MULTIPLE = 32
#: Model names (torchvision RetinaNet backbones).
MODELS = ("resnet18-fpn", "resnet34-fpn", "resnet50-fpn")
#: A box may overhang its image by this many pixels (rounding in the table) before it is refused.
BOX_TOLERANCE_PX = 0.5
#: Score cuts tried at validation (the best is kept as the recipe's ``min_score``).
SCORE_CUTS = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: Score cut used before any validation chose one.
DEFAULT_MIN_SCORE = 0.5
#: Percentile of the training boxes' sqrt(w h) the smallest anchors start below.
ANCHOR_PERCENTILE = 5
#: Images per validation forward pass.
VALIDATION_BATCH = 8
#: On a CPU, the detector planned for each of these options not given (docs/recipes.md: about
#: 25 images a second on two cores, RSNA map-iou 0.37 on the phantom's X-rays in 2.5 minutes,
#: where the defaults, RetinaNet-ResNet50 at 256 px, train under 2 images a second).
CPU_PLAN = {"model": "resnet18-fpn", "fpn_width": 32, "size": 128}
#: Columns of the prediction table.
PREDICTION_COLUMNS = ("patientId", "PredictionString")


@dataclass
class DetectOptions(TaskOptions):
    """What ``medtool train --task detect`` was asked for (stored in the checkpoint)."""

    boxes: str | None = None
    size: int = 256
    model: str = "resnet50-fpn"
    weights: str | None = None
    fpn_width: int = 256
    anchor_sizes: list[float] | None = None
    anchor_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    nms: float = 0.5
    class_name: str = "opacity"
    augment: str = "detect"

    def check(self) -> None:
        """Raise :class:`UsageError` for impossible combinations (before any work)."""
        from .models.retinanet import LEVEL_STRIDES

        if self.images is None or self.boxes is None:
            raise UsageError("--task detect needs --images DIR and --boxes CSV (RSNA form)")
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose one of {', '.join(MODELS)} for --task detect")
        if self.size < SIZE_MULTIPLE * 2 or self.size % SIZE_MULTIPLE:
            raise UsageError(f"--size {self.size}: give a multiple of {SIZE_MULTIPLE} "
                             f"(at least {2 * SIZE_MULTIPLE}), e.g. 256 or 512")
        self.check_shared()
        if self.anchor_sizes is not None and (len(self.anchor_sizes) != len(LEVEL_STRIDES)
                                              or min(self.anchor_sizes) <= 0):
            raise UsageError(f"--anchor-sizes needs {len(LEVEL_STRIDES)} positive sizes (one per FPN level "
                             f"P3-P7, model pixels), got {self.anchor_sizes}")
        if not self.anchor_ratios or min(self.anchor_ratios) <= 0:
            raise UsageError("--anchor-ratios needs positive height/width ratios")
        if not 0 < self.nms <= 1:
            raise UsageError("--nms must be an IoU in (0, 1]")
        if self.fpn_width < 8:
            raise UsageError("--fpn-width must be at least 8")
        if self.weights is not None and not Path(self.weights).is_file():
            raise UsageError(f"--weights {self.weights}: no such file", hint="give a local state dict (.pt/.pth)")


def letterbox(array: np.ndarray, size: int, spec: dict[str, Any]) -> tuple[np.ndarray, tuple[float, float]]:
    """``array`` scaled to fit ``size`` x ``size`` (aspect kept, antialiased), normalised as
    ``spec`` says and padded with 0 at the bottom / right; returns the image and the per-axis
    scale ``(sy, sx)`` (model pixels per image pixel)."""
    import torch
    from torch.nn import functional as F

    rows, columns = array.shape
    factor = size / max(rows, columns)
    new = (max(1, int(round(rows * factor))), max(1, int(round(columns * factor))))
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if new != (rows, columns):
        tensor = F.interpolate(tensor, size=new, mode="bilinear", align_corners=False, antialias=True)
    scaled = normalize(tensor[0, 0].numpy(), spec)
    out = np.zeros((size, size), dtype=np.float32)
    out[: new[0], : new[1]] = scaled
    return out, (new[0] / rows, new[1] / columns)


# -- boxes ---------------------------------------------------------------------------------------------
def read_box_table(path: str | Path):
    """The RSNA box table as :class:`~medtool.metrics.boxes.ImageBoxes` (``x y w h`` per image)."""
    from .metrics.boxes import read_truth

    if not Path(path).is_file():
        raise InputError("no such file", path=path, hint="give the RSNA box CSV (patientId,x,y,width,height,Target)")
    return read_truth(path)


def check_boxes(image: str, boxes: np.ndarray, shape: Sequence[int], *, table: str | Path) -> None:
    """Refuse boxes (``x y w h``) without area or outside the image of ``shape`` (rows, columns)."""
    if not len(boxes):
        return
    rows, columns = shape
    x0, y0, w, h = boxes.T
    empty = (w <= 0) | (h <= 0)
    outside = (x0 < -BOX_TOLERANCE_PX) | (y0 < -BOX_TOLERANCE_PX) | (x0 + w > columns + BOX_TOLERANCE_PX) | (
        y0 + h > rows + BOX_TOLERANCE_PX)
    bad = np.flatnonzero(empty | outside)
    if len(bad):
        box = " ".join(f"{v:g}" for v in boxes[bad[0]])
        what = "has no area" if empty[bad[0]] else f"lies outside the {columns} x {rows} image"
        raise InputError(f"box x y w h = {box} of image {image} {what}", path=table,
                         hint="fix the box table (boxes are pixels of the original image)")


@dataclass
class _CacheJob:
    image_id: str
    source: str
    boxes: list[list[float]]
    table: str
    cache: str
    size: int
    normalize: dict[str, Any] | None


def preprocess_image(job: _CacheJob) -> dict[str, Any]:
    """Read, check and letterbox one image into the cache; its boxes scaled to model pixels
    (``x0 y0 x1 y1``)."""
    from .files import atomic_output

    array, units = read_image(job.source)
    boxes = np.array(job.boxes, dtype=np.float64).reshape(-1, 4)
    check_boxes(job.image_id, boxes, array.shape, table=job.table)
    spec = job.normalize or {"mode": "zscore"}
    image, (sy, sx) = letterbox(array, job.size, spec)
    path = Path(job.cache) / f"{job.image_id}.npy"
    with atomic_output(path, force=True) as temp:
        np.save(temp, image.astype(np.float16))
    x0, y0 = boxes[:, 0], boxes[:, 1]
    corners = np.stack([x0 * sx, y0 * sy, (x0 + boxes[:, 2]) * sx, (y0 + boxes[:, 3]) * sy], axis=1)
    return {"image_id": job.image_id, "image": str(path), "source": job.source, "shape": list(array.shape),
            "scale": [sy, sx], "units": units, "boxes": np.clip(corners, 0, job.size).tolist()}


# -- the task --------------------------------------------------------------------------------------------
class DetectTask(Task):
    """Detection for :func:`medtool.train.fit`: data, model, loss, augmentation, validation."""

    name = "detect"
    model_takes_targets = True
    items = "images"

    def plan_device(self, config, device) -> None:
        """On a CPU, :data:`CPU_PLAN` for each of its options not given; on CUDA the defaults
        stand (RetinaNet-ResNet50-FPN at 256 px)."""
        self.apply_cpu_plan(config, device, CPU_PLAN, {},
                            "a CPU: a small RetinaNet at 128 px (about 25 images/s on two cores; the default under 2)")

    # -- data ------------------------------------------------------------------------------------
    def cases(self):
        """The images matched to the box table: ``(cases, boxes by id)``.

        Raises
        ------
        InputError
            No images, an id twice, table ids without an image or images without a row.
        """
        from .datasets import Case

        o = self.options
        table = read_box_table(o.boxes)
        paths = find_images([o.images])
        if not paths:
            raise InputError("no image files", path=o.images, hint="give the folder of X-rays (DICOM, PNG or volumes)")
        ids = [image_id(p) for p in paths]
        twice = repeated(ids)
        if twice:
            raise InputError(f"image ids found twice: {named_ids(twice)}", path=o.images, hint="keep one file per image")
        listed = set(table.ids)
        missing = sorted(listed - set(ids))
        unlisted = sorted(set(ids) - listed)
        check_matching([(missing, "ids of the box table have no image"), (unlisted, "images have no row")],
                       mismatch=f"the box table does not match the images in {o.images}", path=o.boxes,
                       hint="give every image a row (Target 0 for no box) and every row an image")
        rows = {image: k for k, image in enumerate(table.ids)}
        boxes = {image: table.boxes[rows[image], : table.counts[rows[image]]] for image in ids}
        return [Case(i, p) for i, p in zip(ids, paths)], boxes

    def prepare(self, cache: Path, *, seed: int, workers: int = 1, progress: bool = False,
                build_cache: bool = True, on_error=None) -> None:
        """Match, check and split the images, write/read the cache, plan the recipe."""
        o = self.options
        cases, boxes = self.cases()
        train, val = self.split(cases, seed=seed)
        size = self.recipe.get("size", o.size)
        spec = self.recipe.get("normalize")
        cache = Path(cache)
        if build_cache:
            entries = self._build_cache(train + val, boxes, cache, size, spec, workers=workers,
                                        progress=progress, on_error=on_error)
        else:
            entries = read_cache(cache)
        self.take_cached(entries, train, val)
        if not any(e["boxes"] for e in self.train_cases):
            raise InputError("no training image has a box", path=o.boxes,
                             hint="the detector needs positive images (rows with Target 1)")
        if not self.recipe:
            self.recipe = self._plan(self.train_cases)

    def _normalization(self, images: list[tuple[Any, str]]):
        """The planned normalisation of X-rays (path, units pairs): HU only if they are HU,
        else each image z-scored."""
        o = self.options
        return plan_normalization(o.normalize, o.window, images, projection=True)

    def _plan(self, train: list[dict[str, Any]]) -> dict[str, Any]:
        from .models.retinanet import LEVEL_STRIDES

        o = self.options
        norm = self._normalization([(e["source"], e["units"]) for e in train])
        if o.anchor_sizes is not None:
            sizes = [float(s) for s in o.anchor_sizes]
        else:
            corners = np.array([b for e in train for b in e["boxes"]], dtype=np.float64).reshape(-1, 4)
            sides = np.sqrt((corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1]))
            low = max(float(np.percentile(sides, ANCHOR_PERCENTILE)), 4.0)
            base = 2.0 ** math.floor(math.log2(low))
            sizes = [base * 2 ** level for level in range(len(LEVEL_STRIDES))]
        from .intensity import describe_spec
        from .plan import GIVEN, PLANNED, PlanLine, option_line

        chosen = getattr(self, "device_choices", {})
        lines = [option_line(o, "size", chosen=chosen),
                 PlanLine("normalize", describe_spec(norm.spec), GIVEN if o.normalize != "auto" else PLANNED, norm.why),
                 PlanLine("anchor_sizes", sizes, GIVEN if o.anchor_sizes is not None else PLANNED,
                          "given" if o.anchor_sizes is not None else
                          f"the {ANCHOR_PERCENTILE:g}th percentile of the training boxes' sides, doubled per level"),
                 *[option_line(o, name, chosen=chosen) for name in ("model", "fpn_width", "augment", "nms")]]
        return {"size": o.size, "shape": [o.size, o.size], "spacing": None, "normalize": norm.spec,
                "normalize_why": norm.why,
                "anchor_sizes": sizes, "anchor_ratios": [float(r) for r in o.anchor_ratios],
                "nms": o.nms, "min_score": DEFAULT_MIN_SCORE, "classes": ["background", o.class_name],
                "plan": [line.as_dict() for line in lines]}

    def _build_cache(self, cases, boxes, cache: Path, size: int, spec, *, workers, progress, on_error):
        o = self.options
        if spec is None:                      # planned from the first images' units
            spec = self._normalization([(c.image, read_image(c.image)[1]) for c in cases[:AUTO_SAMPLE]]).spec
        key = {"size": size, "normalize": spec, "boxes": str(Path(o.boxes).resolve())}
        found = cached(cache, key, [c.case_id for c in cases], lambda entry: Path(entry["image"]).exists())
        if found is not None:
            return found
        jobs = [_CacheJob(c.case_id, str(c.image), boxes[c.case_id].tolist(), str(o.boxes), str(cache), size, spec)
                for c in cases]
        return build_cache(cache, key, jobs, preprocess_image, workers=workers, progress=progress,
                           on_error=on_error, name=lambda job: job.source)

    # -- model, loss, data ---------------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        o, r = self.options, self.recipe
        config = {"in_channels": 1, "num_classes": len(r["classes"]) - 1, "size": r["size"],
                  "anchor_sizes": list(r["anchor_sizes"]), "anchor_ratios": list(r["anchor_ratios"]),
                  "fpn_width": o.fpn_width, "nms_thresh": r["nms"]}
        return {"name": o.model, "config": config}

    def init_model(self, model) -> None:
        """Load ``--weights`` (a local state dict) into a new model."""
        import torch

        from .models.retinanet import load_pretrained

        path = self.options.weights
        if path is None:
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            load_pretrained(model, state)
        except Exception as exc:  # torch raises many types for a bad file
            raise InputError(f"cannot use these weights ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
                             path=path, hint="give a state dict of a torchvision ResNet or RetinaNet, "
                                             "or a medtool detector") from None

    def build_loss(self):
        from .models.retinanet import detection_loss

        return detection_loss

    def dataset(self, *, length: int, seed: int):
        slots = max(1, max(len(e["boxes"]) for e in self.train_cases))
        return BoxDataset(self.train_cases, length=length, seed=seed, slots=slots)

    def augmenter(self, seed: int):
        from .augment import Augmenter, make_config

        return _WithBoxes(Augmenter(make_config(self.options.augment, self.options.aug), seed=seed))

    @property
    def metric_names(self) -> list[str]:
        return ["map_iou", "min_score"]

    def held_out(self, checkpoint: dict[str, Any], *, device, out: Path, fold: int):
        """Boxes on the held-out images as predict writes them (``out/fold_K.csv``, the fold's
        validated score cut) and their RSNA map-iou against the box table."""
        from .metrics.boxes import map_iou_per_image, read_predictions, read_truth
        from .tables import read_table
        from .tasks import HeldOut

        path = Path(out) / f"fold_{fold}.csv"
        outcome = predict_files(checkpoint, [c.image for c in self.val_sources], path, settings=PredictSettings(),
                                device=device, force=True)
        if outcome.failures:
            raise outcome.failures[0][1]
        rows = [dict(row) for row in read_table(path, required=PREDICTION_COLUMNS).rows]
        pred = read_predictions(path)
        per_image = map_iou_per_image(read_truth(self.options.boxes).take(pred.ids), pred)
        return HeldOut(rows, list(PREDICTION_COLUMNS), {"map_iou": _nanmean(per_image)}, per_image)

    def pool(self, held) -> dict[str, float]:
        """The RSNA map-iou over every held-out image (the mean of each image's score)."""
        return {"map_iou": _nanmean(np.concatenate([h.data for h in held]))}

    def validate(self, model, *, device, amp_dtype=None, batch_size: int = VALIDATION_BATCH) -> dict[str, float]:
        """RSNA map-iou on the validation images at the best score cut of :data:`SCORE_CUTS`."""
        from .metrics.boxes import ImageBoxes, map_iou

        if not self.val_cases:
            return {}
        found = detect_arrays(model, [np.load(e["image"]) for e in self.val_cases], device=device,
                              amp_dtype=amp_dtype, batch_size=batch_size)
        ids = [e["image_id"] for e in self.val_cases]
        truth = ImageBoxes.from_lists(ids, [_xywh(np.array(e["boxes"]).reshape(-1, 4)) for e in self.val_cases])
        scores = []
        for cut in SCORE_CUTS:
            kept = [(_xywh(b[s >= cut]), s[s >= cut]) for b, s in found]
            pred = ImageBoxes.from_lists(ids, [k[0] for k in kept], [k[1] for k in kept])
            scores.append(map_iou(truth, pred))
        scores = np.nan_to_num(np.array(scores), nan=0.0)
        best = int(np.argmax(scores))
        self.recipe["min_score"] = float(SCORE_CUTS[best])     # the checkpoint's recipe follows
        return {"map_iou": float(scores[best]), "min_score": float(SCORE_CUTS[best]), "score": float(scores[best])}


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _xywh(corners: np.ndarray) -> np.ndarray:
    corners = np.asarray(corners, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)


class BoxDataset(EpochOrder):
    """The training images, each once per epoch in a seeded random order (repeated to fill
    ``length``); items are ``(image (1, S, S), boxes (slots, 4))``, boxes ``x0 y0 x1 y1`` in
    model pixels padded with NaN rows."""

    def __init__(self, cases: list[dict[str, Any]], *, length: int, seed: int = 0, slots: int = 1):
        super().__init__(cases, length=length, seed=seed)
        self.slots = slots

    def __getitem__(self, item: int):
        import torch

        case = self.cases[self.case(item)]
        image = torch.from_numpy(np.load(case["image"]).astype(np.float32))[None]
        boxes = torch.full((self.slots, 4), math.nan)
        if case["boxes"]:
            given = torch.tensor(case["boxes"], dtype=torch.float32)[: self.slots]
            boxes[: len(given)] = given
        return image, boxes


class _WithBoxes:
    """The augmenter applied to a batch of images and their boxes."""

    def __init__(self, augmenter):
        self.augmenter = augmenter

    def __call__(self, images, boxes):
        return self.augmenter.with_boxes(images, boxes)


def detect_arrays(model, images: Sequence[np.ndarray], *, device, amp_dtype=None,
                  batch_size: int = VALIDATION_BATCH) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a detector on model-space images ``(S, S)``: per image the boxes ``x0 y0 x1 y1``
    (model pixels) and scores of the foreground class, best first."""
    import torch

    found = []
    with evaluating(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = np.stack([np.asarray(a, dtype=np.float32) for a in images[start:start + batch_size]])
            batch = torch.from_numpy(chunk)[:, None].to(device)
            with autocast(device, amp_dtype):
                outputs = model(batch)
            for out in outputs:
                keep = out["labels"] == 1
                scores = out["scores"][keep].float().cpu().numpy()
                order = np.argsort(-scores, kind="stable")
                found.append((out["boxes"][keep].float().cpu().numpy()[order].astype(np.float64),
                              scores[order].astype(np.float64)))
    return found


# -- prediction ---------------------------------------------------------------------------------------
@dataclass
class PredictSettings:
    """How ``predict`` post-processes detections (``None``: the checkpoint's recipe)."""

    min_score: float | None = None
    nms: float | None = None
    max_boxes: int = 100
    batch_size: int = 4


def prediction_string(boxes: np.ndarray, scores: np.ndarray) -> str:
    """``conf x y w h`` groups (``boxes`` are ``x y w h``), best first."""
    rows = np.column_stack([scores, boxes]).reshape(-1, 5)
    return " ".join(f"{c:.4f} {x:.1f} {y:.1f} {w:.1f} {h:.1f}" for c, x, y, w, h in rows)


def predict_files(checkpoint: dict[str, Any], inputs: Sequence[str | Path], out: str | Path, *,
                  settings: PredictSettings, device, force: bool = False,
                  shard: tuple[int, int] | None = None, amp: str = "auto", progress: bool = False,
                  on_error=None):
    """``medtool predict`` for a detection checkpoint: every image under ``inputs`` to one row
    of the RSNA submission table ``out`` (boxes in the image's own pixels).

    Returns a :class:`~medtool.batch.BatchResult` whose results are ``{patientId, boxes,
    top_score}`` per image; the table holds the images that could be read.
    """
    from .batch import BatchResult
    from .errors import MedtoolError
    from .files import check_writable, take_shard
    from .tables import write_csv
    from .train import amp_dtype, build_model

    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise UsageError(f"{out}: a detection checkpoint writes one CSV", hint="name the output <name>.csv")
    check_writable(out, force=force)
    recipe = checkpoint["recipe"]
    validated = checkpoint.get("metrics", {}).get("min_score", recipe.get("min_score", DEFAULT_MIN_SCORE))
    min_score = validated if settings.min_score is None else settings.min_score
    nms = recipe["nms"] if settings.nms is None else settings.nms
    if not 0 <= min_score < 1:
        raise UsageError("--min-score must be in [0, 1)")
    if not 0 < nms <= 1:
        raise UsageError("--nms must be an IoU in (0, 1]")
    model = build_model(checkpoint).to(device)
    model.settings(min_score=min_score, nms=nms, detections=settings.max_boxes)
    dtype = amp_dtype(amp, device)
    sources = take_shard(find_images(inputs), shard)
    if not sources:
        raise InputError("no image files", path=", ".join(map(str, inputs)), hint="give X-ray files or folders")
    ids = [image_id(p) for p in sources]
    twice = repeated(ids)
    if twice:
        raise UsageError(f"image ids found twice: {named_ids(twice)}", hint="keep one file per image")
    outcome = BatchResult(results=[None] * len(sources))
    rows = []
    from .batch import ProgressBar

    with ProgressBar("predicting", len(sources), progress) as advance:
        for start in range(0, len(sources), settings.batch_size):
            chunk, arrays, scales = [], [], []
            for index in range(start, min(start + settings.batch_size, len(sources))):
                try:
                    array, _ = read_image(sources[index])
                except MedtoolError as error:
                    outcome.failures.append((str(sources[index]), error))
                    if on_error is not None:
                        on_error(error)
                    advance()
                    continue
                image, scale = letterbox(array, recipe["size"], recipe["normalize"])
                chunk.append((index, array.shape))
                arrays.append(image)
                scales.append(scale)
            if not chunk:
                continue
            found = detect_arrays(model, arrays, device=device, amp_dtype=dtype, batch_size=len(arrays))
            for (index, shape), (sy, sx), (corners, scores) in zip(chunk, scales, found):
                original = corners / np.array([sx, sy, sx, sy])
                original = np.minimum(np.maximum(original, 0), np.array([shape[1], shape[0]] * 2, dtype=float))
                boxes = _xywh(original)
                kept = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
                boxes, scores = boxes[kept], scores[kept]
                rows.append({"patientId": ids[index], "PredictionString": prediction_string(boxes, scores)})
                outcome.results[index] = {"patientId": ids[index], "boxes": int(len(boxes)),
                                          "top_score": round(float(scores[0]), 4) if len(scores) else None}
                advance()
    outcome.failures.sort(key=lambda failure: failure[0])
    write_csv(out, PREDICTION_COLUMNS, rows, force=force)
    return outcome
