"""The segmentation task: recipe, preprocessing, training pieces and prediction.

The **recipe** is everything ``predict`` needs to treat a new volume as training did, stored in
the checkpoint (docs/architecture.md): ``dim`` (2 or 3), ``patch`` ``(pz, py, px)`` (``pz = 1`` in 2D),
``spacing`` (mm, ``null`` for an axis kept as it is: z in 2D), ``normalize`` (``ct`` window
scaled to [0, 1], per-volume ``zscore``, or ``none``), ``classes`` (names, background first)
and ``activation`` (``sigmoid`` for one foreground class trained that way, else ``softmax``).

Prediction (:func:`predict_volume`): resample the input to the recipe's spacing (linear), normalise,
sliding-window logits streamed along z (:func:`~medtool.inference.sliding_window`), labels per
slab (arg-max or threshold) at the model's resolution, keep the N largest components per label,
then resample the *labels* onto the input's own grid with nearest neighbour: full-resolution
float maps for every class are never made (only with ``probabilities=True``, and then one class
at a time). With ``interpolation="linear"`` (nnU-Net's way) the class probabilities, with the
dropped components made background, are interpolated linearly onto the input's grid instead and
the labels taken there, a slab of output slices at a time (:data:`LABEL_SLAB_BYTES`), so only one
slab of float maps exists at full resolution. Edges follow the probabilities between the model's
voxels rather than its voxel steps: on the tumour phantom (3.5 x 3 x 3 mm model voxels, inputs
with 1.25-6 mm slices) this raised held-out Dice by 0.016-0.020 for each of three models.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError, UsageError, check_choice
from .intensity import (Normalization, channel_specs, describe_spec, normalize, normalize_channels,
                        plan_foreground, plan_normalization)
from .tasks import Task, TaskOptions, build_cache, cached, evaluating, read_cache
from .volume import Volume

#: Largest default patch: 3D ``(z, y, x)`` and 2D ``(y, x)``.
MAX_PATCH_3D = (64, 128, 128)
MAX_PATCH_2D = (256, 256)
#: Overlap of validation windows during training (prediction defaults to 0.5).
VALIDATION_OVERLAP = 0.25
#: Activations of the output layer.
ACTIVATIONS = ("auto", "sigmoid", "softmax")
#: What a CPU run plans for the options not given (the lung recipe of docs/recipes.md).
CPU_PLAN = {"dim": 2, "width": 16, "pos_ratio": 0.5}
#: ... and for the loop settings not given.
CPU_LOOP_PLAN = {"batch_size": 8, "lr": 2e-3}
#: Foreground share of a case's volume (the median case) under which the structures are small
#: (tumours, nodules: about 0.1 % in the phantom; lungs 10-25 %).
SMALL_FOREGROUND = 0.01
#: On a CPU for small structures, the tumour recipe of docs/recipes.md instead (a small 3D
#: U-Net on 24 x 64 x 64 patches, deep supervision, per-sample Dice, lesion copy-paste) ...
CPU_SMALL_PLAN = {"dim": 3, "patch": [24, 64, 64], "width": 8, "depth": 4, "deep_supervision": True,
                  "batch_dice": False, "pos_ratio": 0.5,
                  "aug": ["flip=0.5", "scale=0.7,1.4", "p_scale=0.4", "lowres=0.5,1", "p_lowres=0.3",
                          "paste=0.5", "paste_scale=0.4,1"]}
#: ... and its loop settings (bfloat16 where the CPU has it natively).
CPU_SMALL_LOOP_PLAN = {"batch_size": 2, "steps_per_epoch": 40, "val_every": 8, "lr": 3e-3}


@dataclass
class SegmentOptions(TaskOptions):
    """What ``medtool train --task segment`` was asked for (stored in the checkpoint)."""

    masks: str | None = None
    csv: str | None = None
    dataset: str | None = None
    channels: list[str] | None = None
    clip_percentiles: list[float] | None = None
    regions: str | None = None
    image_suffix: str = ""
    mask_suffixes: list[str] = field(default_factory=lambda: [""])
    class_names: list[str] | None = None
    dim: int = 3
    patch: list[int] | None = None
    spacing: list[float] | None = None
    pos_ratio: float = 0.33
    activation: str = "auto"
    model: str = "unet"
    width: int = 32
    depth: int = 5
    norm: str = "instance"
    dropout: float = 0.0
    residual: bool = False
    deep_supervision: bool = False
    channels_last: bool | None = None
    upsample: str = "transpose"
    loss: str = "dice-ce"
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    batch_dice: bool = True
    topk: float = 100.0
    val_overlap: float = VALIDATION_OVERLAP

    def check(self) -> None:
        """Raise :class:`UsageError` for impossible combinations (before any work)."""
        from .losses import check_loss

        given = [name for name, value in (("--dataset", self.dataset), ("--csv", self.csv),
                                          ("--images", self.images)) if value is not None]
        if len(given) > 1:
            raise UsageError(f"give one of --dataset, --csv and --images/--masks, not {' and '.join(given)}")
        if not given or (self.images is not None and self.masks is None):
            raise UsageError("give --images DIR and --masks DIR, --csv cases.csv or --dataset DIR")
        if self.channels and self.csv is not None:
            raise UsageError("--channels reads a --dataset or --images folder, not --csv",
                             hint="give --images DIR --masks DIR --channels a,b (files <case>_a, <case>_b)")
        if self.channels and self.image_suffix:
            raise UsageError("give --channels or --image-suffix, not both",
                             hint="--channels flair,t1ce reads <case>_flair and <case>_t1ce")
        if self.clip_percentiles is not None and not 0 <= self.clip_percentiles[0] < self.clip_percentiles[1] <= 100:
            raise UsageError(f"--clip-percentiles {self.clip_percentiles}: give LOW HIGH with 0 <= LOW < HIGH <= 100")
        if self.dim not in (2, 3):
            raise UsageError(f"--dim must be 2d or 3d, got {self.dim}")
        self.check_shared(paste=True)
        check_choice("--activation", self.activation, ACTIVATIONS)
        check_loss(self.loss, ce_weight=self.ce_weight, dice_weight=self.dice_weight, topk=self.topk)
        if self.regions is not None:
            from .metrics.regions import parse_regions

            parse_regions(self.regions)
            if self.activation == "softmax":
                raise UsageError("--regions trains one sigmoid per region; --activation softmax does not apply")
        if not 0 <= self.pos_ratio <= 1:
            raise UsageError("--pos-ratio must be between 0 and 1")
        if self.patch is not None and len(self.patch) != self.dim:
            raise UsageError(f"--patch needs {self.dim} sizes for --dim {self.dim}d, got {self.patch}")
        if self.spacing is not None and len(self.spacing) != 3:
            raise UsageError(f"--spacing needs three values (z y x mm), got {self.spacing}")


# -- preprocessing shared by training and prediction ----------------------------------------------
def as_3d(volume: Volume) -> Volume:
    """A 2D image as a one-slice volume (its normal is the slice axis at 1 mm)."""
    if volume.ndim == 3:
        return volume
    return Volume(volume.array[None], (1.0, *volume.spacing), volume.origin, volume.direction,
                  dict(volume.meta), list(volume.history))


def model_spacing(volume: Volume, spacing: Sequence[float | None] | None) -> tuple[float, ...]:
    """The recipe's spacing for ``volume``: ``None`` entries keep the volume's own."""
    if spacing is None:
        return tuple(volume.spacing)
    return tuple(float(v if s is None else s) for s, v in zip(spacing, volume.spacing))


def training_orientation(volumes: Sequence[Volume]) -> str | None:
    """The orientation most of the training volumes have (the first of the most common), which
    every input is reordered to before the model sees it; ``None`` for 2D images."""
    from collections import Counter

    codes = [v.orientation for v in volumes if v.ndim == 3]
    return Counter(codes).most_common(1)[0][0] if codes else None


def in_orientation(volume: Volume, recipe: dict[str, Any]) -> Volume:
    """``volume`` reordered (axes permuted and flipped, exactly) to the recipe's training
    orientation, so that a flipped or transposed input shows the model what training did;
    itself when it has it already (or the recipe has none: checkpoints before it)."""
    wanted = recipe.get("orientation")
    if not wanted or volume.ndim != 3 or volume.orientation == wanted:
        return volume
    return volume.reoriented(wanted)


def to_model_space(volume: Volume, recipe: dict[str, Any], *, mask: bool = False,
                   device: Any = "cpu") -> Volume:
    """``volume`` (3D) resampled to the recipe's spacing (linear; nearest for masks).

    A recipe with a fixed input ``shape`` (classification) also keeps the ``shape`` centre
    voxels at that spacing (padding where the volume is smaller), in the same interpolation.
    """
    from .resample import centre_crop, resample, resample_to, target_grid

    volume = in_orientation(volume, recipe)
    spacing = model_spacing(volume, recipe.get("spacing"))
    shape = recipe.get("shape")
    same_spacing = np.allclose(spacing, volume.spacing, rtol=0, atol=1e-6)
    if same_spacing and (shape is None or tuple(volume.shape) == tuple(shape)):
        return volume
    if shape is None:
        return resample(volume, spacing=spacing, mask=mask, device=device)
    grid = centre_crop(target_grid(volume, spacing=spacing), shape)
    return resample_to(volume, grid, mask=mask, device=device)


def prepare_image(volume: Volume, recipe: dict[str, Any], *, device: Any = "cpu") -> Volume:
    """An input volume as the model sees it: 3D, at the recipe's spacing, normalised float32."""
    volume = to_model_space(as_3d(volume), recipe, device=device)
    return volume.with_array(normalize(volume.array, recipe["normalize"]))


def prepare_inputs(volumes: Volume | Sequence[Volume], recipe: dict[str, Any], *,
                   device: Any = "cpu") -> tuple[Volume, np.ndarray]:
    """The input channels of one case as the model sees them: the model-space grid (a volume of
    the first channel) and the normalised ``(C, z, y, x)`` float32 array. ``volumes`` are on
    one grid (:func:`medtool.channels.onto_reference`); a single volume is one channel."""
    volumes = [volumes] if isinstance(volumes, Volume) else list(volumes)
    model = [to_model_space(as_3d(v), recipe, device=device) for v in volumes]
    array = normalize_channels([m.array for m in model], recipe["normalize"])
    return model[0], array


def read_inputs(paths: Sequence[str | Path], recipe: dict[str, Any]) -> list[Volume]:
    """The input channels of a case from its files (the first channel's first), as the recipe's
    :class:`~medtool.channels.InputChannels` say; one file is one channel for a recipe without."""
    from .channels import InputChannels
    from .formats import load_volume

    channels = InputChannels.from_recipe(recipe)
    if channels is None:
        return [load_volume(paths[0], mmap=True)]
    return channels.read(paths)


def input_files(first: str | Path, recipe: dict[str, Any]) -> list[Path]:
    """The files of the case whose first channel's file is ``first`` (refused, naming the
    missing file, when a channel is not there)."""
    from .channels import InputChannels

    channels = InputChannels.from_recipe(recipe)
    return [Path(first)] if channels is None else channels.files(first)


# -- the cache ---------------------------------------------------------------------------------------
@dataclass
class _CacheJob:
    case_id: str
    images: list[str]
    masks: list[str]
    cache: str
    recipe: dict[str, Any]
    seed: int


def grid_hint(mask: Volume, image: Volume) -> str:
    """What to do about a mask off its image's grid, never what would destroy it: an array
    without geometry (or with the image's shape, a wrong header) gets the image's geometry;
    a mask of another real grid is resampled."""
    if mask.meta.get("geometry") == "assumed" or mask.shape == image.shape:
        return "give it its image's geometry: medtool attach MASK --like IMAGE OUT (check the orientation it reports)"
    return "resample it onto the image grid: medtool resample MASK OUT --like IMAGE"


def preprocess_case(job: _CacheJob) -> dict[str, Any]:
    """Bring one case into the model's space and write it to the cache (see the module docstring)."""
    from .datasets import locations, merge_masks, objects
    from .formats import load_volume, save_volume

    channels = [as_3d(v) for v in read_inputs(job.images, job.recipe)]
    image = channels[0]
    arrays = []
    for path in job.masks:
        mask = as_3d(load_volume(path, mmap=True))
        if not mask.same_grid(image, atol=1e-3):
            raise InputError(f"mask is not on the grid of its image {Path(job.images[0]).name} "
                             f"(shape {list(mask.shape)} vs {list(image.shape)})", path=path,
                             hint=grid_hint(mask, image))
        if mask.array.dtype.kind == "f" and not np.all(np.mod(mask.array, 1) == 0):
            raise InputError("mask holds non-integer values", path=path,
                             hint="masks are integer label volumes (0 background)")
        arrays.append(mask.array)
    try:
        labels, counts = merge_masks(arrays)
    except ValueError as exc:
        raise InputError(str(exc), path=job.masks[0], hint="masks hold labels 0..255") from exc
    recipe = job.recipe
    model_images = [to_model_space(c, recipe) for c in channels]
    model_mask = to_model_space(image.with_array(labels, units="label"), recipe, mask=True)
    cache = Path(job.cache)
    image_path, mask_path = cache / f"{job.case_id}_image.npy", cache / f"{job.case_id}_mask.npy"
    fg_path = cache / f"{job.case_id}_fg.npz"
    from .datasets import save_cached_image
    from .files import atomic_output

    save_cached_image(image_path, model_images[0],
                      normalize_channels([m.array for m in model_images], recipe["normalize"]))
    save_volume(model_mask.with_array(np.asarray(model_mask.array, dtype=np.uint8)), mask_path, force=True)
    classes = int(labels.max()) + 1 if labels.size else 1
    where = locations(model_mask.array, classes, rng=np.random.default_rng([job.seed, len(job.case_id)]))
    with atomic_output(fg_path, force=True) as temp:
        with open(temp, "wb") as handle:
            np.savez(handle, **{f"class_{k}": v for k, v in where.items()})
    from .plan import foreground_statistics

    inside = model_mask.array > 0
    stats = [foreground_statistics(m.array, inside) for m in model_images]
    entry = {"case_id": job.case_id, "image": str(image_path), "mask": str(mask_path),
             "locations": str(fg_path), "shape": list(model_mask.shape), "label_counts": counts,
             "present": sorted(where), "objects": objects(model_mask.array, classes), "foreground": stats[0]}
    if len(stats) > 1:
        entry["foreground_channels"] = stats
    return entry


def _grouped(names: Sequence[str], specs: Sequence[dict[str, Any]], whys: Sequence[str]) -> dict[str, list[str]]:
    """The channel names by what their normalisation says (``zscore (why)``): one line for
    every channel normalised alike."""
    groups: dict[str, list[str]] = {}
    for name, spec, why in zip(names, specs, whys):
        groups.setdefault(describe_spec(spec) + (f" ({why})" if why else ""), []).append(name)
    return groups


def _read_header(path: str, *, four_d: bool = False) -> Volume:
    """The image at ``path`` as a 3D volume (the first channel of a 4D file)."""
    from .formats import load_channels, load_volume

    return as_3d(load_channels(path)[0] if four_d else load_volume(path, mmap=True))


def label_counts(truth: np.ndarray, pred: np.ndarray, labels: int) -> tuple[np.ndarray, ...]:
    """Voxels of each label 1..``labels`` in ``truth``, in ``pred`` and in both (one pass of
    :func:`numpy.bincount` over the joint labels, not one mask per label)."""
    size = labels + 1
    joint = np.bincount((np.asarray(truth, np.int64) * size + np.asarray(pred, np.int64)).ravel(),
                        minlength=size * size)[: size * size].reshape(size, size)
    return joint.sum(axis=1)[1:], joint.sum(axis=0)[1:], np.diagonal(joint)[1:].copy()


def validation_scores(classes: Sequence[str], truth: np.ndarray, pred: np.ndarray, overlap: np.ndarray,
                      voxel_ml: np.ndarray) -> dict[str, float]:
    """Validation metrics from voxel counts ``(cases, labels)`` (see :meth:`SegmentTask.validate`):
    ``dice_<label>`` the mean Dice over the cases where truth or prediction holds the label
    (absent when there is none), ``fp_ml_<label>`` the mean predicted volume on cases whose truth lacks it, ``score`` the
    mean of the defined Dice values."""
    truth, pred, overlap = (np.asarray(a, dtype=np.float64) for a in (truth, pred, overlap))
    total = truth + pred
    with np.errstate(invalid="ignore", divide="ignore"):
        per_case = np.where(total > 0, 2 * overlap / total, np.nan)
    result: dict[str, float] = {}
    dices = []
    for column, name in enumerate(classes):
        defined = per_case[~np.isnan(per_case[:, column]), column]
        if defined.size:                # else no case has a Dice for it: left out, not NaN
            result[f"dice_{name}"] = float(defined.mean())
            dices.append(result[f"dice_{name}"])
    for column, name in enumerate(classes):
        empty = truth[:, column] == 0
        result[f"fp_ml_{name}"] = float((pred[empty, column] * voxel_ml[empty]).mean()) if empty.any() else 0.0
    if dices:
        result["score"] = float(np.mean(dices))
    return result


def _label_names(path, count: int) -> list[str] | None:
    """The names of labels 1..``count`` of a mask whose metadata names them (``meta["labels"]``:
    the ROI or segment names of an RTSTRUCT or SEG, the tumour classes of the brain phantom),
    else ``None``."""
    from .formats import load_volume

    meta = load_volume(path, mmap=True).meta
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not count:
        return None
    names = [labels.get(str(value)) for value in range(1, count + 1)]
    return ["_".join(str(n).split()) for n in names] if all(names) else None


def _mean_dice(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, float]:
    """Mean Dice per class over the cases where it is defined (truth or prediction holds the
    class: nnU-Net's rule) and ``score``, their mean."""
    result = {}
    for name in names:
        values = np.array([row[f"dice_{name}"] for row in rows], dtype=float)
        result[f"dice_{name}"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    defined = [v for v in result.values() if np.isfinite(v)]
    result["score"] = float(np.mean(defined)) if defined else float("nan")
    return result


# -- the task -----------------------------------------------------------------------------------------
class SegmentTask(Task):
    """Segmentation for :func:`medtool.train.fit`: data, model, loss, augmentation, validation."""

    name = "segment"
    plan_keys = ("dim", "spacing", "normalize", "normalize_why", "orientation", "image_suffix", "dataset", "patch",
                 "classes", "activation")

    # -- data ------------------------------------------------------------------------------------
    @functools.cached_property
    def layout(self):
        """The ``--dataset`` read in its own layout (:mod:`medtool.layouts`), or ``None``."""
        from .layouts import read_layout

        return None if self.options.dataset is None else read_layout(self.options.dataset,
                                                                      channels=self.options.channels)

    @functools.cached_property
    def input_channels(self):
        """The model's input channels (:class:`~medtool.channels.InputChannels`), or ``None``
        for one image per case: the dataset's chosen channels, or ``--channels`` of --images."""
        from .layouts import input_channels

        return input_channels(self.layout, self.options.channels)

    def plan_device(self, config, device) -> None:
        """On a CPU, a measured recipe of docs/recipes.md for each setting not given: for
        large structures the lung recipe (a 2D U-Net of width 16, batches of 8, a foreground
        share of 0.5, lr 2e-3: a 3D U-Net of nnU-Net's size trains about ten times fewer
        samples a second there), for small ones (:func:`structure_statistics`' share under
        :data:`SMALL_FOREGROUND`) the tumour recipe (:data:`CPU_SMALL_PLAN`). On CUDA the
        defaults stand (nnU-Net's 3D configuration). Only options whose ``given`` is known are
        changed (the command line's; Python callers keep what they set)."""
        given = self.options.given
        planned_here = device.type == "cpu" and given is not None and config.given is not None
        cases = self.cases() if planned_here else []                       # masks read only if it matters
        share, into = (structure_statistics(cases, paste="aug" not in given) if planned_here
                       else (None, None))
        self.small_structures = share is not None and share < SMALL_FOREGROUND
        keep = (("dim",) if "patch" in (given or ()) else ()) + (("patch",) if "dim" in (given or ()) else ())
        if self.small_structures:
            from .train import cpu_has_bf16

            loop = {**CPU_SMALL_LOOP_PLAN, **({"amp": "bf16"} if cpu_has_bf16() else {})}
            why = (f"a CPU and small structures (median foreground {share:.2%} of a case): "
                   "the CPU tumour recipe of docs/recipes.md")
            plan = CPU_SMALL_PLAN
            if into is not None:
                plan = {**plan, "aug": [*plan["aug"], f"paste_into={into[0]:g},{into[1]:g}"]}
            self.apply_cpu_plan(config, device, plan, loop, why, keep=keep)
            if into is not None and "aug" in self.device_choices:
                self.device_choices["aug"] = (
                    f"{why}; paste_into: the HU around the training objects (quartiles of a "
                    f"{PASTE_SHELL_VOXELS}-voxel shell widened by {PASTE_FENCE_IQR:g} IQR)")
        else:
            self.apply_cpu_plan(config, device, CPU_PLAN, CPU_LOOP_PLAN,
                                "a CPU: the CPU lung recipe of docs/recipes.md (3D trains about 10x slower here)",
                                keep=keep)

    def data_line(self) -> str | None:
        return None if self.layout is None else self.layout.describe()

    def cases(self):
        from .datasets import match_cases, read_cases_csv

        o = self.options
        if self.layout is not None:
            return self.layout.cases
        if o.csv is not None:
            return read_cases_csv(o.csv)
        return match_cases(o.images, o.masks, o.mask_suffixes, image_suffix=o.image_suffix,
                           channels=self.input_channels)

    def prepare(self, cache: Path, *, seed: int, workers: int = 1, progress: bool = False,
                build_cache: bool = True, on_error=None) -> None:
        """Find and split the cases, plan the recipe (unless resumed), write/read the cache.

        Only one process builds the cache (``build_cache``); the others read its index after.
        """
        o = self.options
        cases = self.cases()
        train, val = self.split(cases, seed=seed)
        if not self.recipe:
            self.recipe = self._plan(train)
        cache = Path(cache)
        key = {k: self.recipe[k] for k in ("spacing", "normalize", "dim")}
        key["mask_suffixes"] = o.mask_suffixes
        if self.recipe.get("channels"):
            key["channels"] = self.recipe["channels"]
        if build_cache:
            entries = self._build_cache(train + val, cache, key, seed=seed, workers=workers,
                                        progress=progress, on_error=on_error)
        else:
            entries = read_cache(cache)
        self.take_cached(entries, train, val)
        if "classes" not in self.recipe:
            self._plan_classes(entries, train)
        if "plan" not in self.recipe:
            self._plan_report(train, self.train_cases)

    def _plan(self, train) -> dict[str, Any]:
        """Spacing (median of the training images), normalisation and patch size."""
        o = self.options
        headers = self._headers(train)
        spacings = np.array([h.spacing for h in headers])
        shapes = np.array([h.shape for h in headers])
        if o.spacing is not None:
            spacing = [float(s) for s in o.spacing]
        else:
            spacing = [float(s) for s in np.median(spacings, axis=0)]
        if o.dim == 2:
            spacing[0] = None       # slices stay as they are
        sizes = np.median(shapes * spacings / np.array([s or v for s, v in zip(spacing, spacings[0])]), axis=0)
        layout, channels = self.layout, self.input_channels
        specs, whys = self._plan_normalization(train, headers)
        recipe: dict[str, Any] = {"dim": o.dim, "spacing": spacing, "normalize": specs[0] if channels is None else specs,
                                  "normalize_why": whys[0] if channels is None else "; ".join(whys),
                                  "orientation": training_orientation(headers),
                                  "image_suffix": layout.image_suffix if layout is not None else
                                  channels.suffixes[0] if channels is not None and channels.suffixes else o.image_suffix}
        if channels is not None:
            recipe["channels"] = channels.as_dict()
        if layout is not None:
            recipe["dataset"] = {"kind": layout.kind, "channel": layout.channel, "channels": layout.channels}
        recipe["patch"] = self._plan_patch(sizes)
        return recipe

    def _plan_normalization(self, train, headers) -> tuple[list[dict[str, Any]], list[str]]:
        """One normalisation per input channel and why: a channel named by a dataset or by
        ``--channels`` follows nnU-Net's rule on its name (CT: the CT window, others a z-score),
        one image without names is judged by its values and metadata; z-scores are taken inside
        the nonzero voxels when a few training cases show a zero background
        (:func:`~medtool.intensity.plan_foreground`) and clipped to ``--clip-percentiles``."""
        from .intensity import AUTO_SAMPLE

        o, layout, channels = self.options, self.layout, self.input_channels
        if channels is None:
            named = (layout.channel, f"the {layout.kind} dataset.json") if layout is not None and \
                layout.kind != "BraTS" else None
            plans = [plan_normalization(o.normalize, o.window, [(c.image, h) for c, h in zip(train, headers)],
                                        channel=named)]
        else:
            where = f"the {layout.kind} dataset" if layout is not None else "--channels"
            plans = [plan_normalization(o.normalize, o.window, [], channel=(name, where)) for name in channels.names]
            if o.normalize == "auto":       # one reason for all: nnU-Net's rule on the names
                plans = [Normalization(p.spec, f"by channel name in {where}, nnU-Net's rule") for p in plans]
        specs, whys = [dict(p.spec) for p in plans], [p.why for p in plans]
        if any(spec["mode"] == "zscore" for spec in specs):
            from .formats import load_volume

            sample = [[np.asarray(v.array) for v in (channels.read(c.inputs) if channels is not None
                                                     else [load_volume(c.image, mmap=True)])]
                      for c in train[:AUTO_SAMPLE]]
            inside, why = plan_foreground(sample)
            for k, spec in enumerate(specs):
                if spec["mode"] != "zscore":
                    continue
                if inside:
                    spec["foreground"] = "nonzero"
                if o.clip_percentiles is not None:
                    spec["clip"] = [float(v) for v in o.clip_percentiles]
                whys[k] += f"; {'inside the nonzero voxels' if inside else 'over every voxel'}: {why}"
        if channels is not None:
            whys = [f"{', '.join(names)}: {text}" for text, names in _grouped(channels.names, specs, whys).items()]
        return specs, whys

    def _headers(self, cases) -> list[Volume]:
        """The image headers of ``cases``, each read once per task (the plan and its report both
        need them; a gzipped NIfTI is decompressed to read one)."""
        if not hasattr(self, "_header_cache"):
            self._header_cache: dict[str, Volume] = {}
        four_d = self.input_channels is not None and self.input_channels.four_d
        for case in cases:
            if case.case_id not in self._header_cache:
                self._header_cache[case.case_id] = _read_header(str(case.image), four_d=four_d)
        return [self._header_cache[c.case_id] for c in cases]

    def _plan_report(self, train, entries) -> None:
        """The fingerprint of the training cases, the inference's keep-largest and a plan line per
        value (:mod:`medtool.plan`), into the recipe."""
        from .metrics.regions import paint_order
        from .plan import GIVEN, PLANNED, PlanLine, fingerprint, keep_largest, option_line

        o, recipe = self.options, self.recipe
        headers = self._headers(train)
        spacing3 = [s if s is not None else float(np.median([h.spacing[0] for h in headers])) for s in recipe["spacing"]]
        fp = fingerprint(entries, spacings=np.array([h.spacing for h in headers]),
                         shapes=np.array([h.shape for h in headers]), voxel_mm3=float(np.prod(spacing3)),
                         classes=recipe["classes"][1:])
        keep, keep_why = keep_largest(fp)
        labelled = sum(c["voxel_share"] for c in fp["classes"].values())
        interpolation, interpolation_why = (
            ("linear", f"small structures ({labelled:.2%} of the training voxels labelled): "
                       "probabilities interpolated onto each input's grid keep their edges (0.02 "
                       "more held-out Dice in docs/recipes.md)")
            if labelled < SMALL_FOREGROUND else
            ("nearest", "labels taken at the model's spacing, then nearest neighbour"))
        specs = channel_specs(recipe["normalize"])
        names = (recipe.get("channels") or {}).get("names") or ["image"]
        norm_text = (describe_spec(specs[0]) if isinstance(recipe["normalize"], dict) else
                     "; ".join(f"{', '.join(n)}: {t}" for t, n in _grouped(names, specs, [""] * len(specs)).items()))
        patch = recipe["patch"][1:] if o.dim == 2 else recipe["patch"]
        biggest = MAX_PATCH_3D if o.dim == 3 else MAX_PATCH_2D
        chosen = getattr(self, "device_choices", {})

        loop = getattr(self, "loop", None)
        lines = [
            option_line(o, "dim", f"{o.dim}d", chosen=chosen),
            PlanLine("spacing", [s if s is None else round(s, 4) for s in recipe["spacing"]],
                     GIVEN if o.spacing is not None else PLANNED,
                     "given" if o.spacing is not None else f"median of the {len(train)} training images"
                     + ("; slices kept as they are (2d)" if o.dim == 2 else "")),
            (option_line(o, "patch", patch, chosen=chosen) if o.patch is not None else
             PlanLine("patch", patch, PLANNED, f"median image size at that spacing, at most "
                      f"{' x '.join(map(str, biggest))}, divisible by the U-Net's strides")),
            PlanLine("normalize", norm_text, GIVEN if o.normalize != "auto" else PLANNED,
                     recipe.get("normalize_why", "")),
            *[option_line(o, name, chosen=chosen) for name in ("width", "depth", "deep_supervision", "loss",
                                                               "batch_dice", "pos_ratio", "augment")],
            *([option_line(o, "aug", " ".join(o.aug), chosen=chosen)] if o.aug else []),
            *([] if loop is None else [option_line(loop, name, chosen=chosen)
                                       for name in ("batch_size", "steps_per_epoch", "val_every", "lr",
                                                    "amp")]),
            *([PlanLine("regions", ", ".join(f"{k}={'+'.join(map(str, v))}" for k, v in recipe["regions"].items()),
                        GIVEN, "one sigmoid output per region; predict paints them back into labels "
                        + ", ".join(f"{k}->{v}" for k, v in paint_order(recipe["regions"])))]
              if recipe.get("regions") else []),
            PlanLine("orientation", recipe.get("orientation"), PLANNED,
                     "the training images' (the most common); other inputs are reordered to it exactly"),
            PlanLine("keep-largest", keep, PLANNED, f"{keep_why}; predict uses it unless --keep-largest is given"),
            PlanLine("interpolation", interpolation, PLANNED,
                     f"{interpolation_why}; predict uses it unless --interpolation is given"),
        ]
        recipe["fingerprint"] = fp
        recipe["inference"] = {"keep_largest": keep, "why": keep_why,
                               "interpolation": interpolation, "interpolation_why": interpolation_why}
        recipe["plan"] = [line.as_dict() for line in lines]

    def _plan_patch(self, sizes: np.ndarray) -> list[int]:
        from .models.unet import plan_strides

        o = self.options
        if o.patch is not None:
            wanted = list(o.patch)
        elif o.dim == 3:
            wanted = [int(min(s, m)) for s, m in zip(sizes, MAX_PATCH_3D)]
        else:
            wanted = [int(min(s, m)) for s, m in zip(sizes[1:], MAX_PATCH_2D)]
        strides = plan_strides(wanted, o.depth)
        divisor = np.prod(np.array(strides), axis=0) if strides else np.ones(len(wanted), int)
        patch = [int(max(d, int(np.ceil(w / d)) * d)) for w, d in zip(wanted, divisor)]
        return patch if o.dim == 3 else [1, *patch]

    def _build_cache(self, cases, cache: Path, key, *, seed, workers, progress, on_error):
        def complete(entry) -> bool:
            return "objects" in entry and all(Path(entry[k]).exists() for k in ("image", "mask", "locations"))

        found = cached(cache, key, [c.case_id for c in cases], complete)
        if found is not None:
            return found
        jobs = [_CacheJob(c.case_id, [str(p) for p in c.inputs], [str(m) for m in c.masks], str(cache),
                          self.recipe, seed) for c in cases]
        return build_cache(cache, key, jobs, preprocess_case, workers=workers, progress=progress,
                           on_error=on_error, name=lambda job: job.images[0])

    def _plan_classes(self, entries, train) -> None:
        o = self.options
        counts = np.max(np.array([e["label_counts"] for e in entries]), axis=0).tolist()
        declared = self.layout.classes if self.layout is not None else None
        if o.class_names is not None:
            names = list(o.class_names)
            if len(names) != sum(counts):
                raise UsageError(f"--class-names gives {len(names)} names but the masks hold "
                                 f"{sum(counts)} labels")
        elif declared is not None:
            names = list(declared)
            if sum(counts) > len(names):
                raise InputError(f"the label maps hold labels up to {sum(counts)}, dataset.json names "
                                 f"{len(names)}", path=self.layout.root, hint="fix the labels of dataset.json")
        else:
            names = []
            for k, (suffix, count) in enumerate(zip(o.mask_suffixes, counts)):
                named = _label_names(train[0].masks[k], count) if train else None
                stem = suffix.strip("_-. ") or "label"
                names += named or ([stem] if count == 1 and suffix else [f"{stem}_{i}" for i in range(1, count + 1)])
        if not names:
            raise InputError("the masks hold no foreground label", path=o.masks or o.csv,
                             hint="check the mask folder and --mask-suffix")
        self.recipe["classes"] = ["background", *names]
        if o.regions is not None:
            self.recipe["regions"] = self._plan_regions(len(names))
            self.recipe["activation"] = "sigmoid"
            return
        activation = o.activation
        if activation == "auto":
            activation = "sigmoid" if len(names) == 1 and o.loss == "bce-dice" else "softmax"
        if activation == "sigmoid" and len(names) != 1:
            raise UsageError(f"--activation sigmoid needs one foreground class, the masks hold {len(names)}")
        self.recipe["activation"] = activation

    def _plan_regions(self, top: int) -> dict[str, list[int]]:
        """``--regions`` for labels 1..``top``: one sigmoid output per region (nnU-Net's
        region-based training); a region of labels the masks never hold is refused."""
        from .metrics.regions import parse_regions

        regions = parse_regions(self.options.regions)
        for name, members in regions.items():
            if not any(1 <= m <= top for m in members):
                raise UsageError(f"--regions: region {name} ({'+'.join(map(str, members))}) holds none of "
                                 f"the masks' labels 1..{top}")
        return {name: [int(m) for m in members] for name, members in regions.items()}

    # -- cross-validation ---------------------------------------------------------------------------
    def held_out(self, checkpoint: dict[str, Any], *, device, out: Path, fold: int):
        """Label volumes of the held-out cases on their own grids (``out/<case>.nii.gz``, as
        predict writes them) and their Dice per class against the merged masks."""
        from .datasets import merge_masks
        from .formats import load_volume, save_volume
        from .metrics import dice
        from .tasks import HeldOut
        from .train import build_model

        from .metrics.regions import region_mask

        model = build_model(checkpoint).to(device)
        names = self._scored()
        regions = self.recipe.get("regions") or {name: [value] for value, name in enumerate(names, start=1)}
        rows = []
        for case in self.val_sources:
            channels = read_inputs(case.inputs, self.recipe)
            image = channels[0]
            labels, _ = predict_volume(model, channels, self.recipe, PredictSettings(), device=device)
            labels.meta["classes"] = self.recipe["classes"]
            path = Path(out) / f"{case.case_id}.nii.gz"
            save_volume(labels, path, force=True)
            masks = [load_volume(m, mmap=True) for m in case.masks]
            if not masks[0].same_grid(image):
                raise InputError("the mask is not on its image's grid", path=case.masks[0],
                                 hint=grid_hint(masks[0], image))
            truth, _ = merge_masks([m.array for m in masks])
            row: dict[str, Any] = {"case_id": case.case_id, "output": str(path)}
            for name in names:
                t, p = region_mask(truth, tuple(regions[name])), region_mask(labels.array, tuple(regions[name]))
                row[f"dice_{name}"] = dice(t, p) if t.any() or p.any() else float("nan")
            rows.append(row)
        columns = ["case_id", "output", *[f"dice_{n}" for n in names]]
        return HeldOut(rows, columns, _mean_dice(rows, names), rows)

    def pool(self, held) -> dict[str, float]:
        return _mean_dice([row for h in held for row in h.data], self._scored())

    # -- model, loss, data ---------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        return head_channels(self.recipe)

    @property
    def in_channels(self) -> int:
        return len(channel_specs(self.recipe["normalize"]))

    def model_spec(self) -> dict[str, Any]:
        from .models.unet import plan_strides

        o = self.options
        patch = self.recipe["patch"][1:] if o.dim == 2 else self.recipe["patch"]
        config = {"dim": o.dim, "in_channels": self.in_channels, "out_channels": self.out_channels, "width": o.width,
                  "depth": o.depth, "norm": o.norm, "dropout": o.dropout, "residual": o.residual,
                  "deep_supervision": o.deep_supervision, "upsample": o.upsample,
                  "strides": plan_strides(patch, o.depth), "channels_last": o.channels_last}
        return {"name": o.model, "config": config}

    def example_batch(self, batch_size: int):
        """A random training batch (inputs, targets) of the model's patch size, for timing (its
        own generator: the run's random streams are left alone)."""
        import torch

        window = self._window()
        return (torch.rand(batch_size, self.in_channels, *window, generator=torch.Generator().manual_seed(0)),
                torch.zeros(batch_size, *window, dtype=torch.long))

    def build_loss(self):
        from .losses import build_loss

        o = self.options
        loss = build_loss(o.loss, ce_weight=o.ce_weight, dice_weight=o.dice_weight, batch_dice=o.batch_dice,
                          topk=o.topk)
        if self.recipe.get("regions"):
            from .losses import RegionTargets

            return RegionTargets(loss, list(self.recipe["regions"].values()))
        return loss

    def dataset(self, *, length: int, seed: int):
        from .augment import make_config
        from .datasets import Paste, PatchDataset

        config = make_config(self.options.augment, self.options.aug)
        into = config.paste_into
        first = channel_specs(self.recipe["normalize"])[0]      # paste targets judge channel 0
        if into is not None and first["mode"] == "ct":
            into = tuple(float(v) for v in normalize(np.array(into), first))
        return PatchDataset(self.train_cases, patch=self.recipe["patch"], length=length,
                            pos_ratio=self.options.pos_ratio, seed=seed, two_d=self.options.dim == 2,
                            paste=Paste(config.paste, config.paste_scale, into))

    def augmenter(self, seed: int):
        from .augment import Augmenter, make_config

        return Augmenter(make_config(self.options.augment, self.options.aug), seed=seed)

    @property
    def metric_names(self) -> list[str]:
        return [f"dice_{name}" for name in self._scored()]

    def _scored(self) -> list[str]:
        """What validation scores: the regions of a region model, else the classes."""
        return list(self.recipe["regions"]) if self.recipe.get("regions") else self.recipe["classes"][1:]

    def validate(self, model, *, device, amp_dtype=None, batch_size: int = 4) -> dict[str, float]:
        """Dice per label over the validation cases (full-volume sliding window at the model's
        resolution) and the false-positive volume on cases without the label.

        ``dice_<label>`` follows nnU-Net: a case whose truth and prediction both lack the label
        has no Dice (NaN, left out of the mean), one whose truth lacks it but whose prediction
        has it scores 0. So predicting nothing cannot win: it scores 0 on every case holding the
        label and is never rewarded on the others (:func:`validation_scores`). ``fp_ml_<label>``
        is the mean volume (ml) predicted for the label on validation cases without it. ``score``
        (which picks ``best.pt``) is the mean of the labels' Dice; it is left out when no
        validation case has a Dice for any label (the loop then falls back to the loss).
        """
        from .datasets import cached_image
        from .formats import load_volume
        from .inference import labels_from_logits, sliding_window

        if not self.val_cases:
            return {}
        classes = self._scored()
        regions = self.recipe.get("regions")
        truth_counts = np.zeros((len(self.val_cases), len(classes)), dtype=np.int64)
        pred_counts = np.zeros_like(truth_counts)
        overlaps = np.zeros_like(truth_counts)
        voxel_ml = np.zeros(len(self.val_cases))
        with evaluating(model):
            for row, case in enumerate(self.val_cases):
                mask = load_volume(case["mask"], mmap=True)
                image = cached_image(case["image"])
                truth = np.asarray(mask.array)
                logits = sliding_window(model, image, patch=self._window(), out_channels=self.out_channels,
                                        overlap=self.options.val_overlap, batch_size=batch_size,
                                        device=device, amp_dtype=amp_dtype)
                if regions:
                    from .metrics.regions import region_masks

                    found, wanted = (logits > 0).cpu().numpy(), region_masks(truth, regions)
                    axes = tuple(range(1, found.ndim))
                    truth_counts[row], pred_counts[row] = wanted.sum(axes), found.sum(axes)
                    overlaps[row] = (found & wanted).sum(axes)
                else:
                    labels = labels_from_logits(logits).cpu().numpy()
                    truth_counts[row], pred_counts[row], overlaps[row] = label_counts(truth, labels, len(classes))
                voxel_ml[row] = float(np.prod(mask.spacing)) / 1000.0
        return validation_scores(classes, truth_counts, pred_counts, overlaps, voxel_ml)

    def _window(self) -> list[int]:
        patch = self.recipe["patch"]
        return patch[1:] if self.recipe["dim"] == 2 else patch


# -- prediction ---------------------------------------------------------------------------------------
#: How labels return to the input's grid: ``nearest`` (arg-max at the model's spacing, then
#: nearest neighbour) or ``linear`` (class probabilities interpolated, then arg-max, as nnU-Net).
INTERPOLATIONS = ("nearest", "linear")
#: Float32 working memory of one slab of output slices for ``interpolation="linear"``, in bytes.
LABEL_SLAB_BYTES = 64 * 2**20


@dataclass
class PredictSettings:
    """How ``predict`` runs the model (none of it changes the recipe)."""

    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 4
    tta: bool = False
    threshold: float | None = None
    keep_largest: int = 0
    probabilities: bool = False
    interpolation: str = "nearest"

    def __post_init__(self) -> None:
        from .inference import BLENDS

        check_choice("--blend", self.blend, BLENDS)
        if not 0 <= self.overlap < 1:
            raise UsageError("--overlap must be in [0, 1)")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise UsageError("--threshold must be between 0 and 1")
        check_choice("--interpolation", self.interpolation, INTERPOLATIONS)


def head_channels(recipe: dict[str, Any]) -> int:
    """Output channels of the recipe's model: one per region, one for a sigmoid, else one per class."""
    if recipe.get("regions"):
        return len(recipe["regions"])
    return 1 if recipe["activation"] == "sigmoid" else len(recipe["classes"])


@dataclass
class _Head:
    """How a model's output channels become probabilities and labels: a softmax over classes,
    one sigmoid, or one sigmoid per region (``regions``: painted back into labels as
    :func:`~medtool.metrics.regions.labels_from_regions` does)."""

    regions: dict[str, list[int]] | None
    threshold: float | None

    def probabilities(self, logits):
        import torch

        from .inference import probabilities_from_logits

        return torch.sigmoid(logits) if self.regions else probabilities_from_logits(logits)

    def labels(self, logits):
        """uint8 labels of ``(C, ...)`` logits (a torch tensor)."""
        from .inference import labels_from_logits

        if self.regions:
            return self.labels_from(self.probabilities(logits))
        return labels_from_logits(logits, threshold=self.threshold)

    def labels_from(self, probs):
        """uint8 labels of ``(C, ...)`` probabilities (a torch tensor)."""
        import torch

        from .inference import labels_from_probabilities

        if self.regions:
            from .metrics.regions import labels_from_regions

            cut = 0.5 if self.threshold is None else self.threshold
            return torch.from_numpy(labels_from_regions((probs >= cut).cpu().numpy(), self.regions))
        return labels_from_probabilities(probs, threshold=self.threshold)

    def drop(self, probs: np.ndarray, where: np.ndarray) -> None:
        """Make the voxels ``where`` certain background in ``(C, ...)`` probabilities."""
        probs[:, where] = 0.0
        if probs.shape[0] > 1 and not self.regions:
            probs[0, where] = 1.0

    def map_channels(self, channels: int) -> range:
        """The channels written as probability maps: every region, the sigmoid, or the classes
        after the background."""
        return range(channels) if self.regions or channels == 1 else range(1, channels)


def predict_volume(model, volume: Volume | Sequence[Volume], recipe: dict[str, Any], settings: PredictSettings, *,
                   device, amp_dtype=None) -> tuple[Volume, list[Volume]]:
    """Labels (uint8, on ``volume``'s own grid) and, if asked, one probability map per
    foreground class (per region of a region model); see the module docstring. ``volume`` may
    be the input channels of a case (on one grid, :func:`read_inputs`): the labels are on the
    first one's grid.

    ``model`` may be a list of models of the same recipe (the folds of ``train --cv``): their
    class probabilities are averaged (nnU-Net's ensemble) and the labels taken from the mean.
    """
    import torch

    from .inference import keep_largest, sliding_window

    models = list(model) if isinstance(model, (list, tuple)) else [model]
    volumes = [volume] if isinstance(volume, Volume) else list(volume)
    volume = volumes[0]
    if len(volumes) != len(channel_specs(recipe["normalize"])):
        raise InputError(f"the model takes {len(channel_specs(recipe['normalize']))} input channels, "
                         f"the case has {len(volumes)}", hint="give the channels it was trained on")
    source = as_3d(volume)
    prepared, inputs = prepare_inputs(volumes, recipe, device="cpu")
    head = _Head(recipe.get("regions"), settings.threshold)
    out_channels = head_channels(recipe)
    labels = np.zeros(prepared.shape, dtype=np.uint8)
    linear = settings.interpolation == "linear" and not prepared.same_grid(source)
    keep = settings.probabilities or linear or len(models) > 1
    probs = np.zeros((out_channels, *prepared.shape), dtype=np.float32) if keep else None

    def take(z0: int, logits: torch.Tensor) -> None:
        z1 = z0 + logits.shape[1]
        if len(models) == 1:
            labels[z0:z1] = head.labels(logits).cpu().numpy()
        if probs is not None:
            probs[:, z0:z1] += head.probabilities(logits).cpu().numpy() / np.float32(len(models))

    patch = recipe["patch"][1:] if recipe["dim"] == 2 else recipe["patch"]
    for member in models:
        sliding_window(member, inputs, patch=patch, out_channels=out_channels,
                       overlap=settings.overlap, blend=settings.blend, batch_size=settings.batch_size,
                       tta=settings.tta, device=device, amp_dtype=amp_dtype, on_slab=take)
    if len(models) > 1:
        labels = head.labels_from(torch.from_numpy(probs)).numpy()
    maps = []
    if settings.probabilities:
        for channel in head.map_channels(out_channels):
            maps.append(back_onto(prepared.with_array(probs[channel], units="probability"), source, mask=False))
    if settings.keep_largest > 0:
        kept = keep_largest(labels, settings.keep_largest)
        if linear:
            head.drop(probs, (labels != 0) & (kept == 0))
        labels = kept
    if linear:
        result = _labels_onto(prepared, probs, source, head=head)
    else:
        result = back_onto(prepared.with_array(labels, units="label"), source, mask=True)
    if volume.ndim == 2:
        result = Volume(result.array[0], volume.spacing, volume.origin, volume.direction, result.meta)
        maps = [Volume(m.array[0], volume.spacing, volume.origin, volume.direction, m.meta) for m in maps]
    return result, maps


def _labels_onto(prepared: Volume, probs: np.ndarray, source: Volume, *, head: _Head) -> Volume:
    """Labels on the grid of ``source`` from ``(C, ...)`` probabilities on ``prepared``'s grid:
    each class's probability interpolated linearly (as ``--probabilities`` writes it), then
    the arg-max or threshold (regions: painted), a slab of output slices at a time so that only
    that slab's float maps exist at full resolution. Interpolation is linear, so softmax
    probabilities still sum to one: background is not interpolated but taken as one minus the
    others."""
    import torch

    from .resample import Grid, resample_to, z_slab

    grid = Grid.of(source)
    softmax = probs.shape[0] > 1 and not head.regions
    channels = [Volume(probs[c], prepared.spacing, prepared.origin, prepared.direction, {})
                for c in range(1 if softmax else 0, probs.shape[0])]
    labels = np.zeros(grid.shape, dtype=np.uint8)
    step = max(1, LABEL_SLAB_BYTES // (4 * probs.shape[0] * grid.shape[1] * grid.shape[2]))
    for z0 in range(0, grid.shape[0], step):
        slab = z_slab(grid, z0, min(grid.shape[0], z0 + step))
        stack = torch.from_numpy(np.stack([resample_to(c, slab, mask=False, pad=0.0).array for c in channels]))
        if softmax:
            stack = torch.cat([1 - stack.sum(0, keepdim=True), stack])
        labels[z0:z0 + slab.shape[0]] = head.labels_from(stack).numpy()
    return _on_grid_of(source, labels, units="label")


def back_onto(model_volume: Volume, source: Volume, *, mask: bool) -> Volume:
    """``model_volume`` on the grid of ``source`` (nearest for labels, linear for maps)."""
    from .resample import resample

    if model_volume.same_grid(source):
        out = model_volume
    else:
        out = resample(model_volume, like=source, mask=mask, pad=0.0)
    return _on_grid_of(source, np.asarray(out.array), units="label" if mask else "probability")


def _on_grid_of(source: Volume, array: np.ndarray, *, units: str) -> Volume:
    """``array`` as a volume on ``source``'s grid, with its metadata and history."""
    meta = {k: v for k, v in source.meta.items() if k not in ("units", "resampled_from")}
    meta["units"] = units
    return Volume(array, source.spacing, source.origin, source.direction, meta, list(source.history))


@dataclass
class _PredictJob:
    source: Path
    path: Path


def predict_files(checkpoint: dict[str, Any], inputs: Sequence[str | Path], out: str | Path, *,
                  settings: PredictSettings, device, fmt: str | None = None, suffix: str = "",
                  image_suffix: str = "", force: bool = False,
                  shard: tuple[int, int] | None = None, step: dict[str, Any] | None = None,
                  amp: str = "auto", progress: bool = False, on_error=None, writer=None,
                  ensemble: Sequence[dict[str, Any]] = ()):
    """``medtool predict`` for a segmentation checkpoint: every volume under ``inputs`` to a
    label volume under ``out`` (mirroring the input names, ``suffix`` added after the case id;
    with ``image_suffix``, only inputs named ``<case><image_suffix>``, written as
    ``<case><suffix>``), the model loaded once.

    ``ensemble``: more checkpoints of the same recipe whose probabilities are averaged with
    ``checkpoint``'s (:func:`predict_volume`).

    ``writer`` (a :class:`~medtool.dicomlabels.DicomLabelWriter`) writes each label volume as
    a DICOM SEG or RTSTRUCT of its source series instead, named ``<case><suffix>_seg.dcm``.

    Returns a :class:`~medtool.batch.BatchResult` whose results are the rows printed.
    """
    from .batch import run_batch
    from .files import check_writable, volume_suffix
    from .formats import save_volume
    from .ingest import format_suffix, plan_outputs
    from .train import amp_dtype, build_model

    output_suffix = (format_suffix(fmt, name=suffix, default=".nii.gz") if writer is None
                     else lambda source: suffix + writer.suffix)
    recipe = checkpoint["recipe"]
    models = [build_model(c).to(device) for c in [checkpoint, *ensemble]]
    model = models if ensemble else models[0]
    dtype = amp_dtype(amp, device)
    jobs = [_PredictJob(source, path)
            for source, path in plan_outputs(inputs, out, shard=shard, suffix=output_suffix,
                                             image_suffix=image_suffix,
                                             single_suffixes=(".dcm",) if writer else None)]
    names = recipe["classes"][1:]
    mapped = list(recipe["regions"]) if recipe.get("regions") else names      # one probability map each

    def probability_path(path: Path, name: str) -> Path:
        suffix = volume_suffix(path)
        return path.with_name(path.name[: -len(suffix)] + f"_prob_{name}{suffix}")

    def run(job: _PredictJob) -> dict[str, Any]:
        outputs = [job.path] + ([probability_path(job.path, n) for n in mapped] if settings.probabilities else [])
        for path in outputs:
            check_writable(path, force=force)
        channels = read_inputs(input_files(job.source, recipe), recipe)
        volume = channels[0]
        if any(c.array.dtype.kind not in "iuf" for c in channels):
            raise InputError(f"cannot segment a {volume.array.dtype} volume", path=job.source,
                             hint="give an image volume")
        labels, maps = predict_volume(model, channels, recipe, settings, device=device, amp_dtype=dtype)
        history = [*volume.history, {**(step or {}), "source": str(job.source),
                                     "classes": recipe["classes"]}]
        labels.history = history
        labels.meta["classes"] = recipe["classes"]
        if writer is not None:
            writer(labels, job.path, force=force, source=job.source)
        else:
            save_volume(labels, job.path, force=force)
        for path, item in zip(outputs[1:], maps):
            item.history = history
            save_volume(item.with_array(item.array.astype(np.float32)), path, force=force)
        counts = np.bincount(labels.array.ravel(), minlength=len(recipe["classes"]))
        voxel_ml = float(np.prod(labels.spacing)) / 1000.0
        return {"input": str(job.source), "output": str(job.path), "shape": list(labels.shape),
                "volumes_ml": {n: round(float(counts[i + 1]) * voxel_ml, 3) for i, n in enumerate(names)}}

    return run_batch(run, jobs, workers=1, description="predicting", progress=progress,
                     on_error=on_error, name=lambda job: str(job.source))


#: Cases read to judge the foreground share (evenly spread over the list).
SHARE_SAMPLE = 16


def _sampled_labels(cases):
    """(case, voxels any of its masks labels) for up to :data:`SHARE_SAMPLE` cases with masks,
    evenly spread over the list; one case's masks are read at a time."""
    from .formats import load_volume

    with_masks = [c for c in cases if c.masks]
    step = max(1, len(with_masks) // SHARE_SAMPLE)
    for case in with_masks[::step][:SHARE_SAMPLE]:
        labelled = None
        for path in case.masks:
            array = np.asarray(load_volume(path, mmap=True).array) > 0
            labelled = array if labelled is None else labelled | array
        yield case, labelled


#: Copy-paste targets are planned from the intensities of this many voxels around each
#: training object, and span their quartiles widened by this many interquartile ranges
#: (Tukey's far-out fences: the tissue the objects sit in, not the odd neighbour).
PASTE_SHELL_VOXELS = 2
PASTE_FENCE_IQR = 3.0


def structure_statistics(cases, *, paste: bool = True) -> tuple[float | None, tuple[float, float] | None]:
    """How large the labelled structures are, and where pasted objects may land.

    The share: the median over cases of the share of a case's voxels that any of its masks
    labels (up to :data:`SHARE_SAMPLE` cases, evenly spread; ``None`` without masks). The paste
    range, when the share is under :data:`SMALL_FOREGROUND` and ``paste``: the intensities (HU)
    around the training objects, i.e. the voxels within :data:`PASTE_SHELL_VOXELS` of a labelled
    voxel (and not labelled) pooled over the cases whose own share is small, their quartiles
    widened by :data:`PASTE_FENCE_IQR` interquartile ranges, rounded outwards to whole HU;
    ``None`` unless the images are CT in HU with labelled voxels (z-scored inputs have no fixed
    units to plan in before normalisation). Each sampled case's masks are read once (the box around a small
    case's objects is kept); the images only when the share is small."""
    shares, boxes = [], []
    for case, labelled in _sampled_labels(cases):
        shares.append(float(labelled.mean()))
        if paste and shares[-1] < SMALL_FOREGROUND and labelled.any():
            box = tuple(slice(max(0, a.min() - PASTE_SHELL_VOXELS), a.max() + PASTE_SHELL_VOXELS + 1)
                        for a in np.nonzero(labelled))
            boxes.append((case, labelled.shape, box, labelled[box].copy()))
    share = float(np.median(shares)) if shares else None
    if share is None or share >= SMALL_FOREGROUND or not paste:
        return share, None
    around = []
    for case, shape, box, inside in boxes:
        shell = _shell_values(case, shape, box, inside)
        if shell is _NOT_HU:
            return share, None
        if shell is not None:
            around.append(shell)
    return share, _fenced(around)


#: :func:`_shell_values` of an image that is not a volume in HU.
_NOT_HU = object()


def _shell_values(case, shape: tuple[int, ...], box: tuple[slice, ...], inside: np.ndarray):
    """The image values of ``case`` within :data:`PASTE_SHELL_VOXELS` of its labelled voxels
    ``inside`` the ``box`` of its masks' ``shape`` (not labelled themselves); ``None`` when the
    image is of another shape, :data:`_NOT_HU` when it is not one volume in HU (a 4D
    multi-channel image, an MR)."""
    from scipy import ndimage

    from .formats import load_volume

    try:
        image = load_volume(case.image, mmap=True)
    except InputError:
        return _NOT_HU
    if image.units != "HU":
        return _NOT_HU
    if image.shape != shape:
        return None
    shell = ndimage.binary_dilation(inside, iterations=PASTE_SHELL_VOXELS) & ~inside
    return np.asarray(image.array[box], dtype=np.float32)[shell]


def _fenced(around: list[np.ndarray]) -> tuple[float, float] | None:
    """The quartiles of the pooled ``around`` widened by :data:`PASTE_FENCE_IQR` IQRs."""
    if not around:
        return None
    low, high = np.percentile(np.concatenate(around), [25, 75])
    spread = PASTE_FENCE_IQR * (high - low)
    return float(np.floor(low - spread)), float(np.ceil(high + spread))
