"""Summaries of volume files for ``medtool info``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .formats import load_volume
from .ingest import Findings

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


@dataclass
class DicomSummary(Findings):
    """What ``medtool info`` found in DICOM inputs: one row per series that would be built."""

    rows: list[dict[str, Any]] = field(default_factory=list)


def describe_dicom(paths: list[Path], roots: list[Path], *, workers: int = 1,
                   progress: bool = False, on_error=None) -> DicomSummary:
    """The series ``medtool dicom2npy`` would write from the DICOM files ``paths`` (headers
    only, no pixels): name, planned shape, spacing, orientation, files, and what is skipped."""
    from .series import plan, scan
    from .volume import orientation_code

    scanned = scan(paths, workers=workers, progress=progress, on_error=on_error)
    planned = plan(scanned.frames, roots=roots)
    summary = DicomSummary(skipped=scanned.skipped, notices=planned.notices,
                           failures=[*scanned.failures, *planned.failures])
    if on_error is not None:
        for _, error in planned.failures:
            on_error(error)
    for stack in planned.stacks:
        dicom = stack.meta.get("dicom", {})
        summary.rows.append({
            "series": stack.name, "source": stack.source, "shape": list(stack.shape),
            "spacing": [float(v) for v in stack.spacing], "origin": list(stack.origin),
            "orientation": orientation_code(stack.direction[:, ::-1][:, :len(stack.shape)]),
            "files": stack.files,
            "modality": stack.meta.get("modality"), "series_uid": dicom.get("series_uid"),
            "series_number": dicom.get("series_number"),
            "gantry_tilt_deg": stack.meta.get("gantry_tilt_deg")})
    return summary


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
