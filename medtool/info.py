"""Summaries of volume files for ``medtool info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .formats import load_volume

#: Above this many voxels the value range is computed in chunks to bound memory.
_CHUNK_VOXELS = 1 << 24


def describe_file(path: str | Path) -> dict[str, Any]:
    """Everything ``medtool info`` reports about one volume file, JSON-ready."""
    volume = load_volume(path, mmap=True)
    low, high = value_range(volume.array)
    return {
        "file": str(path),
        "shape": list(volume.shape),
        "axes": "".join(volume.axes),
        "dtype": str(volume.array.dtype),
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": volume.direction.tolist(),
        "orientation": volume.orientation,
        "min": low,
        "max": high,
        "units": volume.units,
        "modality": volume.meta.get("modality"),
        "meta": volume.meta,
        "history": volume.history,
    }


def value_range(array: np.ndarray) -> tuple[float | int | None, float | int | None]:
    """Minimum and maximum of ``array`` (NaNs ignored), read slab by slab for big arrays."""
    if array.size == 0:
        return None, None
    slabs = max(1, array.size // _CHUNK_VOXELS) if array.ndim == 3 else 1
    bounds = [_slab_range(part) for part in np.array_split(array, min(slabs, array.shape[0]))]
    lows = [b[0] for b in bounds if b[0] is not None]
    highs = [b[1] for b in bounds if b[1] is not None]
    if not lows:
        return None, None
    return min(lows), max(highs)


def _slab_range(part: np.ndarray):
    values = np.asarray(part)
    if values.dtype.kind == "f":
        if np.all(np.isnan(values)):
            return None, None
        return float(np.nanmin(values)), float(np.nanmax(values))
    return values.min().item(), values.max().item()
