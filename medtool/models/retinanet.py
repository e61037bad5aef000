"""RetinaNet detectors (torchvision) for one-channel images: ``resnet18-fpn``, ``resnet34-fpn``,
``resnet50-fpn``.

:class:`Detector` wraps :class:`torchvision.models.detection.RetinaNet`: a ResNet + FPN
backbone built with ``weights=None`` (nothing is ever downloaded) whose first convolution takes
``in_channels`` channels, trainable BatchNorm (frozen statistics only make sense for pretrained
weights), FPN levels P3-P7 (strides 8 to 128), anchors given per level (the detection task
plans them from the training boxes), and torchvision's focal-loss and box-regression heads.
The torchvision transform neither resizes (the images come at the model's size) nor
normalises (they come normalised).

``forward(images)`` in eval mode returns torchvision's detections (one dict of ``boxes``
``x0 y0 x1 y1``, ``scores`` and ``labels`` per image); in training mode ``forward(images,
boxes)`` with ``boxes (B, K, 4)`` padded by NaN rows returns the summed loss and its terms.

:func:`load_pretrained` loads a local state dict: a torchvision ResNet (ImageNet), a
torchvision RetinaNet (COCO) or a medtool detector; three-channel first convolutions are summed
to one channel and the class logits of another number of classes are left out.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from . import register

#: Backbones by model name (torchvision ResNet builders).
BACKBONES = {"resnet18-fpn": "resnet18", "resnet34-fpn": "resnet34", "resnet50-fpn": "resnet50"}
#: Octave scales of the anchors within one FPN level (RetinaNet's 2^0, 2^(1/3), 2^(2/3)).
OCTAVE_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
#: Anchor aspect ratios (height / width) by default.
ASPECT_RATIOS = (0.5, 1.0, 2.0)
#: Strides of the FPN levels P3 ... P7.
LEVEL_STRIDES = (8, 16, 32, 64, 128)
#: Scores kept before NMS during evaluation (predict raises it with --min-score).
SCORE_THRESHOLD = 0.05


def anchor_generator(sizes: Sequence[float], ratios: Sequence[float]):
    """torchvision's AnchorGenerator with three octave scales of each base size (one per level)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    return AnchorGenerator(tuple(tuple(float(s) * k for k in OCTAVE_SCALES) for s in sizes),
                           tuple(tuple(float(r) for r in ratios) for _ in sizes))


def _build(backbone: str, *, in_channels: int = 1, num_classes: int = 1, size: int = 256,
           anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
           anchor_ratios: Sequence[float] = ASPECT_RATIOS, fpn_width: int = 256,
           score_thresh: float = SCORE_THRESHOLD, nms_thresh: float = 0.5, detections: int = 100):
    return Detector(backbone, in_channels=in_channels, num_classes=num_classes, size=size,
                    anchor_sizes=anchor_sizes, anchor_ratios=anchor_ratios, fpn_width=fpn_width,
                    score_thresh=score_thresh, nms_thresh=nms_thresh, detections=detections)


for _name in BACKBONES:
    register(_name)(lambda _n=_name, **config: _build(BACKBONES[_n], **config))


class Detector(nn.Module):
    """A one-class (or more) RetinaNet on ``in_channels``-channel images of ``size`` pixels;
    see the module docstring."""

    def __init__(self, backbone: str = "resnet50", *, in_channels: int = 1, num_classes: int = 1,
                 size: int = 256, anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
                 anchor_ratios: Sequence[float] = ASPECT_RATIOS, fpn_width: int = 256,
                 score_thresh: float = SCORE_THRESHOLD, nms_thresh: float = 0.5, detections: int = 100):
        super().__init__()
        from torchvision.models import resnet
        from torchvision.models.detection import RetinaNet
        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        if len(anchor_sizes) != len(LEVEL_STRIDES):
            raise ValueError(f"anchor_sizes needs one size per FPN level ({len(LEVEL_STRIDES)})")
        body = getattr(resnet, backbone)(weights=None, norm_layer=nn.BatchNorm2d)
        widths = [_out_channels(getattr(body, f"layer{k}"))
                  for k in (2, 3, 4)]
        fpn = BackboneWithFPN(body, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
                              in_channels_list=widths, out_channels=fpn_width,
                              extra_blocks=LastLevelP6P7(fpn_width, fpn_width))
        old = fpn.body.conv1
        fpn.body.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size,
                                   stride=old.stride, padding=old.padding, bias=False)
        self.num_classes, self.size = num_classes, size
        # torchvision counts the background among the classes; foreground classes are 1..n
        self.net = RetinaNet(fpn, num_classes=num_classes + 1, min_size=size, max_size=size,
                             image_mean=[0.0] * in_channels, image_std=[1.0] * in_channels,
                             anchor_generator=anchor_generator(anchor_sizes, anchor_ratios),
                             score_thresh=score_thresh, nms_thresh=nms_thresh,
                             detections_per_img=detections, fixed_size=(size, size))
        # RetinaNet's prior: every anchor starts as background with probability 0.99
        prior = -math.log((1 - 0.01) / 0.01)
        nn.init.constant_(self.net.head.classification_head.cls_logits.bias, prior)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None):
        listed = list(images)
        if not self.training:
            return self.net(listed)
        if boxes is None:
            raise ValueError("training needs the boxes")
        targets = []
        for item in boxes:
            kept = item[~torch.isnan(item).any(dim=1)].float()
            targets.append({"boxes": kept, "labels": torch.ones(len(kept), dtype=torch.int64, device=item.device)})
        losses = self.net(listed, targets)
        return losses

    def settings(self, *, min_score: float | None = None, nms: float | None = None,
                 detections: int | None = None) -> None:
        """Change the post-processing: score cut before NMS, NMS IoU, detections per image."""
        if min_score is not None:
            self.net.score_thresh = float(min_score)
        if nms is not None:
            self.net.nms_thresh = float(nms)
        if detections is not None:
            self.net.detections_per_img = int(detections)


def _out_channels(layer: nn.Sequential) -> int:
    """Output channels of a ResNet stage (its last block's last convolution)."""
    block = layer[-1]
    return (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels


def detection_loss(losses: dict[str, torch.Tensor], targets=None) -> torch.Tensor:
    """The RetinaNet loss: focal classification loss plus box regression loss."""
    return sum(losses.values())


def load_pretrained(model: Detector, state: dict[str, Any]) -> dict[str, int]:
    """Load a local state dict into ``model`` (see the module docstring).

    Returns
    -------
    dict
        ``loaded``, ``skipped`` (keys of the file not used) and ``total`` (tensors of the model).

    Raises
    ------
    ValueError
        Nothing of the file fits the model.
    """
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    own = model.state_dict()
    prefixes = ("", "net.", "net.backbone.body.")       # medtool, torchvision RetinaNet, ResNet
    best: dict[str, Any] = {}
    for prefix in prefixes:
        renamed = {prefix + k: v for k, v in state.items() if prefix + k in own}
        if len(renamed) > len(best):
            best = renamed
    conv1 = "net.backbone.body.conv1.weight"
    if conv1 in best and best[conv1].shape[1] != own[conv1].shape[1] and own[conv1].shape[1] == 1:
        best[conv1] = best[conv1].sum(dim=1, keepdim=True)
    fitting = {k: v for k, v in best.items() if tuple(v.shape) == tuple(own[k].shape)}
    if not fitting:
        raise ValueError("no tensor of the file fits this model")
    model.load_state_dict(fitting, strict=False)
    return {"loaded": len(fitting), "skipped": len(state) - len(fitting), "total": len(own)}
