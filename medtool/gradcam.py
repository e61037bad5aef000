"""Grad-CAM attention maps (``medtool gradcam``) for 2D and 3D models, on the input's own grid.

Methods (``method``):

``gradcam``
    Selvaraju et al. 2017: the target layer's activations ``A_k`` weighted by the spatial mean
    of the target score's gradient ``dy/dA_k``, summed over channels, ReLU.
``gradcam++``
    Chattopadhay et al. 2018, in the closed form pytorch-grad-cam uses: weights
    ``sum(relu(g) * g^2 / (2 g^2 + sum(A) g^3 + eps))`` over space.
``guided``
    Guided Grad-CAM: guided backpropagation (the input gradient with only positive gradients
    passed back through ReLU / LeakyReLU, Springenberg et al. 2015) times the upsampled Grad-CAM.
    It is signed; the normalised map is its magnitude.

The **target** is the score being explained: a classifier's logit of the class (``pred``: the
arg-max), or for a segmentation model the summed logit of the class inside the region the model
predicts as that class (Seg-Grad-CAM, Vinogradova et al. 2020; ``pred``: the foreground class
with the most predicted voxels). A 2D segmentation model explains each slice of a volume on its
own (one slice per batch item).

The **layer** (``auto``): the model's own ``cam_layer`` when it declares one (the classifiers
in :mod:`medtool.models.cnn` do), else the last convolution run in the forward pass whose output
keeps a spatial size above 1 along every axis, leaving out a convolution that produces the
model's output itself (a segmentation head: its Grad-CAM would be the logits again). Layers
are found by one forward pass with hooks on the actual input (:func:`trace_layers`).

The map is upsampled (bilinear / trilinear, ``align_corners=False``) to the model's input, put
on the grid the checkpoint's preprocessing made (:func:`medtool.segmentation.prepare_image`:
resampled, maybe cropped) and resampled from there onto the input volume's own grid (linear;
zero outside what the model saw), then normalised to [0, 1] per case (min-max, as
pytorch-grad-cam does) unless raw values are asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError, UsageError, check_choice
from .volume import Volume

#: Attention-map methods.
METHODS = ("gradcam", "gradcam++", "guided")
#: ``--layer`` value that picks the layer, and ``--class`` value that takes the prediction.
AUTO_LAYER, PREDICTED = "auto", "pred"
#: Denominator guard of Grad-CAM++'s weights (pytorch-grad-cam's value).
GRADCAM_PP_EPS = 1e-6
#: Units written in the maps' metadata.
UNITS_ATTENTION = "attention"
#: Slices of a volume explained per forward pass by a 2D segmentation model.
SLICE_BATCH = 8
#: Attribute by which a model names its own Grad-CAM layer (the classifiers of models/cnn.py).
CAM_LAYER_ATTRIBUTE = "cam_layer"


# -- layers -------------------------------------------------------------------------------------
@dataclass
class LayerInfo:
    """One module of a model as a forward pass saw it (in the order it ran)."""

    name: str
    kind: str
    shape: tuple[int, ...]              # output shape without the batch axis: (C, *spatial)
    convolution: bool = False
    produces_output: bool = False       # its output is the model's output

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[1:]

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.kind, "shape": list(self.shape)}


def trace_layers(model, inputs) -> list[LayerInfo]:
    """Every named submodule that returned a tensor during one forward pass of ``inputs``
    (no gradients), in the order they ran, with its output shape."""
    import torch
    from torch import nn

    seen: dict[str, LayerInfo] = {}
    order: list[str] = []
    last: list[Any] = [None]
    handles = []

    def hook_for(name: str, module):
        conv = isinstance(module, nn.modules.conv._ConvNd)

        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or name in seen:
                return
            seen[name] = LayerInfo(name, type(module).__name__, tuple(output.shape[1:]), conv)
            order.append(name)
            if conv:
                last[0] = (name, output)
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook_for(name, module)))
    try:
        with torch.no_grad():
            result = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if last[0] is not None and last[0][1] is result:
        seen[last[0][0]].produces_output = True
    return [seen[name] for name in order]


def auto_layer(model, layers: Sequence[LayerInfo]) -> str:
    """The layer ``--layer auto`` picks from a :func:`trace_layers` list (module docstring).

    Raises
    ------
    UsageError
        No convolution keeps a spatial size above 1 (name one with ``--layer``).
    """
    def keeps_space(layer: LayerInfo) -> bool:
        return len(layer.spatial) > 0 and min(layer.spatial) > 1

    by_name = {layer.name: layer for layer in layers}
    declared = getattr(model, CAM_LAYER_ATTRIBUTE, None)
    if isinstance(declared, str) and declared in by_name and keeps_space(by_name[declared]):
        return declared
    for layer in reversed(layers):
        if layer.convolution and not layer.produces_output and keeps_space(layer):
            return layer.name
    raise UsageError("no convolutional layer keeps a spatial size above 1 for this input",
                     hint="name one with --layer (see --list-layers)")


def find_module(model, name: str):
    """The submodule ``name`` (as :meth:`torch.nn.Module.named_modules` spells it)."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        close = [n for n in modules if n and name and (name in n or n in name)][:5]
        raise UsageError(f"--layer {name}: the model has no such module",
                         hint=f"did you mean {', '.join(close)}?" if close else "see --list-layers")
    return modules[name]


# -- the maps -------------------------------------------------------------------------------------
@dataclass
class CamMaps:
    """What :func:`compute_cam` returns, batch first."""

    maps: Any               # torch (B, *input spatial): upsampled map (signed for guided)
    feature: Any            # torch (B, *layer spatial): Grad-CAM at the layer's resolution (>= 0)
    scores: Any             # torch (B,): the target scores explained


def _guided_relu_hooks(model):
    """Forward hooks making every ReLU / LeakyReLU pass back only positive gradients where its
    output is positive (guided backpropagation); the forward values are unchanged."""
    import torch
    from torch import nn

    class Guided(torch.autograd.Function):
        @staticmethod
        def forward(ctx, output):
            ctx.save_for_backward(output > 0)
            return output.clone()

        @staticmethod
        def backward(ctx, grad):
            (positive,) = ctx.saved_tensors
            return grad.clamp(min=0) * positive

    def hook(_module, _inputs, output):
        return Guided.apply(output)

    return [m.register_forward_hook(hook) for m in model.modules()
            if isinstance(m, (nn.ReLU, nn.LeakyReLU))]


def _upsample(maps, size: Sequence[int]):
    from torch.nn import functional as F

    mode = "trilinear" if len(size) == 3 else "bilinear"
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]


def compute_cam(model, inputs, layer: str, target: Callable[[Any], Any], *,
                method: str = "gradcam") -> CamMaps:
    """Grad-CAM (or ``method``) of ``model`` at module ``layer`` for ``inputs`` ``(B, C, ...)``.

    ``target`` maps the model's output to one score per batch item ``(B,)``; each item's map
    is computed from its own gradients (the items must not interact, as in eval mode).
    """
    import torch

    check_choice("--method", method, METHODS)
    module = find_module(model, layer)
    captured: list[Any] = []

    def keep(_module, _inputs, output):
        if not captured:
            captured.append(output)

    inputs = inputs.detach().clone().requires_grad_(True)
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            scores = target(model(inputs))
            if not captured or not isinstance(captured[0], torch.Tensor):
                raise UsageError(f"--layer {layer}: the module returned no tensor in the forward pass",
                                 hint="pick another layer (see --list-layers)")
            activation = captured[0]
            if activation.dim() != inputs.dim():
                raise UsageError(f"--layer {layer}: its output {tuple(activation.shape)} is not a "
                                 f"{inputs.dim() - 2}D feature map", hint="pick a convolutional layer")
            (grads,) = torch.autograd.grad(scores.sum(), activation, allow_unused=True)
    finally:
        handle.remove()
    if grads is None:
        grads = torch.zeros_like(activation)
    activation, grads = activation.detach().float(), grads.detach().float()
    space = tuple(range(2, activation.dim()))
    if method == "gradcam++":
        g2 = grads ** 2
        total = activation.sum(dim=space, keepdim=True)
        alpha = g2 / (2 * g2 + total * g2 * grads + GRADCAM_PP_EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (grads.clamp(min=0) * alpha).sum(dim=space, keepdim=True)
    else:
        weights = grads.mean(dim=space, keepdim=True)
    feature = (weights * activation).sum(dim=1).clamp(min=0)
    maps = _upsample(feature, inputs.shape[2:])
    if method == "guided":
        maps = maps * _guided_backprop(model, inputs, target).sum(dim=1)
    return CamMaps(maps.detach(), feature, scores.detach())


def _guided_backprop(model, inputs, target: Callable[[Any], Any]):
    """The guided-backpropagation gradient of the target scores with respect to ``inputs``."""
    import torch

    handles = _guided_relu_hooks(model)
    try:
        inputs = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(target(model(inputs)).sum(), inputs)
    finally:
        for handle in handles:
            handle.remove()
    return grad.detach().float()


def normalise(array: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] (min-max; zeros when constant). Signed maps (guided) are taken
    by magnitude first."""
    data = np.asarray(array, dtype=np.float32)
    if data.size and data.min() < 0:
        data = np.abs(data)
    low = float(data.min()) if data.size else 0.0
    span = float(data.max()) - low if data.size else 0.0
    if span <= 0:
        return np.zeros_like(data)
    return (data - np.float32(low)) / np.float32(span)


# -- targets --------------------------------------------------------------------------------------
def classifier_target(classes: Sequence[int]):
    """Scores = the logit of ``classes[i]`` for item ``i``."""
    import torch

    def target(logits):
        index = torch.as_tensor(list(classes), device=logits.device)
        return logits.float().gather(1, index[:, None])[:, 0]

    return target


def region_target(channel: int, regions):
    """Scores = the summed logit of ``channel`` inside boolean ``regions`` ``(B, *spatial)``
    (cropped from the front of a padded output)."""
    def target(logits):
        crop = (slice(None), channel, *[slice(0, n) for n in regions.shape[1:]])
        return (logits[crop].float() * regions).flatten(1).sum(dim=1)

    return target


def parse_class(text: str | int, classes: Sequence[str]) -> int | str:
    """``--class``: ``pred``, an index into ``classes`` or one of their names."""
    if isinstance(text, int) or str(text).lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(classes):
            raise UsageError(f"--class {text}: the model has classes 0 to {len(classes) - 1} "
                             f"({', '.join(classes)})")
        return index
    if text == PREDICTED:
        return PREDICTED
    if text in classes:
        return list(classes).index(text)
    raise UsageError(f"--class {text}: give pred, a class number or one of {', '.join(classes)}")


# -- a checkpoint explained on volumes ------------------------------------------------------------------
@dataclass
class Explanation:
    """One volume explained: the map on the input's grid and what it explains."""

    map: Volume
    layer: str
    class_index: int
    class_name: str
    score: float
    empty: bool = False
    notes: list[str] = field(default_factory=list)


class Explainer:
    """A checkpoint's model, loaded once, explaining volumes (see the module docstring)."""

    def __init__(self, checkpoint: dict[str, Any], *, method: str = "gradcam", layer: str = AUTO_LAYER,
                 target: str | int = PREDICTED, device: Any = "cpu"):
        from .train import build_model

        check_choice("--method", method, METHODS)
        from .tasks import REGISTRY

        self.task = checkpoint.get("task")
        explained = [name for name, entry in REGISTRY.items() if entry.explainable]
        if self.task not in explained:
            raise UsageError(f"gradcam explains {' and '.join(explained)} checkpoints, not {self.task}")
        self.recipe = checkpoint["recipe"]
        regions = self.recipe.get("regions") if self.task == "segment" else None
        self.multilabel = bool(regions)         # one sigmoid per region: the regions are the classes
        self.classes = list(regions) if regions else list(self.recipe["classes"])
        self.sigmoid = self.task == "segment" and self.recipe.get("activation") == "sigmoid"
        self.method, self.layer = method, layer
        self.target = parse_class(target, self.classes)
        if self.task == "segment" and self.target == 0 and self.sigmoid and not self.multilabel:
            raise UsageError("--class 0: a sigmoid segmentation model has no background score",
                             hint=f"explain class 1 ({self.classes[1]})")
        import torch

        self.device = torch.device(device)
        self.model = build_model(checkpoint).to(self.device)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        if layer != AUTO_LAYER:
            find_module(self.model, layer)
        self._auto: dict[tuple[int, ...], str] = {}

    @property
    def dim(self) -> int:
        return int(self.recipe["dim"])

    # -- model space --------------------------------------------------------------------------------
    def prepare(self, volume: Volume | Sequence[Volume], path: str | Path = "") -> tuple[Volume, np.ndarray]:
        """The case as the model sees it: the model-space grid (3D, the recipe's spacing /
        shape) and the normalised ``(C, Z, Y, X)`` input; ``volume`` may be a case's channels."""
        volumes = [volume] if isinstance(volume, Volume) else list(volume)
        if self.task == "classify":
            from .classify import prepare_channels

            return prepare_channels(volumes, self.recipe, path=path)
        from .segmentation import prepare_inputs

        for item in volumes:
            if item.ndim not in (2, 3) or item.array.dtype.kind not in "iufb":
                raise InputError(f"cannot explain a {item.ndim}D {item.array.dtype} array", path=path,
                                 hint="give an image volume")
        return prepare_inputs(volumes, self.recipe)

    def inputs(self, prepared: np.ndarray):
        """The model's input batch for a prepared ``(C, Z, Y, X)`` array: ``(1, C, Z, Y, X)`` in
        3D, ``(Z, C, Y, X)`` in 2D (for a segmentation network padded at the end to its divisor)."""
        import torch

        array = torch.from_numpy(np.ascontiguousarray(prepared, dtype=np.float32))
        array = array.permute(1, 0, 2, 3) if self.dim == 2 else array[None]
        divisor = getattr(self.model, "divisor", None)
        if self.task == "segment" and divisor is not None:
            pads = [(-n) % d for n, d in zip(array.shape[2:], divisor)]
            if any(pads):
                from torch.nn import functional as F

                array = F.pad(array, [p for pad in reversed(pads) for p in (0, pad)], value=0.0)
        return array

    def layers(self, inputs) -> list[LayerInfo]:
        return trace_layers(self.model, inputs[:1].to(self.device))

    def layer_for(self, inputs) -> str:
        if self.layer != AUTO_LAYER:
            return self.layer
        key = tuple(inputs.shape[1:])
        if key not in self._auto:
            self._auto[key] = auto_layer(self.model, self.layers(inputs))
        return self._auto[key]

    # -- explaining ---------------------------------------------------------------------------------
    def explain(self, volume: Volume | Sequence[Volume], path: str | Path = "") -> Explanation:
        """The attention map of ``volume`` (or a case's channels: on the first one's grid) on
        its own grid (raw values) and its facts."""
        import torch

        from .segmentation import as_3d, back_onto

        if not isinstance(volume, Volume):
            volume = list(volume)
        first = volume if isinstance(volume, Volume) else volume[0]
        source = as_3d(first)
        prepared, array = self.prepare(volume, path)
        inputs = self.inputs(array)
        volume = first
        layer = self.layer_for(inputs)
        spatial = prepared.shape if self.dim == 3 else prepared.shape[1:]
        notes: list[str] = []
        if self.task == "classify":
            with torch.no_grad():
                logits = self.model(inputs.to(self.device)).float()
            index = int(logits[0].argmax()) if self.target == PREDICTED else int(self.target)
            cam = compute_cam(self.model, inputs.to(self.device), layer, classifier_target([index]),
                              method=self.method)
            maps, score = cam.maps, float(cam.scores.sum())
        else:
            index, maps, score = self._explain_segmentation(inputs, spatial, layer)
        array = maps.cpu().numpy().astype(np.float32)
        array = array[0] if self.dim == 3 else array            # (Z, Y, X) either way
        array = array[tuple(slice(0, n) for n in prepared.shape)]  # a padded input cropped
        empty = not np.any(array)
        if empty:
            notes.append(f"the map is zero everywhere (nothing in layer {layer} raises the "
                         f"{self.classes[index]} score)")
        mapped = back_onto(prepared.with_array(array), source, mask=False)
        meta = {**mapped.meta, "units": UNITS_ATTENTION, "method": self.method, "layer": layer,
                "class": self.classes[index], "class_index": index, "score": score}
        result = Volume(mapped.array.astype(np.float32), source.spacing, source.origin, source.direction,
                        meta, list(volume.history))
        if volume.ndim == 2:
            result = Volume(result.array[0], volume.spacing, volume.origin, volume.direction, meta,
                            list(volume.history))
        return Explanation(result, layer, index, self.classes[index], score, empty, notes)

    def _explain_segmentation(self, inputs, spatial: Sequence[int], layer: str):
        """Predicted regions, the class to explain, and the maps (batch of slices in 2D)."""
        import torch

        maps, total = [], 0.0
        chunk = SLICE_BATCH if self.dim == 2 else 1
        regions = []
        with torch.no_grad():
            for start in range(0, len(inputs), chunk):
                logits = self.model(inputs[start:start + chunk].to(self.device)).float()
                crop = (slice(None), slice(None), *[slice(0, n) for n in spatial])
                logits = logits[crop]
                if self.multilabel:
                    regions.append(logits > 0)
                else:
                    regions.append((logits[:, 0] > 0)[:, None] if self.sigmoid
                                   else torch.nn.functional.one_hot(logits.argmax(1), len(self.classes))
                                   .movedim(-1, 1).bool())
        counts = sum(r.flatten(2).sum(dim=(0, 2)) for r in regions)
        if self.target != PREDICTED:
            index = int(self.target)
        elif self.multilabel:
            index = int(counts.argmax())
        else:
            index = 1 if self.sigmoid else 1 + int(counts[1:].argmax())
        channel = index if self.multilabel else 0 if self.sigmoid else index
        for start, region in zip(range(0, len(inputs), chunk), regions):
            target = region_target(channel, region[:, channel].float())
            cam = compute_cam(self.model, inputs[start:start + chunk].to(self.device), layer, target,
                              method=self.method)
            maps.append(cam.maps)
            total += float(cam.scores.sum())
        return index, torch.cat(maps), total


# -- files ------------------------------------------------------------------------------------------
@dataclass
class _Job:
    source: Path
    path: Path
    png: Path | None


def png_path(path: Path) -> Path:
    """The picture written beside map ``path`` (``<name>.png``)."""
    from .files import volume_suffix

    suffix = volume_suffix(path) or path.suffix
    return path.with_name(path.name[: len(path.name) - len(suffix)] + ".png")


def explain_files(checkpoint: dict[str, Any], inputs: Sequence[str | Path], out: str | Path, *,
                  method: str = "gradcam", layer: str = AUTO_LAYER, target: str | int = PREDICTED,
                  raw: bool = False, png: bool = False, device: Any = "cpu", fmt: str | None = None,
                  suffix: str = "", image_suffix: str = "", force: bool = False, shard: tuple[int, int] | None = None,
                  step: dict[str, Any] | None = None, progress: bool = False, on_error=None,
                  truth: str | Path | None = None, truth_suffix: str = ""):
    """``medtool gradcam``: a map for every volume under ``inputs``, written under ``out``
    (mirroring the input names, ``suffix`` after the case id, which is the name without
    ``image_suffix``; a file name for one input), the
    model loaded once. ``png`` also writes a ``view`` montage of the input with the map.
    With ``truth`` (a folder of masks named ``<case><truth_suffix>``) each row also holds
    ``inside_outside``, the :func:`inside_outside` ratio of the normalised map to the case's
    mask (brought onto the map's grid when it is on another).

    Returns a :class:`~medtool.batch.BatchResult` whose results are the rows printed.
    """
    from .batch import run_batch
    from .files import case_of_image, check_writable, volume_cases
    from .formats import save_volume
    from .ingest import format_suffix, plan_outputs

    output_suffix = format_suffix(fmt, name=suffix, default=".nii.gz")
    explainer = Explainer(checkpoint, method=method, layer=layer, target=target, device=device)
    jobs = [_Job(source, path, png_path(path) if png else None)
            for source, path in plan_outputs(inputs, out, shard=shard, suffix=output_suffix, image_suffix=image_suffix)]
    truths = volume_cases(truth, truth_suffix, required=bool(truth_suffix)) if truth is not None else None

    def run(job: _Job) -> dict[str, Any]:
        from .segmentation import as_3d, input_files, read_inputs

        for path in (job.path, job.png):
            if path is not None:
                check_writable(path, force=force)
        channels = read_inputs(input_files(job.source, explainer.recipe), explainer.recipe)
        volume = channels[0]
        found = explainer.explain(channels, job.source)
        item = found.map
        values = item.array if raw else normalise(item.array)
        item = item.with_array(values.astype(np.float32))
        item.meta["normalised"] = not raw
        item.history = [*volume.history, {**(step or {}), "source": str(job.source), "method": method,
                                          "layer": found.layer, "class": found.class_name}]
        save_volume(item, job.path, force=force)
        if job.png is not None:
            from .view import make_overlay, render

            image = as_3d(volume)
            render(image, job.png, overlays=[make_overlay(image, as_3d(item.with_array(normalise(item.array))),
                                                          kind="map")],
                   title=f"{job.source.name}  {method} {found.class_name} @ {found.layer}", force=force)
        return {"input": str(job.source), "output": str(job.path),
                "png": str(job.png) if job.png else None, "layer": found.layer,
                "class": found.class_name, "score": round(found.score, 4), "shape": list(item.shape),
                "empty": found.empty, "notes": found.notes,
                **({} if truths is None else {"inside_outside": _truth_ratio(item, truths, case_of_image(
                    job.source, image_suffix), found.notes, suffix=truth_suffix)})}

    return run_batch(run, jobs, workers=1, description="explaining", progress=progress,
                     on_error=on_error, name=lambda job: str(job.source))


def inside_outside(cam: np.ndarray, truth: np.ndarray) -> float | None:
    """How much the map looks at the truth: the mean of ``cam`` over the voxels where ``truth``
    is nonzero divided by its mean over the other voxels (1: no preference; the Grad-CAM
    localisation figure of docs/recipes.md). ``None`` when ``truth`` is empty or covers every
    voxel; ``inf`` when the map is zero everywhere outside a region it touches."""
    inside = np.asarray(truth) != 0
    count = int(inside.sum())
    if count == 0 or count == inside.size:
        return None
    cam = np.asarray(cam, dtype=np.float64)
    total = float(cam.sum())
    within = float(cam[inside].sum())
    mean_in, mean_out = within / count, (total - within) / (inside.size - count)
    if mean_out == 0:
        return math.inf if mean_in > 0 else None
    return mean_in / mean_out


def summarise_ratios(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean, median and range of the :func:`inside_outside` ratios that exist; ``None`` if none."""
    found = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(found):
        return None
    return {"cases": int(len(found)), "mean": float(found.mean()), "median": float(np.median(found)),
            "min": float(found.min()), "max": float(found.max())}


def _truth_ratio(cam: Volume, truths: dict[str, Path], case: str | None, notes: list[str], *,
                 suffix: str) -> float | None:
    """:func:`inside_outside` of ``cam`` (normalised) and the truth of ``case``, which is
    resampled (nearest) onto the map's grid when its grid differs; a note when there is none."""
    from .formats import load_volume
    from .resample import Grid, resample_to

    path = truths.get(case or "")
    if path is None:
        notes.append(f"no truth mask {case}{suffix} to compare the map with")
        return None
    mask = load_volume(path)
    if not mask.same_grid(cam):
        mask = resample_to(mask, Grid.of(cam), mask=True)
    ratio = inside_outside(normalise(np.asarray(cam.array)), mask.array)
    return None if ratio is None else round(ratio, 4)


def list_layers(checkpoint: dict[str, Any], *, inputs: Sequence[str | Path] = (), device: Any = "cpu"):
    """The model's modules as a forward pass sees them (for the first input, else an input of
    the recipe's patch / shape), and the one ``--layer auto`` picks: ``(layers, auto, shape)``."""
    import torch

    from .files import find_files
    from .intensity import channel_specs
    from .segmentation import input_files, read_inputs

    explainer = Explainer(checkpoint, device=device)
    sources = find_files(inputs) if inputs else []
    if sources:
        channels = read_inputs(input_files(sources[0], explainer.recipe), explainer.recipe)
        batch = explainer.inputs(explainer.prepare(channels, sources[0])[1])
    else:
        size = explainer.recipe.get("shape") or explainer.recipe["patch"]
        size = list(size[1:]) if explainer.dim == 2 else list(size)
        batch = torch.zeros((1, len(channel_specs(explainer.recipe["normalize"])), *size))
    layers = explainer.layers(batch)
    try:
        auto = auto_layer(explainer.model, layers)
    except UsageError:
        auto = None
    return layers, auto, list(batch.shape[2:])
