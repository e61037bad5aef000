"""Measurements on masks, checked against independent references in the tests."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def longest_axial_diameter(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Longest in-plane diameter (mm) over all axial slices of a 3D ``(z, y, x)`` mask.

    The RECIST measure: on each slice, the largest distance between the centres of two mask
    voxels (in mm, using the ``(y, x)`` spacing); the maximum over slices. 0 for an empty mask.
    A single voxel measures 0.
    """
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        mask = mask[None]
    sy, sx = float(spacing[-2]), float(spacing[-1])
    best = 0.0
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        rows, cols = np.nonzero(mask[k])
        points = np.column_stack([rows * sy, cols * sx])
        if len(points) > 3:
            try:
                points = points[ConvexHull(points).vertices]
            except QhullError:  # collinear points: all of them are on the "hull"
                pass
        if len(points) > 1:
            best = max(best, float(pdist(points).max()))
    return best
