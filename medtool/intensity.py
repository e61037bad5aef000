"""Intensity normalisation of model inputs: the modes, the rule that chooses one for ``auto``,
and applying it.

A recipe's ``normalize`` entry is ``{"mode": "ct", "window": [low, high]}`` (HU clipped to the
window and scaled to [0, 1]), ``{"mode": "zscore"}`` (each volume minus its mean, over its
standard deviation) or ``{"mode": "none"}``. ``auto`` decides from what the training images
are (:func:`plan_normalization`): CT in HU gets the CT window, other modalities z-scores;
stored CT values and files whose values cannot tell are refused with the option that decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import InputError, UsageError
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
#: The option that decides when ``auto`` cannot.
_DECIDE = "pass --normalize zscore (MRI, other modalities) or --normalize ct (CT in HU)"


@dataclass(frozen=True)
class Normalization:
    """A planned normalisation: the recipe's entry and, for the first line of training, why."""

    spec: dict[str, Any]
    why: str

    def describe(self) -> str:
        """``ct window [-1000, 400] (why)`` and the like."""
        mode = self.spec["mode"]
        what = f"ct window [{self.spec['window'][0]:g}, {self.spec['window'][1]:g}]" if mode == "ct" else mode
        return f"{what} ({self.why})"


def normalize(array: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Intensities as the recipe says: ``ct`` clips to the window and scales to [0, 1],
    ``zscore`` subtracts the volume's mean and divides by its standard deviation."""
    data = np.asarray(array, dtype=np.float32)
    mode = spec["mode"]
    if mode == "ct":
        low, high = spec["window"]
        return (np.clip(data, low, high) - low) / np.float32(high - low)
    if mode == "zscore":
        std = float(data.std())
        return (data - np.float32(data.mean())) / np.float32(std if std > 0 else 1.0)
    return data


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
    if mode not in NORMALIZATIONS:
        raise UsageError(f"--normalize {mode}: choose one of {', '.join(NORMALIZATIONS)}")
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
