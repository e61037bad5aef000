"""Data augmentation in torch, on the training device, for 2D and 3D batches.

One spatial transform per sample (flips, rotation, scaling, shear and an elastic deformation)
is composed into a single sampling grid and applied with ``grid_sample`` to the image (linear)
and the mask (nearest), so both move identically and the image is interpolated only once.
Intensity transforms (scale, shift, gamma, Gaussian noise, Gaussian blur) then touch the image
only. Every transform has its own probability per sample.

Tensors are ``(B, C, *spatial)`` images and ``(B, *spatial)`` integer masks, spatial axes in
array order (``(z, y, x)`` or ``(y, x)``). The spatial part is an affine matrix per sample in
voxel units about the patch centre (:meth:`Augmenter.sample_affine`), so points (box corners,
landmarks) can be carried through the same transform with :func:`map_points`, and boxes with
:func:`map_boxes` (:meth:`Augmenter.with_boxes`, used by the detection task; elastic
deformation is then left off, since no affine map follows it).

Mirroring swaps left and right, so it is off in ``light``: a model that must tell the right
lung from the left one (lateralised labels) learns nothing with flips; turn them on
(``flip=0.5``, as ``heavy`` does) only for symmetric labels.

Presets ``none``, ``light`` and ``heavy`` set the defaults; ``key=value`` options override them
(``rotate=30``, ``elastic=0``, ``p_spatial=0.5``...), see :class:`AugmentConfig`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

import torch
from torch.nn import functional as F

#: Points of the coarse random field the elastic deformation is interpolated from, per axis.
ELASTIC_CONTROL_POINTS = 5
#: Gaussian kernels reach this many sigmas on each side.
KERNEL_SIGMAS = 3


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings: magnitudes and the probability of each transform per sample.

    Attributes
    ----------
    flip
        Probability of mirroring each spatial axis.
    hflip
        Probability of mirroring the last axis (x, left-right) only: chest X-rays are flipped
        sideways, never upside down.
    rotate, p_rotate
        Largest in-plane rotation (degrees, about the z axis; the only one in 2D) and its
        probability.
    rotate_3d
        Largest rotation about the y and x axes (3D only; 0 keeps slices axial).
    scale, p_scale
        Zoom factor range (``scale=0.85,1.25``) and its probability.
    shear
        Largest shear factor between in-plane axes (applied with ``p_rotate``).
    shift, p_shift
        Largest translation as a fraction of the size of each axis, and its probability.
    elastic, p_elastic
        Largest displacement of the elastic deformation in voxels, and its probability.
    intensity_scale, p_intensity
        Multiplicative intensity range; also the probability of an additive shift.
    intensity_shift
        Largest additive shift, in units of the sample's standard deviation.
    gamma, p_gamma
        Gamma range applied to the sample rescaled to [0, 1], and its probability.
    noise, p_noise
        Largest standard deviation of additive Gaussian noise, and its probability.
    blur, p_blur
        Gaussian blur sigma range in voxels, and its probability.
    lowres, p_lowres
        Simulated low resolution (nnU-Net's): a zoom range, each spatial axis drawing its own
        factor; the image is sampled down by it with nearest neighbour and back up linearly,
        as a thick-slice or coarse-pixel scan looks once resampled to the model's spacing. And
        its probability.
    paste, paste_scale, paste_into
        Lesion copy-paste (TumorCP's; segmentation only, done where patches are drawn): the
        chance that a patch receives a foreground object (one connected component of a
        training mask, chosen uniformly among all of them, so small lesions count as much as
        large ones), zoomed by a factor in ``paste_scale`` and flipped at random; and the
        intensity range of the voxels it may land on (HU under the CT normalisation, e.g.
        ``paste_into=-1000,-300`` for lung parenchyma; z-scores under ``zscore``; default
        anywhere). At least half of the object must land inside that range, and only those
        voxels take it.
    """

    flip: float = 0.0
    hflip: float = 0.0
    rotate: float = 0.0
    rotate_3d: float = 0.0
    p_rotate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    p_scale: float = 0.0
    shear: float = 0.0
    shift: float = 0.0
    p_shift: float = 0.0
    elastic: float = 0.0
    p_elastic: float = 0.0
    intensity_scale: tuple[float, float] = (1.0, 1.0)
    intensity_shift: float = 0.0
    p_intensity: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)
    p_gamma: float = 0.0
    noise: float = 0.0
    p_noise: float = 0.0
    blur: tuple[float, float] = (0.5, 1.0)
    p_blur: float = 0.0
    lowres: tuple[float, float] = (0.5, 1.0)
    p_lowres: float = 0.0
    paste: float = 0.0
    paste_scale: tuple[float, float] = (0.5, 1.0)
    paste_into: tuple[float, float] | None = None


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(rotate=15.0, p_rotate=0.2, scale=(0.9, 1.1), p_scale=0.2,
                           intensity_scale=(0.9, 1.1), intensity_shift=0.1, p_intensity=0.15,
                           noise=0.05, p_noise=0.1),
    "heavy": AugmentConfig(flip=0.5, rotate=30.0, rotate_3d=15.0, p_rotate=0.3,
                           scale=(0.7, 1.4), p_scale=0.3, shear=0.1, elastic=4.0, p_elastic=0.2,
                           intensity_scale=(0.75, 1.25), intensity_shift=0.2, p_intensity=0.15,
                           gamma=(0.7, 1.5), p_gamma=0.3, noise=0.1, p_noise=0.15,
                           blur=(0.5, 1.0), p_blur=0.2, lowres=(0.5, 1.0), p_lowres=0.25),
    # the seeds' chest X-ray detection recipe (boxes follow): scale, rotation up to 6 degrees,
    # shear, shift, horizontal flip, gamma, blur and noise; no elastic deformation
    "detect": AugmentConfig(hflip=0.5, rotate=6.0, p_rotate=0.5, scale=(0.85, 1.15), p_scale=0.5,
                            shear=0.05, shift=0.06, p_shift=0.5, gamma=(0.8, 1.25), p_gamma=0.3,
                            noise=0.05, p_noise=0.2, blur=(0.5, 1.0), p_blur=0.2),
}


def make_config(preset: str = "light", options: Sequence[str] | dict[str, Any] = ()) -> AugmentConfig:
    """The ``preset`` with ``key=value`` overrides (``"rotate=30"``, ``"scale=0.8,1.2"``).

    Raises
    ------
    UsageError
        An unknown preset or key, or a value of the wrong form.
    """
    from .errors import UsageError, check_choice

    check_choice("--augment", preset, PRESETS)
    config = PRESETS[preset]
    if isinstance(options, dict):
        return replace(config, **options)
    types = {f.name: f.type for f in fields(AugmentConfig)}
    changes: dict[str, Any] = {}
    for option in options:
        key, _, text = option.partition("=")
        key = key.strip().replace("-", "_")
        if key not in types or not text:
            raise UsageError(f"--aug {option}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        try:
            if "tuple" in str(types[key]):
                low, high = (float(v) for v in text.split(","))
                changes[key] = (low, high)
            else:
                changes[key] = float(text)
        except ValueError:
            raise UsageError(f"--aug {option}: {key} takes "
                             f"{'two numbers LOW,HIGH' if 'tuple' in str(types[key]) else 'a number'}") from None
    config = replace(config, **changes)
    if not 0 <= config.paste <= 1:
        raise UsageError(f"--aug paste={config.paste:g}: a probability, between 0 and 1")
    if not 0 < config.paste_scale[0] <= config.paste_scale[1]:
        raise UsageError("--aug paste_scale=LOW,HIGH needs 0 < LOW <= HIGH")
    if config.paste_into is not None and not config.paste_into[0] < config.paste_into[1]:
        raise UsageError("--aug paste_into=LOW,HIGH needs LOW < HIGH")
    return config


def config_dict(config: AugmentConfig) -> dict[str, Any]:
    """``config`` as JSON-friendly values (for the checkpoint recipe)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def _uniform(low: float, high: float, size: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _chance(p: float, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(size, generator=generator) < p


def _rotation(axis_a: int, axis_b: int, angle: torch.Tensor, dim: int) -> torch.Tensor:
    """Rotations by ``angle`` (per sample) in the plane of array axes ``a`` and ``b``."""
    matrix = torch.eye(dim, dtype=torch.float64).repeat(len(angle), 1, 1)
    c, s = torch.cos(angle), torch.sin(angle)
    matrix[:, axis_a, axis_a], matrix[:, axis_a, axis_b] = c, -s
    matrix[:, axis_b, axis_a], matrix[:, axis_b, axis_b] = s, c
    return matrix


class Augmenter:
    """Applies an :class:`AugmentConfig` to batches; see the module docstring.

    Parameters
    ----------
    config
        What to apply.
    seed
        Seed of the generator drawing the per-sample parameters (noise fields use the global
        torch generator of the batch's device).
    """

    def __init__(self, config: AugmentConfig, *, seed: int = 0):
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def spatial(self) -> bool:
        c = self.config
        return c.flip > 0 or c.hflip > 0 or c.p_rotate > 0 or c.p_scale > 0 or c.p_elastic > 0 or (
            c.p_shift > 0 and c.shift > 0)

    # -- spatial --------------------------------------------------------------------------------
    def sample_affine(self, batch: int, dim: int) -> torch.Tensor:
        """Per-sample matrices ``(B, dim, dim)`` mapping output voxel offsets (from the patch
        centre, array order) to input offsets: ``rotation @ shear @ scale @ flips``."""
        c, g = self.config, self.generator
        matrix = torch.eye(dim, dtype=torch.float64).repeat(batch, 1, 1)
        flips = torch.where(_chance(c.flip, batch * dim, g).reshape(batch, dim), -1.0, 1.0)
        if c.hflip > 0:                         # drawn only when asked: other streams stay as they were
            flips[:, -1] *= torch.where(_chance(c.hflip, batch, g), -1.0, 1.0)
        matrix = matrix * flips.to(torch.float64)[:, None, :]
        zoom = torch.where(_chance(c.p_scale, batch, g), _uniform(*c.scale, batch, g), torch.ones(batch, dtype=torch.float64))
        # zooming in (factor > 1) samples a smaller input region
        matrix = matrix / zoom[:, None, None]
        rotate = _chance(c.p_rotate, batch, g)
        if c.shear > 0:
            shear = torch.eye(dim, dtype=torch.float64).repeat(batch, 1, 1)
            amount = torch.where(rotate, _uniform(-c.shear, c.shear, batch, g), torch.zeros(batch, dtype=torch.float64))
            shear[:, dim - 2, dim - 1] = amount
            matrix = shear @ matrix
        angle = torch.where(rotate, _uniform(-c.rotate, c.rotate, batch, g) * math.pi / 180,
                            torch.zeros(batch, dtype=torch.float64))
        matrix = _rotation(dim - 2, dim - 1, angle, dim) @ matrix
        if dim == 3 and c.rotate_3d > 0:
            for a, b in ((0, 2), (0, 1)):
                tilt = torch.where(rotate, _uniform(-c.rotate_3d, c.rotate_3d, batch, g) * math.pi / 180,
                                   torch.zeros(batch, dtype=torch.float64))
                matrix = _rotation(a, b, tilt, dim) @ matrix
        return matrix

    def sample_shift(self, batch: int, shape: Sequence[int]) -> torch.Tensor:
        """Per-sample translations ``(B, dim)`` in voxels (array order), added to the input
        position: ``input = centre + A (output - centre) + shift``; zeros unless ``p_shift``."""
        c, dim = self.config, len(shape)
        if c.p_shift <= 0 or c.shift <= 0:
            return torch.zeros(batch, dim, dtype=torch.float64)
        chosen = _chance(c.p_shift, batch, self.generator)
        amount = _uniform(-c.shift, c.shift, batch * dim, self.generator).reshape(batch, dim)
        return amount * torch.tensor([float(n) for n in shape], dtype=torch.float64) * chosen[:, None]

    def _grid(self, matrix: torch.Tensor, shape: Sequence[int], device, elastic: torch.Tensor | None,
              shift: torch.Tensor | None = None) -> torch.Tensor:
        """Sampling grid for ``grid_sample`` (coordinates in x, y[, z] order, align_corners)."""
        dim = len(shape)
        half = torch.tensor([(n - 1) / 2 if n > 1 else 1.0 for n in shape], dtype=torch.float64)
        normalised = matrix * half[None, :, None] / half[None, None, :]   # D^-1 A D in array order
        theta = torch.zeros(len(matrix), dim, dim + 1, dtype=torch.float64)
        theta[:, :, :dim] = normalised.flip(1).flip(2)                      # to grid (x, y, z) order
        if shift is not None:
            theta[:, :, dim] = (shift / half).flip(1)                      # D^-1 t
        grid = F.affine_grid(theta.float().to(device), [len(matrix), 1, *shape], align_corners=True)
        if elastic is not None:
            grid = grid + elastic
        return grid

    def _elastic(self, batch: int, shape: Sequence[int], device) -> torch.Tensor | None:
        c = self.config
        if c.p_elastic <= 0 or c.elastic <= 0:
            return None
        dim = len(shape)
        chosen = _chance(c.p_elastic, batch, self.generator)
        if not chosen.any():
            return None
        coarse = torch.randn(batch, dim, *[ELASTIC_CONTROL_POINTS] * dim, generator=self.generator)
        coarse = coarse * chosen.float().view(batch, *[1] * (dim + 1))
        field = F.interpolate(coarse.to(device), size=tuple(shape),
                              mode="trilinear" if dim == 3 else "bilinear", align_corners=True)
        peak = field.abs().amax(dim=tuple(range(1, dim + 2)), keepdim=True).clamp_min(1e-6)
        field = field / peak * c.elastic                                   # voxels, array order
        half = torch.tensor([(n - 1) / 2 if n > 1 else 1.0 for n in shape], device=device)
        field = field / half.view(1, dim, *[1] * dim)
        return field.flip(1).movedim(1, -1)                                # grid (x, y, z) order

    def spatial_transform(self, image: torch.Tensor, mask: torch.Tensor | None = None):
        """Apply one random spatial transform per sample to ``image`` and ``mask``."""
        image, mask, _ = self._spatial(image, mask, None)
        return image, mask

    def _spatial(self, image: torch.Tensor, mask: torch.Tensor | None, boxes: torch.Tensor | None):
        shape = image.shape[2:]
        batch, dim = image.shape[0], len(shape)
        matrix = self.sample_affine(batch, dim)
        shift = self.sample_shift(batch, shape)
        elastic = None if boxes is not None else self._elastic(batch, shape, image.device)
        identity = torch.eye(dim, dtype=torch.float64)
        if elastic is None and torch.allclose(matrix, identity.expand_as(matrix)) and not shift.any():
            return image, mask, boxes
        grid = self._grid(matrix, shape, image.device, elastic, shift if shift.any() else None)
        image = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros",
                              align_corners=True)
        if mask is not None:
            mask = F.grid_sample(mask[:, None].float(), grid.float(), mode="nearest",
                                 padding_mode="zeros", align_corners=True)[:, 0].to(mask.dtype)
        if boxes is not None:
            boxes = map_boxes(boxes, matrix, shape, shift).to(boxes.dtype)
        return image, mask, boxes

    # -- intensity ------------------------------------------------------------------------------
    def intensity_transform(self, image: torch.Tensor) -> torch.Tensor:
        """Blur, noise, multiplicative scale / additive shift and gamma, per sample."""
        c, g = self.config, self.generator
        batch = image.shape[0]
        view = (batch, *[1] * (image.ndim - 1))
        device = image.device
        if c.p_blur > 0 and (chosen := _chance(c.p_blur, batch, g)).any():
            sigma = _uniform(*c.blur, batch, g)
            blurred = torch.stack([_gaussian_blur(image[i:i + 1], float(sigma[i]))[0] for i in range(batch)])
            image = torch.where(chosen.to(device).view(view), blurred, image)
        if c.p_noise > 0 and c.noise > 0 and (chosen := _chance(c.p_noise, batch, g)).any():
            sigma = (_uniform(0, c.noise, batch, g) * chosen).float().to(device).view(view)
            image = image + sigma * torch.randn_like(image)
        if c.p_intensity > 0:
            factor = torch.where(_chance(c.p_intensity, batch, g), _uniform(*c.intensity_scale, batch, g),
                                 torch.ones(batch, dtype=torch.float64))
            shift = torch.where(_chance(c.p_intensity, batch, g),
                                _uniform(-c.intensity_shift, c.intensity_shift, batch, g),
                                torch.zeros(batch, dtype=torch.float64))
            std = image.flatten(1).std(dim=1).view(view)
            image = image * factor.float().to(device).view(view) + shift.float().to(device).view(view) * std
        if c.p_lowres > 0 and (chosen := _chance(c.p_lowres, batch, g)).any():
            zoom = _uniform(*c.lowres, batch * (image.ndim - 2), g).reshape(batch, -1)
            image = torch.stack([_low_resolution(image[i:i + 1], zoom[i].tolist())[0] if chosen[i] else image[i]
                                 for i in range(batch)])
        if c.p_gamma > 0 and (chosen := _chance(c.p_gamma, batch, g)).any():
            gamma = torch.where(chosen, _uniform(*c.gamma, batch, g), torch.ones(batch, dtype=torch.float64))
            low = image.flatten(1).amin(1).view(view)
            span = (image.flatten(1).amax(1).view(view) - low).clamp_min(1e-6)
            unit = ((image - low) / span).clamp(0, 1)
            image = unit.pow(gamma.float().to(device).view(view)) * span + low
        return image

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None):
        """Augment a batch: the spatial transform on both, then the intensity ones on the image."""
        if self.spatial:
            image, mask = self.spatial_transform(image, mask)
        image = self.intensity_transform(image)
        return image, mask

    def with_boxes(self, image: torch.Tensor, boxes: torch.Tensor):
        """Augment a 2D batch ``(B, C, H, W)`` and its boxes ``(B, K, 4)`` (``x0 y0 x1 y1`` in
        pixel edges, NaN rows for padding): the boxes follow the spatial transform
        (:func:`map_boxes`; no elastic deformation), then the intensity transforms."""
        if self.spatial:
            image, _, boxes = self._spatial(image, None, boxes)
        return self.intensity_transform(image), boxes


def _low_resolution(image: torch.Tensor, zoom: Sequence[float]) -> torch.Tensor:
    """``(N, C, *spatial)`` sampled down by ``zoom`` per axis (nearest) and back up (linear)."""
    shape = image.shape[2:]
    small = [max(1, round(n * z)) for n, z in zip(shape, zoom)]
    if list(small) == list(shape):
        return image
    coarse = F.interpolate(image, size=small, mode="nearest-exact")
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear" if len(shape) == 3 else "bilinear",
                         align_corners=False)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, *spatial)`` over every spatial axis (edges replicated)."""
    radius = max(1, int(math.ceil(KERNEL_SIGMAS * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(image.dtype)
    dim, channels = image.ndim - 2, image.shape[1]
    conv = F.conv3d if dim == 3 else F.conv2d
    for axis in range(dim):
        shape = [1] * dim
        shape[axis] = len(kernel)
        weight = kernel.view(1, 1, *shape).repeat(channels, 1, *[1] * dim)
        padding = [0] * (2 * dim)          # F.pad counts from the last axis
        padding[2 * (dim - 1 - axis)] = padding[2 * (dim - 1 - axis) + 1] = radius
        image = conv(F.pad(image, padding, mode="replicate"), weight, groups=channels)
    return image


def map_points(points: torch.Tensor, matrix: torch.Tensor, shape: Sequence[int],
               shift: torch.Tensor | None = None) -> torch.Tensor:
    """Where voxel positions ``points`` (``(N, dim)``, array order) of the input land in the
    output of the affine transform ``matrix`` (from :meth:`Augmenter.sample_affine`) and
    ``shift`` (from :meth:`Augmenter.sample_shift`) on a patch of ``shape``:
    ``centre + matrix^-1 (p - centre - shift)``.

    Batched: ``points (B, N, dim)`` with ``matrix (B, dim, dim)`` and ``shift (B, dim)``.
    """
    centre = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64, device=points.device)
    offsets = points.to(torch.float64) - centre
    if shift is not None:
        offsets = offsets - shift.to(offsets)[..., None, :] if offsets.ndim == 3 else offsets - shift.to(offsets)
    inverse = torch.linalg.inv(matrix.to(offsets))
    return offsets @ inverse.transpose(-1, -2) + centre


#: Where each side of a box is sampled by :func:`map_boxes` (fractions of its length).
EDGE_FRACTIONS = (1 / 3, 2 / 3)
#: A mapped box is dropped when less than this share of it stays inside the image.
MIN_BOX_INSIDE = 0.25


def box_edge_points(boxes: torch.Tensor) -> torch.Tensor:
    """The 8 points at 1/3 and 2/3 of each side of ``boxes (..., 4)`` (``x0 y0 x1 y1``):
    ``(..., 8, 2)`` as ``(x, y)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    a, b = EDGE_FRACTIONS
    xa, xb = x0 + a * (x1 - x0), x0 + b * (x1 - x0)
    ya, yb = y0 + a * (y1 - y0), y0 + b * (y1 - y0)
    xs = torch.stack([xa, xb, xa, xb, x0, x0, x1, x1], dim=-1)
    ys = torch.stack([y0, y0, y1, y1, ya, yb, ya, yb], dim=-1)
    return torch.stack([xs, ys], dim=-1)


def map_boxes(boxes: torch.Tensor, matrix: torch.Tensor, shape: Sequence[int],
              shift: torch.Tensor | None = None, *, clip: bool = True) -> torch.Tensor:
    """Boxes ``(B, K, 4)`` (``x0 y0 x1 y1``, pixel edges: pixel ``i`` spans ``[i, i + 1)``; NaN
    rows are padding) through the per-sample transform of a 2D batch of ``shape`` ``(H, W)``.

    The seeds' recipe: the 8 points at 1/3 and 2/3 of each side are mapped and the new box is
    their bounding box, which stays tight under rotation (the 4 corners would inflate it) and
    is exact for flips and right-angle rotations. With ``clip`` the boxes are clipped to the
    image and those keeping less than :data:`MIN_BOX_INSIDE` of their area become NaN rows.
    """
    batch, slots = boxes.shape[:2]
    points = box_edge_points(boxes.to(torch.float64)).reshape(batch, slots * 8, 2)
    index = points.flip(-1) - 0.5                          # (y, x) voxel-centre coordinates
    mapped = map_points(index, matrix, shape, shift).flip(-1) + 0.5
    mapped = mapped.reshape(batch, slots, 8, 2)
    out = torch.cat([mapped.amin(dim=2), mapped.amax(dim=2)], dim=-1)
    if not clip:
        return out
    height, width = shape
    limits = torch.tensor([width, height, width, height], dtype=out.dtype, device=out.device)
    clipped = torch.minimum(out.clamp_min(0), limits)
    area = (out[..., 2] - out[..., 0]) * (out[..., 3] - out[..., 1])
    kept = (clipped[..., 2] - clipped[..., 0]) * (clipped[..., 3] - clipped[..., 1])
    lost = ~(kept >= MIN_BOX_INSIDE * area) | ~(kept > 0)          # NaN rows stay NaN
    return torch.where(lost[..., None], torch.full_like(clipped, math.nan), clipped)
