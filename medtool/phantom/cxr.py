"""Synthetic frontal chest X-rays with pneumonia-like opacities and their boxes (RSNA form)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Image size and pixel spacing of the RSNA Pneumonia Detection Challenge images.
RSNA_SIZE = 1024
RSNA_SPACING_MM = 0.168
#: Chance that an X-ray shows opacities (RSNA: about 1 in 4.5 images is positive).
POSITIVE_PROBABILITY = 0.4
#: An opacity's box spans this many standard deviations of its Gaussian profile each way.
BOX_SIGMAS = 1.8


@dataclass
class ChestXray:
    """One chest X-ray and its truth boxes ``(x, y, width, height)`` in pixels."""

    image: np.ndarray                 # (rows, columns) uint8
    boxes: list[tuple[float, float, float, float]]
    opacity: np.ndarray               # (rows, columns) float32: what the opacities added
    spacing_mm: float
    view: str


def make_cxr(rng: np.random.Generator, *, size: int = RSNA_SIZE) -> ChestXray:
    """Generate one frontal chest X-ray of ``size`` x ``size`` pixels."""
    from scipy import ndimage

    n = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx = n * rng.uniform(0.47, 0.53)
    image = np.full((size, size), 12.0, dtype=np.float32)

    def ellipse(x0, y0, ax, ay):
        return ((xx - x0) / ax) ** 2 + ((yy - y0) / ay) ** 2 <= 1.0

    # Trunk with shoulders, abdomen below the diaphragm.
    trunk_w = n * rng.uniform(0.38, 0.45)
    shoulder = n * rng.uniform(0.06, 0.12)
    trunk = (np.abs(xx - cx) <= trunk_w * np.clip((yy - shoulder) / (0.12 * n) + 0.6, 0, 1)) & (yy >= shoulder)
    image[trunk] = 115.0
    lung_y, lung_ay, lung_ax = n * rng.uniform(0.40, 0.46), n * rng.uniform(0.24, 0.30), n * rng.uniform(0.12, 0.15)
    lungs = np.zeros((size, size), dtype=bool)
    fields = []
    for side in (-1, 1):
        x0 = cx + side * n * rng.uniform(0.17, 0.21)
        field = ellipse(x0, lung_y, lung_ax, lung_ay) & (yy < lung_y + lung_ay * 0.75 - 0.05 * np.abs(xx - x0))
        lungs |= field
        fields.append((x0, field))
    image[lungs] = 45.0
    image[ellipse(cx + n * 0.04, lung_y + lung_ay * 0.45, n * 0.15, n * 0.12)] += 45.0   # heart shadow
    image[(np.abs(xx - cx) <= n * 0.045) & trunk] += 30.0                                 # spine, mediastinum
    for side in (-1, 1):                                                                   # clavicles
        bar = (np.abs((yy - n * 0.2) - 0.25 * side * (xx - cx)) < n * 0.012) & \
              (np.abs(xx - cx - side * n * 0.15) < n * 0.13)
        image[bar] += 40.0
    rib_gap = n * rng.uniform(0.045, 0.055)
    for k in range(11):                                                                    # ribs
        y_k = lung_y - lung_ay + k * rib_gap
        arc = np.abs(yy - (y_k + 0.9 * ((xx - cx) / n) ** 2 * n)) < n * 0.008
        image[arc & trunk] += 22.0

    boxes: list[tuple[float, float, float, float]] = []
    opacity = np.zeros((size, size), dtype=np.float32)
    if rng.uniform() < POSITIVE_PROBABILITY:
        count = int(rng.choice([1, 1, 2]))
        sides = rng.permutation(2)[:count]
        for side in sides:
            x0, field = fields[side]
            rows, cols = np.nonzero(field)
            pick = rng.integers(len(rows))
            my, mx = float(rows[pick]), float(cols[pick])
            my = min(my, lung_y + lung_ay * 0.4)        # pneumonia favours the lower zones
            sx, sy = n * rng.uniform(0.03, 0.06), n * rng.uniform(0.04, 0.08)
            texture = 1.0 + 0.3 * ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 4)
            blob = np.exp(-0.5 * (((xx - mx) / sx) ** 2 + ((yy - my) / sy) ** 2)) * texture
            opacity += rng.uniform(45.0, 75.0) * blob * (lungs | trunk)
            x, y = max(0.0, mx - BOX_SIGMAS * sx), max(0.0, my - BOX_SIGMAS * sy)
            boxes.append((round(x), round(y), round(min(n, mx + BOX_SIGMAS * sx) - x),
                          round(min(n, my + BOX_SIGMAS * sy) - y)))

    image = ndimage.gaussian_filter(image + opacity, sigma=max(1.0, n / 600))
    image += rng.normal(0.0, 3.0, size=image.shape).astype(np.float32)
    spacing = RSNA_SPACING_MM * RSNA_SIZE / size
    return ChestXray(np.clip(image, 0, 255).astype(np.uint8), boxes, opacity, spacing,
                     str(rng.choice(["PA", "AP"])))
