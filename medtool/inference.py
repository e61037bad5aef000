"""Sliding-window inference with importance weighting, streamed along z, and label clean-up.

The volume (at the model's resolution, ``(C, Z, Y, X)``) is covered by windows of the patch
size with the requested overlap; each window's logits are weighted by a Gaussian importance map
(centre trusted most, as nnU-Net and MONAI do) or a constant, summed, and divided by the summed
weights. Windows are run in batches and, with ``tta``, under every combination of axis flips
(averaged). A 2D model is a window of depth 1, so it runs over the slices of a volume the same
way.

Memory stays bounded: windows are processed in order of their z start, and rows no later window
touches are handed to ``on_slab`` and dropped, so only a slab of about one window depth (times
the batch) of per-class float32 buffers exists at any time (at the model's resolution), whatever
the volume's length.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

#: Standard deviation of the Gaussian importance map, as a fraction of the patch size (MONAI's
#: ``sigma_scale`` and nnU-Net's 1/8).
GAUSSIAN_SIGMA_SCALE = 0.125
#: Smallest weight of the importance map relative to its peak (keeps border voxels defined).
MIN_IMPORTANCE = 1e-3
#: Blend modes.
BLENDS = ("gaussian", "constant")
#: ATen runs a CPU float convolution of a batch of one on oneDNN only when channels x depth x
#: height of its input exceed this (its ``use_mkldnn`` rule); below it, the reference kernel
#: is 4.5x slower per window (width-8 3D U-Net, 24 x 64 x 64 windows, 2 cores: 5 vs 22
#: windows/s). A lone window whose model's first level falls below it is run beside a copy of
#: itself (:func:`_company`).
MKLDNN_MIN_SINGLE = 20480


def importance_map(patch: Sequence[int], blend: str = "gaussian", *, device=None) -> torch.Tensor:
    """Weights of one window: a separable Gaussian (peak 1) or ones, shape ``patch``."""
    if blend == "constant":
        return torch.ones(tuple(patch), device=device)
    weights = torch.ones((), device=device)
    for axis, size in enumerate(patch):
        coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
        sigma = max(size * GAUSSIAN_SIGMA_SCALE, 1e-6)
        profile = torch.exp(-0.5 * (coords / sigma) ** 2)
        weights = weights.unsqueeze(-1) * profile
    weights = weights / weights.max()
    return weights.clamp_min(MIN_IMPORTANCE).float()


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of length ``patch`` covering ``size`` (``size >= patch``),
    evenly spread with at least ``overlap`` (fraction) between neighbours."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = math.ceil((size - patch) / step) + 1
    return sorted({round(i * (size - patch) / (count - 1)) for i in range(count)})


def _flips(dim: int, tta: bool) -> list[tuple[int, ...]]:
    axes = tuple(range(2, 2 + dim))
    if not tta:
        return [()]
    return [combo for r in range(dim + 1) for combo in itertools.combinations(axes, r)]


def sliding_window(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray | torch.Tensor,
    *,
    patch: Sequence[int],
    out_channels: int,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    tta: bool = False,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    on_slab: Callable[[int, torch.Tensor], None] | None = None,
    pad_value: float = 0.0,
) -> torch.Tensor | None:
    """Logits of ``model`` over ``image`` by sliding windows.

    Parameters
    ----------
    model
        Takes ``(B, C, *patch)`` (``(B, C, py, px)`` for a 2D model) and returns logits
        ``(B, out_channels, ...)`` of the same spatial size.
    image
        ``(C, Z, Y, X)`` at the model's resolution (a NumPy memmap is read window by window).
    patch
        Window size ``(pz, py, px)``; ``pz == 1`` with a 2D model (``len(patch) == 2`` is taken
        as ``(1, py, px)``).
    overlap, blend, batch_size, tta
        Fraction of overlap between windows; ``gaussian`` or ``constant`` weighting; windows
        per forward pass; average over all flips.
    amp_dtype
        Autocast dtype on CUDA (``torch.bfloat16`` / ``torch.float16``); ignored on CPU.
    on_slab
        Called with ``(z0, logits)`` for consecutive finished slabs ``(out_channels, n, Y, X)``
        (float32, on ``device``); then nothing is returned. Without it the whole
        ``(out_channels, Z, Y, X)`` is returned (small volumes, tests, validation).
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}")
    device = torch.device(device)
    two_d = len(patch) == 2
    patch = (1, *patch) if two_d else tuple(int(p) for p in patch)
    channels, *size = image.shape
    if len(size) != 3:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {tuple(image.shape)}")
    source, padded = _padded(image, patch, pad_value)
    starts = [window_starts(s, p, overlap) for s, p in zip(padded, patch)]
    plane = [(y, x) for y in starts[1] for x in starts[2]]
    weights = importance_map(patch, blend, device=device)
    if two_d:
        weights = importance_map(patch[1:], blend, device=device)[None]
    flips = _flips(2 if two_d else 3, tta)
    group = max(1, math.ceil(batch_size / len(plane)))
    slabs = _Slabs(out_channels, rows=size[0], plane=padded[1:], crop=size[1:], device=device,
                   on_slab=on_slab)
    for g in range(0, len(starts[0]), group):
        zs = starts[0][g: g + group]
        buffer = slabs.open(zs[0], zs[-1] + patch[0])
        windows = [(z, y, x) for z in zs for y, x in plane]
        for b in range(0, len(windows), batch_size):
            _add_windows(model, source, windows[b: b + batch_size], buffer, zs[0], patch=patch, two_d=two_d,
                         weights=weights, flips=flips, device=device, amp_dtype=amp_dtype)
    return slabs.close()


class _Slabs:
    """The running sums of :func:`sliding_window`: one buffer of weighted logits and weights
    ``(out_channels + 1, rows, Y, X)`` over the z range of the windows being added; rows that
    no later window reaches are finished (divided by their weight, cropped to the image) and
    handed to ``on_slab`` or kept until :meth:`close`."""

    def __init__(self, out_channels: int, *, rows: int, plane: Sequence[int], crop: Sequence[int],
                 device: torch.device, on_slab: Callable[[int, torch.Tensor], None] | None) -> None:
        self.out_channels, self.rows, self.plane, self.crop = out_channels, rows, tuple(plane), tuple(crop)
        self.device, self.on_slab = device, on_slab
        self.buffer: torch.Tensor | None = None
        self.start = 0
        self.pieces: list[torch.Tensor] = []

    def open(self, first: int, end: int) -> torch.Tensor:
        """A buffer for rows ``first:end``: the rows before ``first`` are finished, the
        overlap with the previous buffer is carried over."""
        fresh = torch.zeros(self.out_channels + 1, end - first, *self.plane, device=self.device)
        if self.buffer is not None:
            self._emit(self.start, self.buffer[:, : first - self.start])
            keep = self.buffer[:, first - self.start:]
            fresh[:, : keep.shape[1]] += keep
        self.buffer, self.start = fresh, first
        return fresh

    def close(self) -> torch.Tensor | None:
        """Finish the last buffer; the whole ``(out_channels, Z, Y, X)`` without ``on_slab``."""
        if self.buffer is not None:
            self._emit(self.start, self.buffer)
        return torch.cat(self.pieces, dim=1) if self.on_slab is None else None

    def _emit(self, z0: int, slab: torch.Tensor) -> None:
        z1 = min(z0 + slab.shape[1], self.rows)
        if z1 <= z0:
            return
        logits = slab[: self.out_channels, : z1 - z0] / slab[self.out_channels:, : z1 - z0]
        logits = logits[:, :, : self.crop[0], : self.crop[1]]
        if self.on_slab is not None:
            self.on_slab(z0, logits)
        else:
            self.pieces.append(logits)


def _padded(image, patch: Sequence[int], pad_value: float) -> tuple[Any, list[int]]:
    """``image`` ``(C, Z, Y, X)`` padded at the end of each axis shorter than ``patch`` (the
    windows are read from it); itself when none is."""
    channels, *size = image.shape
    padded = [max(s, p) for s, p in zip(size, patch)]
    if padded == list(size):
        return image, padded
    source = np.full((channels, *padded), pad_value, dtype=np.float32)
    source[:, : size[0], : size[1], : size[2]] = (image.cpu().numpy() if isinstance(image, torch.Tensor)
                                                  else np.asarray(image, dtype=np.float32))
    return source, padded


def _add_windows(model, source, chunk: Sequence[tuple[int, int, int]], buffer: torch.Tensor, first: int, *,
                 patch: Sequence[int], two_d: bool, weights: torch.Tensor, flips, device: torch.device,
                 amp_dtype) -> None:
    """Run ``model`` on one batch of windows (their ``(z, y, x)`` starts) and add the weighted
    logits and the weights into ``buffer`` (``(out_channels + 1, rows, Y, X)`` from row ``first``)."""
    pz = patch[0]
    out_channels = buffer.shape[0] - 1
    batch = np.stack([np.asarray(source[:, z: z + pz, y: y + patch[1], x: x + patch[2]], dtype=np.float32)
                      for z, y, x in chunk])
    inputs = torch.from_numpy(batch).to(device)
    if two_d:
        inputs = inputs[:, :, 0]
    logits = _run(model, inputs, flips, device, amp_dtype)
    if two_d:
        logits = logits[:, :, None]
    logits = logits * weights
    for (z, y, x), window in zip(chunk, logits):
        buffer[:out_channels, z - first: z - first + pz, y: y + patch[1], x: x + patch[2]] += window
        buffer[out_channels:, z - first: z - first + pz, y: y + patch[1], x: x + patch[2]] += weights


def _company(model, inputs: torch.Tensor) -> bool:
    """Whether a lone 3D window on a CPU should run beside a copy of itself: when the first
    level of ``model`` (the width of its first 3D convolution times the window's depth and
    height) is under :data:`MKLDNN_MIN_SINGLE`, the copy's cost is less than the slow kernel's."""
    if inputs.device.type != "cpu" or inputs.ndim != 5 or len(inputs) != 1:
        return False
    modules = model.modules() if isinstance(model, torch.nn.Module) else ()
    first = next((m for m in modules if isinstance(m, torch.nn.Conv3d)), None)
    return first is not None and first.out_channels * inputs.shape[2] * inputs.shape[3] <= MKLDNN_MIN_SINGLE


@torch.inference_mode()
def _run(model, inputs: torch.Tensor, flips, device: torch.device, amp_dtype) -> torch.Tensor:
    single = _company(model, inputs)
    if single:                       # the copy's outputs are dropped
        inputs = torch.cat([inputs, inputs])
    total = None
    for axes in flips:
        x = inputs.flip(axes) if axes else inputs
        if amp_dtype is not None:
            with torch.autocast(device.type, dtype=amp_dtype):
                y = model(x)
        else:
            y = model(x)
        y = y.float()
        y = y.flip(axes) if axes else y
        total = y if total is None else total + y
    total = total / len(flips)
    return total[:1] if single else total


def probabilities_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities of ``(C, ...)`` logits: the sigmoid of one channel, else the softmax."""
    return torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, dim=0)


def argmax_channels(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax(0)`` as uint8 (the first class on ties), one class at a time: torch's
    reduction over a leading dimension is about 20x slower on CPUs (1.06 s vs 0.05 s for
    2 x 32 x 512 x 512)."""
    best = values[0]
    labels = torch.zeros(values.shape[1:], dtype=torch.uint8, device=values.device)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        labels.masked_fill_(better, c)
        best = torch.where(better, values[c], best)
    return labels


def labels_from_probabilities(probs: torch.Tensor, *, threshold: float | None = None) -> torch.Tensor:
    """Integer labels from ``(C, ...)`` probabilities (:func:`probabilities_from_logits`).

    One channel (sigmoid): ``p >= threshold`` (0.5 by default). Several (softmax): the arg-max;
    with ``threshold`` a voxel is foreground only where ``1 - p(background) >= threshold``, and
    then gets the most likely foreground class.
    """
    if probs.shape[0] == 1:
        cut = 0.5 if threshold is None else threshold
        return (probs[0] >= cut).to(torch.uint8)
    if threshold is None:
        return argmax_channels(probs)
    foreground = 1 - probs[0] >= threshold
    return torch.where(foreground, argmax_channels(probs[1:]) + 1, 0).to(torch.uint8)


def labels_from_logits(logits: torch.Tensor, *, threshold: float | None = None) -> torch.Tensor:
    """Integer labels from ``(C, ...)`` logits, as :func:`labels_from_probabilities`."""
    if logits.shape[0] > 1 and threshold is None:
        return argmax_channels(logits)                    # the same labels without the softmax
    return labels_from_probabilities(probabilities_from_logits(logits), threshold=threshold)


def keep_largest(labels: np.ndarray, count: int, *, classes: Sequence[int] | None = None) -> np.ndarray:
    """Keep the ``count`` largest connected components (face connectivity) of each label.

    Voxels of dropped components become background. ``classes`` limits it to those labels.
    """
    from scipy import ndimage

    if count <= 0:
        return labels
    out = labels.copy()
    present = [int(c) for c in np.unique(labels) if c != 0]
    for value in present if classes is None else [c for c in present if c in set(classes)]:
        components, found = ndimage.label(labels == value)
        if found <= count:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        keep = np.zeros(found + 1, dtype=bool)
        keep[np.argsort(sizes)[::-1][:count]] = True
        keep[0] = False
        out[(components > 0) & ~keep[components]] = 0
    return out
