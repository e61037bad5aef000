"""Losses against hand-computed values and torch's own functions."""

import pytest
import torch
from torch.nn import functional as F

from medtool.errors import UsageError
from medtool.losses import CrossEntropy, DeepSupervision, Focal, RegionTargets, SoftDice, build_loss


def _logits_for(labels: torch.Tensor, channels: int, scale: float = 50.0) -> torch.Tensor:
    return F.one_hot(labels, channels).movedim(-1, 1).float() * scale


def test_perfect_prediction_scores_zero():
    target = torch.randint(0, 3, (2, 6, 6))
    logits = _logits_for(target, 3)
    for name in ("dice", "jaccard", "dice-ce"):
        assert float(build_loss(name)(logits, target)) == pytest.approx(0.0, abs=1e-4)


def test_soft_dice_hand_computed_binary():
    # sigmoid head: probabilities 0.5 everywhere over 4 voxels, truth has 1 voxel
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[1, 0], [0, 0]]])
    expected = 1 - (2 * 0.5 + 1e-5) / (0.5 * 4 + 1 + 1e-5)
    assert float(SoftDice()(logits, target)) == pytest.approx(expected, rel=1e-6)
    # Jaccard: 0.5 / (2 + 1 - 0.5)
    assert float(SoftDice(jaccard=True)(logits, target)) == pytest.approx(1 - (0.5 + 1e-5) / (2.5 + 1e-5), rel=1e-6)


def test_cross_entropy_matches_torch():
    logits, target = torch.randn(2, 1, 5, 5), torch.randint(0, 2, (2, 5, 5))
    assert float(CrossEntropy()(logits, target)) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, target[:, None].float())), rel=1e-6)
    logits, target = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    assert float(CrossEntropy()(logits, target)) == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    assert float(Focal(gamma=0)(logits, target)) == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-5)
    logits, target = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 4, 4))
    assert float(Focal(gamma=0)(logits, target)) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, target[:, None].float())), rel=1e-5)
    # focusing lowers the loss of easy voxels
    assert float(Focal(gamma=2)(logits, target)) < float(Focal(gamma=0)(logits, target))


def test_bce_dice_weights():
    logits, target = torch.randn(2, 1, 6, 6), torch.randint(0, 2, (2, 6, 6))
    ce, dice = float(CrossEntropy()(logits, target)), float(SoftDice()(logits, target))
    assert float(build_loss("bce-dice", ce_weight=0.3, dice_weight=2.0)(logits, target)) == pytest.approx(0.3 * ce + 2 * dice, rel=1e-6)


def test_deep_supervision_weights_and_downsampled_targets():
    assert DeepSupervision.weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    target = torch.randint(0, 2, (1, 8, 8))
    full, half = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4)
    loss = build_loss("dice-ce")
    small = target[:, ::2, ::2]        # nearest downsampling picks these voxels
    expected = 2 / 3 * float(loss.loss(full, target)) + 1 / 3 * float(loss.loss(half, small))
    assert float(loss([full, half], target)) == pytest.approx(expected, rel=1e-6)


def test_unknown_loss():
    with pytest.raises(UsageError, match="choose one of"):
        build_loss("hinge")


def test_sample_dice_weighs_a_small_lesion_as_much_as_a_large_one():
    # sample 0: a 60-voxel lesion found exactly; sample 1: a 4-voxel lesion missed entirely
    target = torch.zeros(2, 1, 8, 10, dtype=torch.long)
    target[0, 0, :6] = 1
    target[1, 0, 0, :4] = 1
    logits = torch.full((2, 2, 1, 8, 10), -20.0)
    logits[:, 0] = 20.0                                     # background everywhere ...
    logits[0, 0, 0, :6], logits[0, 1, 0, :6] = -20.0, 20.0  # ... but sample 0's lesion
    batch = build_loss("dice", batch_dice=True)(logits, target)
    sample = build_loss("dice", batch_dice=False)(logits, target)
    assert float(batch) == pytest.approx(1 - 2 * 60 / (60 + 64), abs=1e-4)
    assert float(sample) == pytest.approx(1 - (1.0 + 0.0) / 2, abs=1e-4)
    # a sigmoid head and the Jaccard variant take the same path
    sigmoid = build_loss("bce-dice", ce_weight=0.0, batch_dice=False)(logits[:, 1:] - logits[:, :1], target)
    assert float(sigmoid) == pytest.approx(0.5, abs=1e-4)
    assert float(build_loss("jaccard", batch_dice=False)(logits, target)) == pytest.approx(0.5, abs=1e-4)


def test_topk_cross_entropy_averages_the_hardest_voxels():
    # 10 voxels, two classes; per-voxel loss -log p(true) computed by hand from the probabilities
    import math

    p_true = [0.9, 0.8, 0.99, 0.1, 0.6, 0.95, 0.3, 0.7, 0.999, 0.5]
    target = torch.tensor([[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]])
    logit = torch.tensor([[math.log(p / (1 - p)) for p in p_true]])      # true class's margin
    logits = torch.stack([torch.where(target == 0, logit, -logit) / 2,
                          torch.where(target == 1, logit, -logit) / 2], dim=1)   # (1, 2, 10)
    hardest = sorted((-math.log(p) for p in p_true), reverse=True)
    assert float(CrossEntropy(topk=30)(logits, target)) == pytest.approx(sum(hardest[:3]) / 3, rel=1e-5)
    assert float(CrossEntropy(topk=100)(logits, target)) == pytest.approx(sum(hardest) / 10, rel=1e-5)
    # a sigmoid head: the same voxels' BCE
    sigmoid = CrossEntropy(topk=30)(logits[:, 1:] - logits[:, :1], target)
    assert float(sigmoid) == pytest.approx(sum(hardest[:3]) / 3, rel=1e-5)
    # dice-ce passes it to its cross-entropy; other losses and bad percents are usage errors
    assert build_loss("dice-ce", topk=10).loss.parts[0].topk == 10
    with pytest.raises(UsageError, match="--topk applies"):
        build_loss("dice", topk=10)
    with pytest.raises(UsageError, match="percent"):
        build_loss("dice-ce", topk=0)


def test_region_targets_are_the_regions_of_the_labels_and_train_one_sigmoid_each():
    labels = torch.tensor([[[0, 1, 2, 4]]])                                # (B=1, 1, 4)
    regions = [(1, 2, 4), (1, 4), (4,)]
    loss = RegionTargets(build_loss("dice-ce"), regions)
    targets = loss.targets(labels)
    assert targets.shape == (1, 3, 1, 4)
    assert targets[0, :, 0].tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]
    assert loss.targets(torch.tensor([[[7]]]))[0, :, 0, 0].tolist() == [0, 0, 0]   # past the table: none
    # BCE with logits per region plus 1 - the mean soft Dice over all regions (no background)
    logits = torch.randn(1, 3, 1, 4)
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    probs = torch.sigmoid(logits)
    dice = (2 * (probs * targets).sum((0, 2, 3)) + 1e-5) / ((probs + targets).sum((0, 2, 3)) + 1e-5)
    expected = expected + 1 - dice.mean()
    assert torch.allclose(loss(logits, labels), expected, atol=1e-6)
    # deep supervision: the region maps are downsampled (nearest) for the coarser output
    deep = loss([torch.zeros(1, 3, 2, 4), torch.zeros(1, 3, 1, 2)], torch.tensor([[[0, 1, 2, 4], [0, 1, 2, 4]]]))
    assert torch.isfinite(deep)
