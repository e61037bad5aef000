"""Segmentation losses chosen by name, for sigmoid (binary) and softmax (multi-class) heads.

=============  ===================================================================================
``bce-dice``   binary/multi-class cross-entropy plus soft Dice, weighted (``ce_weight``,
               ``dice_weight``); with a sigmoid head the cross-entropy is BCE
``dice-ce``    the same sum with equal weights (nnU-Net's default), named the MONAI way
``dice``       soft Dice over the foreground classes: batch Dice (summed over the whole batch) or,
               with ``batch_dice=False``, the mean of each sample's Dice (nnU-Net's option): a
               small lesion then weighs as much as a large one
``jaccard``    soft Jaccard (IoU) over the foreground classes
``focal``      focal loss (``gamma``, optional ``alpha`` for the foreground)
=============  ===================================================================================

``topk`` (percent, default 100) makes the cross-entropy term of ``bce-dice`` and ``dice-ce`` the
mean over only the ``topk`` % of voxels with the highest loss in the batch (nnU-Net's TopK loss,
``DC_and_topk_loss`` with k = 10): the few voxels a model gets confidently wrong, such as a false
positive on a structure that looks like the target, then carry the gradient instead of being
averaged away among the millions of easy background voxels.

A model's logits are ``(B, C, *spatial)``: ``C == 1`` with a sigmoid (binary), ``C >= 2`` with
a softmax (class 0 is background). Targets are integer label maps ``(B, *spatial)``, or ``(B, C,
*spatial)`` 0/1 maps for a multi-label head: one sigmoid per channel, each its own binary task
(the overlapping regions of BraTS; :class:`RegionTargets` makes them from label maps, nnU-Net's
region-based training). With deep
supervision the model returns a list of logits from full resolution down; :class:`DeepSupervision`
scores each against the target downsampled (nearest) to its size, with weights halving per
level, normalised to sum to 1 (nnU-Net's weighting).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: Loss names.
LOSSES = ("bce-dice", "dice-ce", "dice", "jaccard", "focal")
#: Added to numerator and denominator of the soft Dice / Jaccard (keeps empty classes finite).
SMOOTH = 1e-5
#: Focal loss exponent by default.
FOCAL_GAMMA = 2.0


def _multilabel(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """True for 0/1 targets with a channel per logit (multi-label sigmoid heads)."""
    return target.ndim == logits.ndim


def probabilities(logits: torch.Tensor, *, multilabel: bool = False) -> torch.Tensor:
    """Sigmoid for a 1-channel or multi-label head, softmax over channels otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 or multilabel else torch.softmax(logits, dim=1)


def one_hot(target: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, *spatial)`` labels as ``(B, channels, *spatial)`` floats (1 channel: label > 0);
    multi-label targets ``(B, channels, *spatial)`` as they are."""
    if target.ndim > 1 and target.shape[1:2] == (channels,) and target.dtype.is_floating_point:
        return target.float()
    if channels == 1:
        return (target > 0).unsqueeze(1).float()
    return F.one_hot(target.long(), channels).movedim(-1, 1).float()


def _overlap(probs: torch.Tensor, truth: torch.Tensor, *, batch: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and sum of sizes per channel, over the batch and space (batch Dice), or per
    sample and channel over space (``batch=False``)."""
    dims = [*([0] if batch else []), *range(2, probs.ndim)]
    return (probs * truth).sum(dims), (probs + truth).sum(dims)


def _foreground(values: torch.Tensor) -> torch.Tensor:
    """Drop the background channel of a softmax head (a sigmoid head has none)."""
    return values if values.shape[0] == 1 else values[1:]


class SoftDice(nn.Module):
    """``1 - mean soft Dice`` over the foreground classes (``jaccard=True``: soft IoU)."""

    def __init__(self, *, jaccard: bool = False, batch: bool = True):
        super().__init__()
        self.jaccard, self.batch = jaccard, batch

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        multilabel = _multilabel(logits, target)
        probs = probabilities(logits.float(), multilabel=multilabel)
        truth = one_hot(target, logits.shape[1])
        intersection, total = _overlap(probs, truth, batch=self.batch)
        if self.jaccard:
            score = (intersection + SMOOTH) / (total - intersection + SMOOTH)
        else:
            score = (2 * intersection + SMOOTH) / (total + SMOOTH)
        score = score if self.batch else score.T
        return 1 - (score if multilabel else _foreground(score)).mean()


class CrossEntropy(nn.Module):
    """BCE for a sigmoid head, categorical cross-entropy for a softmax head; with ``topk`` < 100
    the mean over the ``topk`` % of voxels with the highest loss in the batch."""

    def __init__(self, *, topk: float = 100.0):
        super().__init__()
        self.topk = float(topk)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        reduction = "mean" if self.topk >= 100 else "none"
        if _multilabel(logits, target):
            loss = F.binary_cross_entropy_with_logits(logits, target.float(), reduction=reduction)
        elif logits.shape[1] == 1:
            loss = F.binary_cross_entropy_with_logits(logits, one_hot(target, 1), reduction=reduction)
        else:
            loss = F.cross_entropy(logits, target.long(), reduction=reduction)
        if reduction == "mean":
            return loss
        loss = loss.reshape(-1)
        keep = max(1, int(round(loss.numel() * self.topk / 100)))
        return loss.topk(keep, sorted=False).values.mean()


class Focal(nn.Module):
    """Focal loss ``-(1 - p_t)^gamma log p_t``; ``alpha`` weighs the foreground (1 - alpha background)."""

    def __init__(self, *, gamma: float = FOCAL_GAMMA, alpha: float | None = None):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 1 or _multilabel(logits, target):
            truth = one_hot(target, logits.shape[1])
            log_p = F.logsigmoid(torch.where(truth > 0, logits, -logits))  # log p_t
            foreground = truth
        else:
            log_p = torch.log_softmax(logits, dim=1).gather(1, target.long().unsqueeze(1))
            foreground = (target > 0).unsqueeze(1).float()
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * (self.alpha * foreground + (1 - self.alpha) * (1 - foreground))
        return loss.mean()


class Weighted(nn.Module):
    """A weighted sum of losses."""

    def __init__(self, parts: Sequence[tuple[float, nn.Module]]):
        super().__init__()
        self.weights = [w for w, _ in parts]
        self.parts = nn.ModuleList([m for _, m in parts])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * m(logits, target) for w, m in zip(self.weights, self.parts))


class DeepSupervision(nn.Module):
    """Apply ``loss`` to each output of a deep-supervised model, weights halving per level."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    @staticmethod
    def weights(levels: int) -> list[float]:
        raw = [0.5 ** i for i in range(levels)]
        return [w / sum(raw) for w in raw]

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        total = 0.0
        for weight, logits in zip(self.weights(len(outputs)), outputs):
            small = target
            multilabel = _multilabel(logits, target)
            if logits.shape[2:] != target.shape[2 if multilabel else 1:]:
                stack = target.float() if multilabel else target[:, None].float()
                small = F.interpolate(stack, size=logits.shape[2:], mode="nearest")
                small = small if multilabel else small[:, 0].to(target.dtype)
            total = total + weight * self.loss(logits, small)
        return total


class RegionTargets(nn.Module):
    """``loss`` of a multi-label head against the regions of integer label maps: region ``r``
    is 1 where the label is one of ``regions[r]`` (a lookup table on the device)."""

    def __init__(self, loss: nn.Module, regions: Sequence[Sequence[int]]):
        super().__init__()
        self.loss = loss
        top = max(max(r) for r in regions)
        table = torch.zeros(len(regions), top + 1)
        for index, members in enumerate(regions):
            table[index, list(members)] = 1.0
        self.register_buffer("table", table, persistent=False)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B, *spatial)`` labels as ``(B, R, *spatial)`` region maps (labels past the table: 0)."""
        labels = labels.long().clamp(0, self.table.shape[1])
        table = torch.cat([self.table, torch.zeros_like(self.table[:, :1])], dim=1).to(labels.device)
        return table[:, labels].movedim(0, 1)

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, self.targets(target))


def check_loss(name: str, *, ce_weight: float = 1.0, dice_weight: float = 1.0, topk: float = 100.0) -> None:
    """Raise :class:`~medtool.errors.UsageError` for an unknown loss or impossible settings."""
    from .errors import UsageError, check_choice

    check_choice("--loss", name, LOSSES)
    if ce_weight < 0 or dice_weight < 0:
        raise UsageError("loss weights must not be negative")
    if not 0 < topk <= 100:
        raise UsageError(f"--topk {topk:g}: give a percent of voxels in (0, 100]")
    if topk < 100 and name not in ("bce-dice", "dice-ce"):
        raise UsageError(f"--topk applies to the cross-entropy of bce-dice and dice-ce, not --loss {name}")


def build_loss(name: str, *, ce_weight: float = 1.0, dice_weight: float = 1.0,
               gamma: float = FOCAL_GAMMA, alpha: float | None = None, batch_dice: bool = True,
               topk: float = 100.0) -> nn.Module:
    """The loss ``name`` (see the module docstring), wrapped for deep supervision; ``batch_dice``
    chooses batch or per-sample Dice / Jaccard, ``topk`` the percent of hardest voxels the
    cross-entropy term averages over.

    Raises
    ------
    UsageError
        Unknown name, negative weights, or ``topk`` outside (0, 100] or with a loss without
        cross-entropy.
    """
    check_loss(name, ce_weight=ce_weight, dice_weight=dice_weight, topk=topk)
    if name == "bce-dice":
        loss = Weighted([(ce_weight, CrossEntropy(topk=topk)), (dice_weight, SoftDice(batch=batch_dice))])
    elif name == "dice-ce":
        loss = Weighted([(1.0, CrossEntropy(topk=topk)), (1.0, SoftDice(batch=batch_dice))])
    elif name == "dice":
        loss = SoftDice(batch=batch_dice)
    elif name == "jaccard":
        loss = SoftDice(jaccard=True, batch=batch_dice)
    else:
        loss = Focal(gamma=gamma, alpha=alpha)
    return DeepSupervision(loss)
