"""Intensity normalisation of model inputs: the modes, the rule that chooses one for ``auto``,
and applying it.

A recipe's ``normalize`` entry is ``{"mode": "ct", "window": [low, high]}`` (HU clipped to the
window and scaled to [0, 1]), ``{"mode": "zscore"}`` (each volume minus its mean, over its
standard deviation) or ``{"mode": "none"}``; a model of several input channels has a list of
them, one per channel (:func:`normalize_channels`). ``auto`` decides from what the training
images are (:func:`plan_normalization`): CT in HU gets the CT window, other modalities
z-scores; stored CT values and files whose values cannot tell are refused with the option that
decides.

A z-score may carry two more keys, nnU-Net's rule for MRI and the like:

* ``"foreground": "nonzero"``: mean and standard deviation are taken over the voxels that are
  not 0 in any channel (the brain of a skull-stripped MRI), and the others stay 0. Planned
  (:func:`plan_foreground`) when the box around those voxels is at most
  :data:`NONZERO_BOX_SHARE` of the image in the median training case, as nnU-Net decides from
  its crop to the nonzero region;
* ``"clip": [low, high]``: percentiles (of the same voxels) the values are clipped to first
  (``--clip-percentiles``; off unless given).

A classifier may also crop each image to its foreground first (:func:`foreground_box`): the box
of the voxels that differ from the constant value in the image's corners (the outside of a
masked CT, ``medtool lungmask --apply -1000``), nnU-Net's crop to the nonzero region for images
whose outside is another constant.

Bias-field correction (N4) is not done: correct the images before training if they need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import InputError, UsageError, check_choice
from .hounsfield import UNITS_NORMALIZED, guess_units

if TYPE_CHECKING:
    from pathlib import Path

    from .volume import Volume

#: Default CT window (HU) scaled to [0, 1] by ``normalize=ct``: air to soft tissue and bone.
CT_WINDOW = (-1000.0, 400.0)
#: What ``--normalize`` accepts.
NORMALIZATIONS = ("auto", "ct", "zscore", "none")
#: How many training images ``auto`` looks at (their units must agree).
AUTO_SAMPLE = 3
#: A z-score is taken inside the nonzero voxels when their box is at most this share of the
#: image (median over the sampled training cases): nnU-Net's 25 % crop rule.
NONZERO_BOX_SHARE = 0.75
#: The option that decides when ``auto`` cannot.
_DECIDE = "pass --normalize zscore (MRI, other modalities) or --normalize ct (CT in HU)"


@dataclass(frozen=True)
class Normalization:
    """A planned normalisation: the recipe's entry and, for the first line of training, why."""

    spec: dict[str, Any]
    why: str

    def describe(self) -> str:
        """``ct window [-1000, 400] (why)`` and the like."""
        return f"{describe_spec(self.spec)} ({self.why})"


def describe_spec(spec: dict[str, Any]) -> str:
    """``ct window [-1000, 400]``, ``zscore inside the nonzero voxels, clipped to percentiles
    [0.5, 99.5]`` and the like."""
    mode = spec["mode"]
    if mode == "ct":
        return f"ct window [{spec['window'][0]:g}, {spec['window'][1]:g}]"
    text = mode
    if spec.get("foreground") == "nonzero":
        text += " inside the nonzero voxels"
    if spec.get("clip"):
        text += f", clipped to percentiles [{spec['clip'][0]:g}, {spec['clip'][1]:g}]"
    return text


def channel_specs(entry: dict[str, Any] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A recipe's ``normalize`` entry as one spec per input channel."""
    return [entry] if isinstance(entry, dict) else list(entry)


def normalize(array: np.ndarray, spec: dict[str, Any], *, foreground: np.ndarray | None = None) -> np.ndarray:
    """Intensities as the recipe says: ``ct`` clips to the window and scales to [0, 1],
    ``zscore`` subtracts the volume's mean and divides by its standard deviation (over the
    ``foreground`` voxels when the spec says ``"foreground": "nonzero"``: default the nonzero
    voxels of ``array``; the others become 0), after clipping to the spec's ``clip`` percentiles."""
    data = np.asarray(array, dtype=np.float32)
    mode = spec["mode"]
    if mode == "ct":
        low, high = spec["window"]
        return (np.clip(data, low, high) - low) / np.float32(high - low)
    if mode != "zscore":
        return data
    inside = None
    if spec.get("foreground") == "nonzero":
        inside = np.asarray(foreground, bool) if foreground is not None else data != 0
    values = data[inside] if inside is not None else data
    if values.size == 0:
        return np.zeros_like(data)
    if spec.get("clip"):
        low, high = np.percentile(values, spec["clip"])
        data = np.clip(data, low, high)
        values = np.clip(values, low, high)
    std = float(values.std())
    out = (data - np.float32(values.mean())) / np.float32(std if std > 0 else 1.0)
    if inside is not None:
        out[~inside] = 0
    return out


def normalize_channels(arrays: Sequence[np.ndarray], entry: dict[str, Any] | Sequence[dict[str, Any]]) -> np.ndarray:
    """The channels of one case ``(C, ...)`` normalised each by its spec (a recipe's
    ``normalize`` entry); the nonzero foreground is the voxels nonzero in any channel."""
    specs = channel_specs(entry)
    if len(specs) != len(arrays):
        raise ValueError(f"{len(arrays)} channels but {len(specs)} normalisations")
    foreground = None
    if any(s.get("foreground") == "nonzero" for s in specs):
        foreground = np.zeros(np.shape(arrays[0]), bool)
        for array in arrays:
            foreground |= np.asarray(array) != 0
    return np.stack([normalize(a, s, foreground=foreground) for a, s in zip(arrays, specs)])


def plan_foreground(arrays: Sequence[Sequence[np.ndarray]]) -> tuple[bool, str]:
    """Whether z-scores are taken inside the nonzero voxels, from the channels of a few
    training cases (each a list of arrays on one grid), and why (see the module docstring)."""
    shares = []
    for channels in arrays:
        nonzero = np.zeros(np.shape(channels[0]), bool)
        for array in channels:
            nonzero |= np.asarray(array) != 0
        if not nonzero.any():
            continue
        box = [np.flatnonzero(np.any(nonzero, axis=tuple(a for a in range(nonzero.ndim) if a != axis)))
               for axis in range(nonzero.ndim)]
        shares.append(float(np.prod([(b[-1] - b[0] + 1) / n for b, n in zip(box, nonzero.shape)])))
    if not shares:
        return False, "no nonzero voxels to measure"
    share = float(np.median(shares))
    if share <= NONZERO_BOX_SHARE:
        return True, f"the nonzero voxels fill a box of {share:.0%} of the image (skull-stripped or cropped)"
    return False, f"the nonzero voxels fill {share:.0%} of the image"


def _spec(mode: str, window: Sequence[float]) -> dict[str, Any]:
    return {"mode": mode, "window": [float(w) for w in window]} if mode == "ct" else {"mode": mode}


def _kind(image: "Volume | str | None") -> tuple[str | None, str]:
    """``ct``, ``zscore``, ``none`` or ``None`` (cannot tell) for one image (a volume, or the
    units read with a picture), and why."""
    from .volume import UNITS_HU, Volume

    if isinstance(image, Volume):
        units, why = guess_units(image)
        modality = str(image.meta.get("modality") or "")
    else:
        units, why, modality = image, f"units {image}" if image else "no units", ""
    if units == UNITS_HU:
        return "ct", f"CT in HU: {why}"
    if units == UNITS_NORMALIZED:
        return "none", "normalised already by medtool hu --normalize"
    if units is not None and modality and modality != "CT":
        return "zscore", f"modality {modality}"
    if units is not None and modality == "CT":
        return None, "CT stored values, not HU (convert them with medtool hu first)"
    if units is not None:
        return None, f"{why} and no modality"
    return None, why


def plan_normalization(mode: str, window: Sequence[float],
                       images: Sequence[tuple[str | "Path", "Volume | str | None"]],
                       *, projection: bool = False, channel: tuple[str, str] | None = None) -> Normalization:
    """The normalisation for ``--normalize MODE`` of training ``images``: (name, volume) pairs,
    or (name, units) where the units came with the image (X-ray pictures).

    ``auto`` looks at the first :data:`AUTO_SAMPLE` images: CT in HU (medtool's metadata, or a
    file of another tool whose values reach air) gets ``ct`` with ``window``; normalised
    volumes ``none``; other modalities (from metadata) ``zscore``; with ``projection`` (X-rays,
    photographs) anything not HU ``zscore``. Raw CT stored values, files whose values cannot
    tell, and images that disagree are refused, naming the option that decides. A dataset's
    ``channel`` (name, where it is declared: ``("CT", "dataset.json")``) decides instead, as
    nnU-Net's rule does: CT gets ``ct``, every other name ``zscore``.

    Raises
    ------
    InputError
        ``auto`` cannot tell, or the images disagree.
    UsageError
        An unknown mode.
    """
    check_choice("--normalize", mode, NORMALIZATIONS)
    if mode != "auto":
        return Normalization(_spec(mode, window), "given")
    if channel is not None:
        name, where = channel
        kind = "ct" if name.strip().lower() == "ct" else "zscore"
        return Normalization(_spec(kind, window), f"channel {name} in {where}")
    first: tuple[str, str, str] | None = None
    for name, image in list(images)[:AUTO_SAMPLE]:
        kind, why = _kind(image)
        if kind is None and projection:
            kind, why = "zscore", "a projection image, not HU"
        if kind is None:
            raise InputError(f"cannot tell how to normalise it: {why}", path=name, hint=_DECIDE)
        if first is None:
            first = (kind, why, str(name))
        elif kind != first[0]:
            raise InputError(f"the images disagree on how to normalise: {first[2]} is {first[0]} "
                             f"({first[1]}), this one {kind} ({why})", path=name, hint=_DECIDE)
    if first is None:
        raise UsageError("no training images to plan the normalisation from")
    return Normalization(_spec(first[0], window), first[1])


def constant_background(array: np.ndarray) -> float | None:
    """The value the corners of ``array`` share (the fill outside a masked image, or a
    scanner's padding outside its field of view), or ``None`` when they differ (an image whose
    outside is noise, like the air around a CT). Corners, not faces: the lungs of a masked CT
    reach the first and last slices."""
    corners = array[np.ix_(*[[0, n - 1] for n in array.shape])]
    value = corners.flat[0]
    return float(value) if np.all(corners == value) else None


def foreground_box(array: np.ndarray) -> tuple[slice, ...]:
    """Slices of the box around the voxels that differ from the image's constant outside
    (:func:`constant_background`); the whole image when it has none or nothing differs."""
    from .metrics import bounding_box

    whole = tuple(slice(0, n) for n in array.shape)
    value = constant_background(array)
    if value is None:
        return whole
    inside = array != value
    return bounding_box(inside) if inside.any() else whole
