"""Tiny synthetic segmentation data for the train/predict tests: bright balls in noisy air."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtool.formats import save_volume
from medtool.volume import Volume

#: HU of the background and of the balls.
AIR, TISSUE = -800.0, 60.0


def ball_case(seed: int, shape=(12, 24, 24), spacing=(2.0, 1.0, 1.0), direction=None,
              origin=(0.0, 0.0, 0.0)) -> tuple[Volume, Volume]:
    """An int16 HU image with one ball (label 1) and its uint8 mask, on the same grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    extent = np.array(shape) * np.array(spacing)
    centre = extent * rng.uniform(0.35, 0.65, size=3)
    radius = extent.min() * rng.uniform(0.2, 0.3)
    mask = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2).astype(np.uint8)
    image = np.where(mask > 0, TISSUE, AIR) + rng.normal(0, 60, size=shape)
    kwargs = {"spacing": spacing, "origin": origin}
    if direction is not None:
        kwargs["direction"] = direction
    return (Volume(image.astype(np.int16), meta={"units": "HU"}, **kwargs),
            Volume(mask, meta={"units": "label"}, **kwargs))


def write_ball_dataset(root: Path, cases: int = 4, **kwargs) -> tuple[Path, Path]:
    """``root/images/ball_NN.npy`` and ``root/masks/ball_NN.npy``."""
    images, masks = root / "images", root / "masks"
    for index in range(cases):
        image, mask = ball_case(index, **kwargs)
        save_volume(image, images / f"ball_{index:02d}.npy")
        save_volume(mask, masks / f"ball_{index:02d}.npy")
    return images, masks
