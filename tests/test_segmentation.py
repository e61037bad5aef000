"""Validation scores of the segmentation task: predicting nothing cannot win model selection."""

import numpy as np
import pytest
import torch
from torch import nn

from medtool.formats import save_volume
from medtool.metrics import dice
from medtool.segmentation import SegmentOptions, SegmentTask, label_counts, validation_scores
from medtool.volume import Volume


def test_label_counts_match_masks_per_label():
    truth = np.array([[0, 1, 1, 2], [2, 2, 0, 0]])
    pred = np.array([[0, 1, 0, 2], [2, 1, 1, 0]])
    sizes, predicted, both = label_counts(truth, pred, 2)
    assert sizes.tolist() == [2, 3] and predicted.tolist() == [3, 2] and both.tolist() == [1, 2]
    for label in (1, 2):       # Dice from the counts equals the metric on the masks
        i = label - 1
        assert 2 * both[i] / (sizes[i] + predicted[i]) == pytest.approx(dice(truth == label, pred == label))


def test_empty_predictions_score_zero_not_one():
    # two cases: the first holds the tumour, the second does not; the model predicts nothing
    scores = validation_scores(["tumour"], truth=np.array([[50], [0]]), pred=np.array([[0], [0]]),
                               overlap=np.array([[0], [0]]), voxel_ml=np.array([0.01, 0.01]))
    # the empty case has no Dice (truth and prediction empty): it neither helps nor hurts
    assert scores == {"dice_tumour": 0.0, "fp_ml_tumour": 0.0, "score": 0.0}


def test_false_positives_count_as_zero_dice_and_as_volume():
    # case 1: Dice 2*40/(50+50) = 0.8; case 2 (no tumour): 30 voxels predicted -> Dice 0, 0.3 ml
    scores = validation_scores(["tumour"], truth=np.array([[50], [0]]), pred=np.array([[50], [30]]),
                               overlap=np.array([[40], [0]]), voxel_ml=np.array([0.02, 0.01]))
    assert scores["dice_tumour"] == pytest.approx(0.4)
    assert scores["fp_ml_tumour"] == pytest.approx(0.3)
    # a label no case holds and none predicts has no Dice at all; the score averages the others
    two = validation_scores(["lung", "tumour"], truth=np.array([[10, 0]]), pred=np.array([[10, 0]]),
                            overlap=np.array([[10, 0]]), voxel_ml=np.array([1.0]))
    assert "dice_tumour" not in two and two["dice_lung"] == 1.0 and two["score"] == 1.0
    assert validation_scores(["tumour"], np.array([[0]]), np.array([[0]]), np.array([[0]]),
                             np.array([1.0])) == {"fp_ml_tumour": 0.0}     # no score: loop uses the loss


class _Constant(nn.Module):
    """Logits that always pick one class."""

    def __init__(self, label: int, classes: int = 2):
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.classes, *x.shape[2:])
        out[:, self.label] = 10.0
        return out


def test_validate_does_not_reward_a_model_that_predicts_nothing(tmp_path):
    cases = []
    for name, has_tumour in (("with", True), ("without", False)):
        mask = np.zeros((4, 8, 8), np.uint8)
        if has_tumour:
            mask[1:3, 2:5, 2:5] = 1
        spacing = (2.0, 1.0, 1.0)                       # 2 mm^3 voxels
        save_volume(Volume(np.zeros((4, 8, 8), np.float32), spacing), tmp_path / f"{name}_image.npy")
        save_volume(Volume(mask, spacing), tmp_path / f"{name}_mask.npy")
        cases.append({"case_id": name, "image": str(tmp_path / f"{name}_image.npy"),
                      "mask": str(tmp_path / f"{name}_mask.npy")})
    task = SegmentTask(SegmentOptions(images="i", masks="m"),
                       recipe={"dim": 3, "patch": [4, 8, 8], "classes": ["background", "tumour"],
                               "activation": "softmax"})
    task.val_cases = cases
    nothing = task.validate(_Constant(0), device=torch.device("cpu"))
    assert nothing == {"dice_tumour": 0.0, "fp_ml_tumour": 0.0, "score": 0.0}
    everything = task.validate(_Constant(1), device=torch.device("cpu"))
    # with: 2*18/(18+256); without: Dice 0 and 256 voxels of 2 mm^3 = 0.512 ml predicted
    assert everything["dice_tumour"] == pytest.approx((2 * 18 / (18 + 256) + 0) / 2)
    assert everything["fp_ml_tumour"] == pytest.approx(0.512)
    assert everything["score"] > nothing["score"]
