"""U-Net for 2D and 3D segmentation, nnU-Net style.

Each level is two 3x3(x3) convolutions with normalisation (batch or instance), LeakyReLU and
optional dropout, optionally as a residual block; the encoder downsamples with strided
convolutions (per-axis strides, so a thin patch is not pooled along its short axis), the
decoder upsamples with transposed convolutions or interpolation plus a 1x1 convolution, and
concatenates the skip connection. With deep supervision the network returns, in training mode,
a list of logits from the full resolution down (each at its decoder level); in evaluation mode
it always returns the full-resolution logits alone.

``channels_last`` stores weights and activations channels-last (NDHWC / NHWC). Which layout
runs faster depends on the processor, the dtype and the model (2 Intel cores with AMX, width 8,
patch 24x64x64: float32 trains 1.7x faster channels-last, bfloat16 2x faster contiguous), so
``train`` times both unless told (:func:`medtool.train.fastest_layout`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import register

#: Norms by name.
NORMS = ("instance", "batch")
#: Upsampling modes by name.
UPSAMPLING = ("transpose", "interpolate")
#: An axis is halved only while it stays at least this many voxels long.
MIN_FEATURE_SIZE = 4
#: Slope of the LeakyReLU (nnU-Net's).
LEAKY_SLOPE = 1e-2


def plan_strides(patch: Sequence[int], depth: int) -> list[list[int]]:
    """Per-level downsampling strides for ``patch``: 2 on an axis while it stays >= 4 voxels.

    Returns ``depth - 1`` lists of per-axis strides (levels 2..depth; level 1 is not
    downsampled).
    """
    size = list(patch)
    strides = []
    for _ in range(depth - 1):
        level = [2 if s // 2 >= MIN_FEATURE_SIZE else 1 for s in size]
        size = [s // t for s, t in zip(size, level)]
        strides.append(level)
    return strides


def _conv(dim: int):
    return nn.Conv3d if dim == 3 else nn.Conv2d


def _norm(dim: int, kind: str, channels: int) -> nn.Module:
    """Batch norm, or instance norm with a per-channel scale and shift. Instance norm is a
    group norm with one channel per group: the same function and the same state-dict keys
    (``weight``, ``bias``) as ``InstanceNorm3d(affine=True)``, but CPUs run it on channels-last
    tensors without the two copies per layer that ``InstanceNorm3d`` makes (width-8 3D U-Net,
    24 x 64 x 64 patches, 2 cores: 8.1-8.5 instead of 7.3-7.8 training samples/s)."""
    if kind == "batch":
        return (nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d)(channels)
    return nn.GroupNorm(channels, channels)


class ConvBlock(nn.Module):
    """Two convolutions (the first with ``stride``), norm, LeakyReLU, dropout; maybe residual."""

    def __init__(self, dim: int, cin: int, cout: int, *, stride: Sequence[int], norm: str,
                 dropout: float, residual: bool):
        super().__init__()
        conv = _conv(dim)
        stride = tuple(stride)
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(dim, norm, cout)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(dim, norm, cout)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.drop = (nn.Dropout3d if dim == 3 else nn.Dropout2d)(dropout) if dropout > 0 else nn.Identity()
        self.skip = None
        if residual:
            needs_projection = cin != cout or any(s != 1 for s in stride)
            self.skip = (nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), _norm(dim, norm, cout))
                         if needs_projection else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.norm1(self.conv1(x))))
        y = self.norm2(self.conv2(y))
        if self.skip is not None:
            y = y + self.skip(x)
        return self.act(y)


class Up(nn.Module):
    """Upsample by ``stride`` to ``cout`` channels: transposed conv, or interpolation + 1x1 conv."""

    def __init__(self, dim: int, cin: int, cout: int, *, stride: Sequence[int], mode: str):
        super().__init__()
        self.stride = tuple(stride)
        self.mode = mode
        if mode == "transpose":
            self.op = (nn.ConvTranspose3d if dim == 3 else nn.ConvTranspose2d)(
                cin, cout, self.stride, stride=self.stride, bias=False)
        else:
            self.op = _conv(dim)(cin, cout, 1, bias=False)
        self.interp = "trilinear" if dim == 3 else "bilinear"

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if self.mode == "transpose":
            return self.op(x)
        return self.op(F.interpolate(x, size=tuple(size), mode=self.interp, align_corners=False))


class UNet(nn.Module):
    """A U-Net; see the module docstring. ``config`` keys are the constructor's arguments."""

    def __init__(self, *, dim: int, in_channels: int, out_channels: int, width: int = 32,
                 depth: int = 5, max_width: int = 320, norm: str = "instance", dropout: float = 0.0,
                 residual: bool = False, deep_supervision: bool = False,
                 upsample: str = "transpose", strides: Sequence[Sequence[int]] | None = None,
                 channels_last: bool = False):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
        if depth < 2:
            raise ValueError("depth must be at least 2")
        strides = [list(s) for s in (strides or [[2] * dim] * (depth - 1))]
        if len(strides) != depth - 1 or any(len(s) != dim for s in strides):
            raise ValueError(f"strides must be {depth - 1} lists of {dim} values")
        self.dim, self.deep_supervision = dim, deep_supervision
        self.strides = strides
        channels = [min(width * 2 ** level, max_width) for level in range(depth)]
        block = dict(norm=norm, dropout=dropout, residual=residual)
        self.encoder = nn.ModuleList([ConvBlock(dim, in_channels, channels[0], stride=[1] * dim, **block)])
        for level in range(1, depth):
            self.encoder.append(ConvBlock(dim, channels[level - 1], channels[level],
                                          stride=strides[level - 1], **block))
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            self.ups.append(Up(dim, channels[level + 1], channels[level], stride=strides[level], mode=upsample))
            self.decoder.append(ConvBlock(dim, 2 * channels[level], channels[level], stride=[1] * dim,
                                          dropout=0.0, norm=norm, residual=residual))
            if deep_supervision or level == 0:   # unused heads would stall DDP's gradient reduction
                self.heads.append(_conv(dim)(channels[level], out_channels, 1))
        self.memory_format = ((torch.channels_last_3d if dim == 3 else torch.channels_last)
                              if channels_last else torch.contiguous_format)
        if channels_last:
            self.to(memory_format=self.memory_format)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input sizes must be multiples of this per axis (the product of the strides)."""
        total = [1] * self.dim
        for level in self.strides:
            total = [t * s for t, s in zip(total, level)]
        return tuple(total)

    def _heads_by_level(self) -> list:
        """The output head of each decoder level, deepest first (``None`` where there is none)."""
        heads = list(self.heads)
        return heads if len(heads) == len(self.decoder) else [None] * (len(self.decoder) - 1) + heads

    def forward(self, x: torch.Tensor):
        x = x.contiguous(memory_format=self.memory_format)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, block, head in zip(self.ups, self.decoder, self._heads_by_level()):
            skip = skips.pop()
            x = block(torch.cat([up(x, skip.shape[2:]), skip], dim=1))
            if self.deep_supervision and self.training:
                outputs.append(head(x))
        if self.deep_supervision and self.training:
            return outputs[::-1]  # full resolution first
        return self.heads[-1](x)


@register("unet")
def build_unet(**config) -> UNet:
    """Build a :class:`UNet` from its config (the keys of its constructor)."""
    return UNet(**config)
