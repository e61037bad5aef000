"""A case's input channels: how their files are named, found and read onto one grid.

A model may take several co-registered images of a case as its input channels (the four MRI
sequences of BraTS: FLAIR, T1, T1c, T2). They come in one of two ways:

* **one file per channel**, named ``<case><suffix>.<ext>``: ``<case>_flair.nii.gz`` (BraTS,
  ``--channels flair,t1ce,t2``), ``<case>_0000.nii.gz`` (nnU-Net, channel 0). The files of a
  case sit in one folder, the folder of all cases or one folder per case;
* **one 4D file** whose fourth NIfTI axis holds the channels (the Decathlon's BrainTumour).

:class:`InputChannels` records which, with the channel names in their order; it rides in the
recipe of a checkpoint (``recipe["channels"]``), so ``predict`` and ``gradcam`` read a new case
as training did and refuse one whose channels are missing, naming the missing file. A recipe
without the entry (a single-channel model, or a checkpoint from before) reads one image.

Every channel is brought onto the grid of the first (:func:`onto_reference`): a channel on
another grid is resampled onto it (linear); channels that do not overlap in space are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .files import VOLUME_SUFFIXES, strip_suffix, volume_suffix
from .volume import Volume

#: The least share of a channel's box that must lie inside the reference's to count as overlap.
MIN_OVERLAP = 0.5


def parse_channels(text: str | Sequence[str] | None) -> list[str]:
    """``flair,t1ce,t2`` (or a list) as channel names; repeats are a usage error."""
    if text is None:
        return []
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if str(n).strip()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--channels names {', '.join(repeated)} twice", hint="name each channel once")
    return names


@dataclass(frozen=True)
class InputChannels:
    """The input channels of a model: their ``names`` in order and how a case's files hold them.

    ``suffixes`` (one per channel) follow the case id in the file names; ``four_d`` means one
    4D file holds the channels along its fourth axis, ``indices`` (default ``0..C-1``) the
    ones taken, in ``names`` order (``suffixes`` is then empty).
    """

    names: tuple[str, ...]
    suffixes: tuple[str, ...] = ()
    four_d: bool = False
    indices: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    def as_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "suffixes": list(self.suffixes), "four_d": self.four_d,
                "indices": list(self.indices)}

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any]) -> "InputChannels | None":
        """The recipe's channels, or ``None`` for a model of one image (read as it is)."""
        entry = recipe.get("channels")
        if not entry:
            return None
        return cls(tuple(entry["names"]), tuple(entry.get("suffixes", ())), bool(entry.get("four_d")),
                   tuple(entry.get("indices", ())))

    def describe(self) -> str:
        """``3 channels flair, t1ce, t2 (<case>_flair, ...)`` for the user."""
        where = "one 4D file per case" if self.four_d else ", ".join(f"<case>{s}" for s in self.suffixes)
        return f"{len(self)} input channels {', '.join(self.names)} ({where})"

    def files(self, first: str | Path) -> list[Path]:
        """The files of the case whose first channel is ``first``: the other channels are its
        siblings ``<case><suffix>`` in the same folder (the same format first, any other after).

        Raises
        ------
        InputError
            A channel's file is missing: the line names it.
        """
        first = Path(first)
        if self.four_d:
            return [first]
        stem = strip_suffix(first)
        if not self.suffixes or not stem.endswith(self.suffixes[0]):
            raise InputError(f"not named <case>{self.suffixes[0] if self.suffixes else ''}", path=first,
                             hint="give the first channel's file")
        case = stem[: len(stem) - len(self.suffixes[0])]
        ext = volume_suffix(first) or ""
        found = [first]
        for name, suffix in zip(self.names[1:], self.suffixes[1:]):
            candidates = [first.with_name(f"{case}{suffix}{e}") for e in (ext, *VOLUME_SUFFIXES)]
            path = next((p for p in candidates if p.exists()), None)
            if path is None:
                raise InputError(f"channel {name} is missing: no {case}{suffix}{ext} beside it", path=first,
                                 hint=f"every case needs {self.describe()}")
            found.append(path)
        return found

    def read(self, paths: Sequence[str | Path]) -> list[Volume]:
        """The channels of one case (its :meth:`files`) as volumes on the first one's grid."""
        from .formats import load_channels, load_volume

        if self.four_d:
            volumes = load_channels(paths[0])
            indices = self.indices or tuple(range(len(self)))
            if len(volumes) <= max(indices) or (not self.indices and len(volumes) != len(self)):
                raise InputError(f"holds {len(volumes)} channels, the model takes {len(self)} "
                                 f"({', '.join(self.names)})", path=paths[0],
                                 hint="give the 4D images the model was trained on")
            return [volumes[i] for i in indices]
        return onto_reference([load_volume(p, mmap=True) for p in paths], paths)


def onto_reference(volumes: Sequence[Volume], paths: Sequence[str | Path]) -> list[Volume]:
    """``volumes`` with every one after the first resampled onto the first's grid (linear)
    unless it is on it already.

    Raises
    ------
    InputError
        A channel's shape of axes differs (2D and 3D), or it covers less than
        :data:`MIN_OVERLAP` of its box inside the first's: not the same part of the body.
    """
    from .resample import resample

    reference = volumes[0]
    out = [reference]
    for volume, path in zip(volumes[1:], paths[1:]):
        if volume.ndim != reference.ndim:
            raise InputError(f"a {volume.ndim}D channel of a {reference.ndim}D case", path=path,
                             hint="give the channels of one case on one grid")
        if volume.same_grid(reference, atol=1e-3):
            out.append(volume)
            continue
        share = _overlap(volume, reference)
        if share < MIN_OVERLAP:
            raise InputError(f"does not overlap the first channel {Path(paths[0]).name} in space "
                             f"({share:.0%} of it lies inside)", path=path,
                             hint="the channels of a case must be co-registered images of the same region")
        out.append(resample(volume, like=reference, pad=0.0))
    return out


def _box(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The world (LPS mm) bounding box of a volume's voxels (their outer faces)."""
    shape = np.array(volume.shape)
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(len(shape), -1).T
    points = volume.world(corners)
    return points.min(axis=0), points.max(axis=0)


def _overlap(volume: Volume, reference: Volume) -> float:
    """The share of ``volume``'s bounding box that lies inside ``reference``'s."""
    low, high = _box(volume)
    ref_low, ref_high = _box(reference)
    size = high - low
    inside = np.clip(np.minimum(high, ref_high) - np.maximum(low, ref_low), 0, None)
    flat = size < 1e-6                       # a 2D image has no extent along its normal
    within = (low >= ref_low - 1.0) & (high <= ref_high + 1.0)
    share = np.where(flat, within.astype(float), np.minimum(inside / np.where(flat, 1.0, size), 1.0))
    return float(np.prod(share))
