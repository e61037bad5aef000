"""The segmentation task: validation scores (predicting nothing cannot win model selection) and
how predictions return to the input's grid."""

import numpy as np
import pytest
import torch
from torch import nn

from medtool.errors import UsageError
from medtool.formats import save_volume
from medtool.metrics import dice
from medtool.segmentation import (PredictSettings, SegmentOptions, SegmentTask, label_counts, predict_volume,
                                  prepare_image, validation_scores)
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


class _Affine(torch.nn.Module):
    """Logits ``scale * image + shift`` per channel: probabilities a hand-checkable function of
    the (model-space) image."""

    def __init__(self, scales, shifts):
        super().__init__()
        self.scales = torch.tensor(scales, dtype=torch.float32)[None, :, None, None, None]
        self.shifts = torch.tensor(shifts, dtype=torch.float32)[None, :, None, None, None]

    def forward(self, x):
        return x * self.scales + self.shifts


def _ramp(shape=(3, 5, 24)) -> Volume:
    """An image rising along x, 1 mm voxels (the model's grid below has 2 mm along x)."""
    x = np.linspace(-1.0, 1.3, shape[2], dtype=np.float32)
    return Volume(np.broadcast_to(x, shape).copy(), (1.0, 1.0, 1.0))


def _recipe(classes, activation):
    return {"dim": 3, "patch": [3, 8, 8], "spacing": [1.0, 1.0, 2.0], "normalize": {"mode": "none"},
            "classes": classes, "activation": activation}


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_linear_interpolation_thresholds_the_interpolated_probability(activation):
    image = _ramp()
    if activation == "sigmoid":
        model, classes = _Affine([8.0], [-0.5]), ["background", "tumour"]
    else:
        model, classes = _Affine([0.0, 8.0], [0.5, 0.0]), ["background", "tumour"]
    recipe = _recipe(classes, activation)
    prepared = prepare_image(image, recipe)
    assert prepared.shape == (3, 5, 12)
    p_model = 1 / (1 + np.exp(-(8.0 * prepared.array[0, 0] - 0.5)))    # p(tumour) on the model's x
    # model voxel j lies at 0.5 + 2 j mm (centred grid), so input voxel i is at (i - 0.5) / 2;
    # outside the model's centres the edge value is kept (np.interp clamps the same way)
    expected = np.interp((np.arange(24) - 0.5) / 2, np.arange(12), p_model) >= 0.5
    labels, _ = predict_volume(model, image, recipe, PredictSettings(interpolation="linear"),
                               device=torch.device("cpu"))
    assert labels.shape == image.shape and labels.same_grid(image)
    assert np.array_equal(labels.array, np.broadcast_to(expected, image.shape).astype(np.uint8))
    nearest, _ = predict_volume(model, image, recipe, PredictSettings(), device=torch.device("cpu"))
    # nearest neighbour puts the boundary one input voxel further right (between model voxels)
    assert int(labels.array.sum()) - int(nearest.array.sum()) == 3 * 5


def test_linear_interpolation_keeps_the_largest_component_and_the_threshold():
    image = _ramp((4, 6, 24))
    image.array[:, :, 2:4] = 5.0                                 # a small bright blob at the left
    recipe = _recipe(["background", "tumour"], "sigmoid")
    model = _Affine([8.0], [-1.5])
    cpu = torch.device("cpu")
    both, _ = predict_volume(model, image, recipe, PredictSettings(interpolation="linear"), device=cpu)
    largest, maps = predict_volume(model, image, recipe,
                                   PredictSettings(interpolation="linear", keep_largest=1, probabilities=True),
                                   device=cpu)
    assert both.array[:, :, 2].all() and not largest.array[:, :, :6].any()
    assert np.array_equal(largest.array[:, :, 6:], both.array[:, :, 6:])
    assert maps[0].array[:, :, 2].min() > 0.5                   # the maps are the raw probabilities
    low, _ = predict_volume(model, image, recipe, PredictSettings(interpolation="linear", threshold=0.2),
                            device=cpu)
    assert np.array_equal(low.array, (maps[0].array >= 0.2).astype(np.uint8))


def test_linear_interpolation_on_the_model_grid_is_the_arg_max():
    image = Volume(_ramp().array, (1.0, 1.0, 2.0))
    recipe = _recipe(["background", "a", "b"], "softmax")
    model = _Affine([0.0, 4.0, -4.0], [0.0, -1.0, -1.0])
    cpu = torch.device("cpu")
    linear, _ = predict_volume(model, image, recipe, PredictSettings(interpolation="linear"), device=cpu)
    nearest, _ = predict_volume(model, image, recipe, PredictSettings(), device=cpu)
    assert np.array_equal(linear.array, nearest.array) and set(np.unique(linear.array)) == {0, 1, 2}


def test_unknown_or_out_of_range_settings_are_refused():
    with pytest.raises(UsageError, match="--interpolation cubic"):
        PredictSettings(interpolation="cubic")
    with pytest.raises(UsageError, match="--blend median"):
        PredictSettings(blend="median")
    with pytest.raises(UsageError, match="--overlap"):
        PredictSettings(overlap=1.0)
    with pytest.raises(UsageError, match="--threshold"):
        PredictSettings(threshold=0.0)


def test_the_cache_lists_objects_and_paste_takes_hu(tmp_path):
    from .segdata import write_ball_dataset

    images, masks = write_ball_dataset(tmp_path, cases=2)
    options = SegmentOptions(images=str(images), masks=str(masks), patch=[8, 16, 16], depth=2,
                             aug=["paste=0.5", "paste_scale=0.6,0.9", "paste_into=-1000,-300"])
    task = SegmentTask(options)
    task.prepare(tmp_path / "cache", seed=0)
    for entry in task.train_cases + task.val_cases:
        mask = np.load(entry["mask"])
        [[value, voxels, *box]] = entry["objects"]              # one ball each
        assert value == 1 and voxels == int(mask.sum()) > 0
        assert box == [*np.argwhere(mask).min(0), *(np.argwhere(mask).max(0) + 1)]
    dataset = task.dataset(length=2, seed=0)
    # the CT window -1000..400 HU maps to 0..1
    assert dataset.paste.probability == 0.5 and dataset.paste.scale == (0.6, 0.9)
    assert dataset.paste.into == pytest.approx((0.0, 0.5))
    with pytest.raises(UsageError, match="paste_scale"):
        SegmentOptions(images="i", masks="m", aug=["paste_scale=0,1"]).check()
    with pytest.raises(UsageError, match="paste=2"):
        SegmentOptions(images="i", masks="m", aug=["paste=2"]).check()


def _cases_with_share(folder, shares, shape=(10, 20, 20)):
    """Images and masks under ``folder`` whose masks label the first ``share`` of the voxels."""
    (folder / "img").mkdir(parents=True)
    (folder / "mask").mkdir()
    for i, share in enumerate(shares):
        image = np.zeros(shape, dtype=np.int16)
        mask = np.zeros(image.size, dtype=np.uint8)
        mask[: round(share * image.size)] = 1
        save_volume(Volume(image, (2.0, 1.0, 1.0)), folder / "img" / f"c{i}.npy")
        save_volume(Volume(mask.reshape(shape), (2.0, 1.0, 1.0)), folder / "mask" / f"c{i}.npy")
    return folder


def test_the_foreground_share_is_the_median_case_share(tmp_path):
    from medtool.datasets import match_cases
    from medtool.segmentation import structure_statistics

    folder = _cases_with_share(tmp_path, [0.001, 0.25, 0.5])      # 4, 1000 and 2000 of 4000 voxels
    assert structure_statistics(match_cases(folder / "img", folder / "mask")) == (0.25, None)
    assert structure_statistics([]) == (None, None)


def test_paste_range_is_the_widened_quartiles_around_the_objects(tmp_path):
    """One labelled voxel at the centre of an 11^3 CT whose HU grow 10 per column: its
    2-voxel shell (an L1 ball, 24 voxels) holds -970 once, -960 five times, -950 twelve
    times, -940 five times and -930 once; quartiles -952.5 and -947.5, IQR 5, widened by 3 IQR
    -> (-968, -932) after rounding outwards."""
    from medtool.datasets import match_cases
    from medtool.segmentation import structure_statistics

    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    image = np.broadcast_to(-1000 + 10 * np.arange(11, dtype=np.int16), (11, 11, 11)).copy()
    mask = np.zeros((11, 11, 11), np.uint8)
    mask[5, 5, 5] = 1
    save_volume(Volume(image, (1.0, 1.0, 1.0), meta={"units": "HU"}), tmp_path / "img" / "c0.npy")
    save_volume(Volume(mask, (1.0, 1.0, 1.0)), tmp_path / "mask" / "c0.npy")
    cases = match_cases(tmp_path / "img", tmp_path / "mask")
    share, into = structure_statistics(cases)
    assert share == 1 / 11 ** 3 and into == (-968.0, -932.0)
    assert structure_statistics(cases, paste=False) == (share, None)
    save_volume(Volume(image, (1.0, 1.0, 1.0)), tmp_path / "img" / "c0.npy", force=True)
    assert structure_statistics(cases) == (share, None)  # not HU: no units to plan in

    options = SegmentOptions(images=str(tmp_path / "img"), masks=str(tmp_path / "mask"), given=[])
    save_volume(Volume(image, (1.0, 1.0, 1.0), meta={"units": "HU"}), tmp_path / "img" / "c0.npy", force=True)
    from medtool.train import TrainConfig

    task = SegmentTask(options)
    task.plan_device(TrainConfig(given=[]), torch.device("cpu"))
    assert options.aug[-1] == "paste_into=-968,-932" and "shell" in task.device_choices["aug"]
    options = SegmentOptions(images=str(tmp_path / "img"), masks=str(tmp_path / "mask"),
                             given=["aug"], aug=["flip=0.5"])
    SegmentTask(options).plan_device(TrainConfig(given=[]), torch.device("cpu"))
    assert options.aug == ["flip=0.5"]                  # a given --aug is kept whole


def test_the_cpu_plan_takes_the_tumour_recipe_for_small_structures(tmp_path):
    from medtool.segmentation import CPU_PLAN, CPU_SMALL_LOOP_PLAN, CPU_SMALL_PLAN
    from medtool.train import TrainConfig

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    small = _cases_with_share(tmp_path / "small", [0.001, 0.002, 0.004])
    large = _cases_with_share(tmp_path / "large", [0.1, 0.2, 0.3])

    def planned(folder, device, given=(), loop_given=(), **values):
        options = SegmentOptions(images=str(folder / "img"), masks=str(folder / "mask"),
                                 given=list(given), **values)
        config = TrainConfig(given=list(loop_given), **{k: 64 for k in loop_given if k == "batch_size"})
        task = SegmentTask(options)
        task.plan_device(config, device)
        assert getattr(task, "small_structures", False) == (folder.name == "small" and device.type == "cpu")
        return options, config

    options, config = planned(small, cpu)
    assert (options.dim, options.patch, options.width, options.depth) == (3, [24, 64, 64], 8, 4)
    assert options.deep_supervision and not options.batch_dice and "paste=0.5" in options.aug
    assert (config.batch_size, config.steps_per_epoch, config.lr) == (
        CPU_SMALL_LOOP_PLAN["batch_size"], CPU_SMALL_LOOP_PLAN["steps_per_epoch"], CPU_SMALL_LOOP_PLAN["lr"])
    options, config = planned(large, cpu)
    assert (options.dim, options.width, options.patch) == (CPU_PLAN["dim"], CPU_PLAN["width"], None)
    options, config = planned(small, cpu, given=["width"], loop_given=["batch_size"], width=24)
    assert options.width == 24 and config.batch_size == 64 and options.depth == CPU_SMALL_PLAN["depth"]
    options, _ = planned(small, cpu, given=["patch"], patch=[32, 32], dim=2)
    assert options.dim == 2 and options.patch == [32, 32]       # a given patch keeps its dim
    options, _ = planned(small, cpu, given=["dim"], dim=2)
    assert options.dim == 2 and options.patch is None and options.width == 8   # and a given dim its patch
    options, _ = planned(small, cuda)
    assert (options.dim, options.width, options.patch) == (3, 32, None)       # the defaults stand


def test_structure_statistics_of_a_four_d_image_plan_no_paste_targets(tmp_path):
    """A multi-channel 4D image (a Decathlon brain case) cannot be read as one volume in HU:
    the paste range is left unplanned, the share is still given (no error)."""
    import nibabel as nib

    from medtool.datasets import match_cases
    from medtool.segmentation import structure_statistics

    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((11, 11, 11, 4), np.float32), np.eye(4)), tmp_path / "img" / "c0.nii.gz")
    mask = np.zeros((11, 11, 11), np.uint8)
    mask[5, 5, 5] = 1
    save_volume(Volume(mask, (1.0, 1.0, 1.0)), tmp_path / "mask" / "c0.nii.gz")
    cases = match_cases(tmp_path / "img", tmp_path / "mask")
    assert structure_statistics(cases) == (1 / 11 ** 3, None)
