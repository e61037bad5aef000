"""Classification CNNs for 2D images and 3D volumes: the seeds' compact net and 3D ResNets.

``simple3d`` is the seeds' compact classifier: three blocks of convolution, batch norm, ReLU and
max pooling (``features.block1`` .. ``block3``, widths ``width``, ``2 width``, ``4 width``), then
global pooling (average, maximum or both: ``pool``), dropout and a linear layer (``head``). ``resnet3d-10`` and
``resnet3d-18`` are ResNets with BasicBlocks (1 or 2 per stage, as in MedicalNet and
torchvision's r3d): a stem (``features.stem``: convolution, batch norm, ReLU, max pooling), stages
``features.layer1`` .. ``layer4`` (widths ``width`` .. ``8 width``) and the same head.

Every model takes ``dim`` (2 or 3: ``Conv2d`` or ``Conv3d`` throughout) and per-level
``strides`` planned from the input size by :func:`plan_pooling`: an axis is halved only while
it stays at least 4 voxels long, so a thin stack of slices is not pooled away and the last
feature map keeps a spatial extent (what Grad-CAM looks at: ``model.cam_layer`` names that
layer). The output is ``(N, num_classes)`` logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import register
from .unet import plan_strides

#: Blocks of the simple CNN and BasicBlocks per stage of each ResNet depth.
SIMPLE_BLOCKS = 3
RESNET_STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2)}
#: Downsampling steps of a ResNet: stem convolution, stem pooling, stages 2 to 4.
RESNET_DOWNSAMPLINGS = 5
#: Kernel of the stem convolution along an axis it downsamples (3 along the others).
STEM_KERNEL = 7
#: Default dropout before the linear layer.
HEAD_DROPOUT = 0.3
#: Global pooling of the head: the average (the seeds' net and checkpoints written before the
#: choice existed), the maximum, or both side by side (a small object in a large volume moves
#: the maximum of a feature but hardly its average).
POOLS = ("avg", "max", "avgmax")


def plan_pooling(shape: Sequence[int], levels: int) -> list[list[int]]:
    """Per-axis strides of ``levels`` downsampling steps for an input of ``shape`` (2 on an
    axis while it stays at least 4 voxels, else 1; see :func:`medtool.models.unet.plan_strides`)."""
    return plan_strides(list(shape), levels + 1)


def _layers(dim: int):
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if dim == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d
    return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d


def _check_strides(strides: Sequence[Sequence[int]], levels: int, dim: int) -> list[list[int]]:
    strides = [list(s) for s in strides]
    if len(strides) != levels or any(len(s) != dim for s in strides):
        raise ValueError(f"strides needs {levels} lists of {dim} values, got {strides}")
    return strides


class Head(nn.Module):
    """Global pooling (``pool``: one of :data:`POOLS`), dropout, linear."""

    def __init__(self, dim: int, channels: int, num_classes: int, dropout: float, pool: str = "avg"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.kind = pool
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * (2 if pool == "avgmax" else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(x, 2)
        parts = {"avg": [flat.mean(2)], "max": [flat.amax(2)], "avgmax": [flat.mean(2), flat.amax(2)]}[self.kind]
        return self.fc(self.dropout(torch.cat(parts, 1)))


class SimpleBlock(nn.Module):
    """Convolution (3), batch norm, ReLU, max pooling by ``stride``."""

    def __init__(self, dim: int, cin: int, cout: int, stride: Sequence[int]):
        super().__init__()
        conv, norm, pool = _layers(dim)
        self.conv = conv(cin, cout, 3, padding=1, bias=False)
        self.norm = norm(cout)
        self.act = nn.ReLU(inplace=True)
        self.pool = pool(tuple(stride), tuple(stride)) if max(stride) > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class SimpleCNN(nn.Module):
    """The seeds' compact classifier (see the module docstring)."""

    def __init__(self, *, dim: int = 3, in_channels: int = 1, num_classes: int = 2, width: int = 16,
                 dropout: float = HEAD_DROPOUT, strides: Sequence[Sequence[int]] | None = None,
                 pool: str = "avg"):
        super().__init__()
        strides = _check_strides(strides or [[2] * dim] * SIMPLE_BLOCKS, SIMPLE_BLOCKS, dim)
        widths = [width * 2 ** i for i in range(SIMPLE_BLOCKS)]
        blocks, cin = {}, in_channels
        for index, (cout, stride) in enumerate(zip(widths, strides), start=1):
            blocks[f"block{index}"] = SimpleBlock(dim, cin, cout, stride)
            cin = cout
        self.features = nn.Sequential()
        for name, block in blocks.items():
            self.features.add_module(name, block)
        self.head = Head(dim, cin, num_classes, dropout, pool)
        self.cam_layer = f"features.block{SIMPLE_BLOCKS}.conv"
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3(x3) convolutions with batch norm and a shortcut (1x1 convolution when the
    shape changes), ReLU after the sum."""

    def __init__(self, dim: int, cin: int, cout: int, stride: Sequence[int]):
        super().__init__()
        conv, norm, _ = _layers(dim)
        stride = tuple(stride)
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.norm2 = norm(cout)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if max(stride) > 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with BasicBlocks in 2D or 3D (see the module docstring)."""

    def __init__(self, *, depth: int = 18, dim: int = 3, in_channels: int = 1, num_classes: int = 2,
                 width: int = 32, dropout: float = HEAD_DROPOUT,
                 strides: Sequence[Sequence[int]] | None = None, pool: str = "avg"):
        super().__init__()
        if depth not in RESNET_STAGES:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
        strides = _check_strides(strides or [[2] * dim] * RESNET_DOWNSAMPLINGS, RESNET_DOWNSAMPLINGS, dim)
        conv, norm, max_pool = _layers(dim)
        stem_stride, pool_stride, *stage_strides = strides
        kernel = tuple(STEM_KERNEL if s > 1 else 3 for s in stem_stride)
        self.features = nn.Sequential()
        self.features.add_module("stem", nn.Sequential(
            conv(in_channels, width, kernel, stride=tuple(stem_stride), padding=tuple(k // 2 for k in kernel),
                 bias=False),
            norm(width), nn.ReLU(inplace=True),
            max_pool(3, stride=tuple(pool_stride), padding=1)))
        cin = width
        for index, blocks in enumerate(RESNET_STAGES[depth]):
            cout = width * 2 ** index
            stride = [1] * dim if index == 0 else stage_strides[index - 1]
            stage = nn.Sequential(*[BasicBlock(dim, cin if b == 0 else cout, cout, stride if b == 0 else [1] * dim)
                                    for b in range(blocks)])
            self.features.add_module(f"layer{index + 1}", stage)
            cin = cout
        self.head = Head(dim, cin, num_classes, dropout, pool)
        self.cam_layer = f"features.layer4.{RESNET_STAGES[depth][-1] - 1}.conv2"
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _init(model: nn.Module) -> None:
    """He initialisation of convolutions (as torchvision's ResNets), unit batch norms."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


#: Downsampling steps of each classifier, for :func:`plan_pooling`.
LEVELS = {"simple3d": SIMPLE_BLOCKS, "resnet3d-10": RESNET_DOWNSAMPLINGS, "resnet3d-18": RESNET_DOWNSAMPLINGS}
#: Default first-level width of each classifier.
DEFAULT_WIDTH = {"simple3d": 16, "resnet3d-10": 32, "resnet3d-18": 32}


@register("simple3d")
def build_simple(**config) -> SimpleCNN:
    return SimpleCNN(**config)


@register("resnet3d-10")
def build_resnet10(**config) -> ResNet:
    return ResNet(depth=10, **config)


@register("resnet3d-18")
def build_resnet18(**config) -> ResNet:
    return ResNet(depth=18, **config)
