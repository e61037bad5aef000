"""The fingerprint and the plan of a segmentation run (medtool.plan): hand-computed values, the
keep-largest rule, determinism, given options winning, and the plan in the checkpoint used by
predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtool.plan import PlanLine, fingerprint, foreground_statistics, keep_largest
from medtool.train import load_checkpoint
from tests.layout_fixtures import write_nnunet

TINY = ("--dim", "2d", "--width", "4", "--depth", "2", "--epochs", "1", "--steps", "1", "--batch-size", "2")


def test_foreground_statistics_by_hand():
    image = np.arange(10, dtype=np.float32).reshape(2, 5)
    mask = image >= 6                                        # 6, 7, 8, 9
    stats = foreground_statistics(image, mask)
    assert stats["mean"] == 7.5 and stats["std"] == pytest.approx(np.sqrt(1.25)) and stats["voxels"] == 4
    assert stats["p00_5"] == pytest.approx(6 + 0.005 * 3) and stats["p99_5"] == pytest.approx(9 - 0.005 * 3)
    assert foreground_statistics(image, np.zeros_like(mask)) is None


def test_fingerprint_of_hand_built_entries():
    # two cases of 100 voxels at 2 mm^3: class 1 once in each (10 and 30 voxels), class 2 twice in one
    entries = [
        {"shape": [1, 10, 10], "objects": [[1, 10, 0, 0, 0, 1, 2, 5], [2, 4, 0, 5, 5, 1, 7, 7], [2, 6, 0, 8, 0, 1, 10, 3]],
         "foreground": {"mean": 1.0, "std": 0.0, "p00_5": 1.0, "p99_5": 1.0, "min": 1.0, "max": 1.0, "voxels": 20}},
        {"shape": [1, 10, 10], "objects": [[1, 30, 0, 0, 0, 1, 6, 5]],
         "foreground": {"mean": 3.0, "std": 1.0, "p00_5": 2.0, "p99_5": 4.0, "min": 0.0, "max": 5.0, "voxels": 30}},
    ]
    fp = fingerprint(entries, spacings=np.array([[2.0, 1.0, 1.0], [4.0, 1.0, 1.0]]),
                     shapes=np.array([[1, 10, 10], [1, 10, 10]]), voxel_mm3=2.0, classes=["organ", "lesion"])
    assert fp["cases"] == 2 and fp["spacing_median"] == [3.0, 1.0, 1.0]
    organ, lesion = fp["classes"]["organ"], fp["classes"]["lesion"]
    assert organ == {"voxel_share": 0.2, "cases": 2, "components_per_case_max": 1, "components_per_case_median": 1.0,
                     "object_mm3_median": 40.0, "object_mm3_min": 20.0}
    assert lesion["voxel_share"] == 0.05 and lesion["cases"] == 1 and lesion["components_per_case_max"] == 2
    assert lesion["object_mm3_median"] == 10.0
    intensity = fp["foreground_intensity"]
    assert intensity["mean"] == pytest.approx((20 * 1 + 30 * 3) / 50)
    # pooled variance: within-case variance plus the spread of the case means
    pooled = (20 * (0 + (1 - 2.2) ** 2) + 30 * (1 + (3 - 2.2) ** 2)) / 50
    assert intensity["std"] == pytest.approx(np.sqrt(pooled)) and intensity["max"] == 5.0
    assert keep_largest(fp)[0] == 0 and "lesion up to 2" in keep_largest(fp)[1]
    entries[0]["objects"] = entries[0]["objects"][:2]
    single = fingerprint(entries, spacings=np.ones((2, 3)), shapes=np.ones((2, 3)), voxel_mm3=1.0,
                         classes=["organ", "lesion"])
    assert keep_largest(single) == (1, "every training case holds one component of each class")


def test_plan_line_says_where_a_value_came_from():
    assert PlanLine("width", 8, "given", "given").describe() == "  width          8  (given)"
    assert "(planned: median of 3)" in PlanLine("spacing", [1, 2, 3], "planned", "median of 3").describe()


def test_plan_only_is_deterministic_and_given_options_win(cli, tmp_path):
    dataset = write_nnunet(tmp_path, cases=3)
    plans = []
    for run in ("a", "b"):
        result = cli("train", "segment", "--dataset", dataset, "--dim", "2d", "--plan-only", "--device", "cpu",
                     "--out", tmp_path / run)
        assert result.exit_code == 0, result.stderr
        assert not (tmp_path / run / "last.pt").exists()            # nothing trained
        plans.append(json.loads((tmp_path / run / "plan.json").read_text()))
    assert plans[0] == plans[1]
    lines = {line["name"]: line for line in plans[0]["plan"]}
    assert lines["patch"]["source"] == "planned" and lines["depth"]["source"] == "default"
    # on a CPU, what is not given follows the CPU recipe
    assert lines["width"]["value"] == 16 and lines["width"]["source"] == "planned" and "a CPU" in lines["width"]["why"]
    assert lines["batch_size"]["value"] == 8 and lines["batch_size"]["source"] == "planned"
    assert lines["dim"] == {"name": "dim", "value": "2d", "source": "given", "why": "given"}
    assert lines["keep-largest"]["value"] == 1
    result = cli("train", "segment", "--dataset", dataset, "--dim", "2d", "--patch", "1", "8", "8", "--width", "6",
                 "--batch-size", "3", "--plan-only", "--device", "cpu", "--out", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    given = {line["name"]: line for line in json.loads((tmp_path / "c" / "plan.json").read_text())["plan"]}
    assert given["patch"]["value"] == [8, 8] and given["patch"]["source"] == "given"
    assert given["width"]["value"] == 6 and given["width"]["source"] == "given"
    assert given["batch_size"]["value"] == 3 and given["batch_size"]["source"] == "given"
    assert "width          6  (given)" in result.stderr
    assert given["val_every"]["source"] == "default"
    # under --max-minutes the validation interval is paced by the budget (the plan says how)
    result = cli("train", "segment", "--dataset", dataset, "--dim", "2d", "--max-minutes", "2", "--plan-only",
                 "--device", "cpu", "--out", tmp_path / "d")
    assert result.exit_code == 0, result.stderr
    paced = {line["name"]: line for line in json.loads((tmp_path / "d" / "plan.json").read_text())["plan"]}
    assert paced["val_every"]["source"] == "planned" and "15%" in paced["val_every"]["why"]


def test_the_plan_in_the_checkpoint_is_what_predict_uses(cli, tmp_path):
    from scipy import ndimage

    from medtool.formats import load_volume

    dataset = write_nnunet(tmp_path, cases=3)
    result = cli("train", "segment", "--dataset", dataset, *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    recipe = load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]
    assert recipe["inference"]["keep_largest"] == 1
    assert [line["name"] for line in recipe["plan"]][:3] == ["dim", "spacing", "patch"]
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["plan"] == recipe["plan"]
    image = load_volume(dataset / "imagesTs" / "box_007_0000.nii.gz")
    result = cli("predict", tmp_path / "run" / "last.pt", dataset / "imagesTs", tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    assert "keep-largest 1 (planned in training: every training case holds one component" in " ".join(result.stderr.split())
    assert recipe["inference"]["interpolation"] == "nearest"           # the boxes are no small structures
    assert "--interpolation nearest (planned in training" in " ".join(result.stderr.split())
    labels = load_volume(tmp_path / "pred" / "box_007.nii.gz").array
    assert labels.shape == image.shape
    assert all(ndimage.label(labels == value)[1] <= 1 for value in (1, 2))
    again = cli("predict", tmp_path / "run" / "last.pt", dataset / "imagesTs", tmp_path / "all", "--keep-largest", "0")
    assert again.exit_code == 0 and "keep-largest 0 (planned" not in again.stderr     # a given option wins
    assert "--interpolation nearest (planned in training" in " ".join(again.stderr.split())


@pytest.mark.parametrize("code", ["RPS", "PLS", "LPI"])
def test_a_flipped_or_transposed_input_is_predicted_in_the_training_orientation(cli, tmp_path, code):
    """The same voxels stored flipped (RPS, LPI) or with y and x swapped (PLS) are reordered to
    the training orientation for the model, and the result returned onto the input's grid."""
    from medtool.formats import load_volume, save_volume

    dataset = write_nnunet(tmp_path, cases=3)
    result = cli("train", "segment", "--dataset", dataset, *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]["orientation"] == "LPS"
    image = load_volume(dataset / "imagesTs" / "box_007_0000.nii.gz")
    turned = image.reoriented(code)
    assert turned.orientation == code
    (tmp_path / "in").mkdir()
    save_volume(image, tmp_path / "in" / "a_0000.nii.gz")       # named as the nnU-Net training images
    save_volume(turned, tmp_path / "in" / "b_0000.nii.gz")
    result = cli("predict", tmp_path / "run" / "last.pt", tmp_path / "in", tmp_path / "pred", "--probabilities")
    assert result.exit_code == 0, result.stderr
    a = load_volume(tmp_path / "pred" / "a_prob_organ.nii.gz")
    b = load_volume(tmp_path / "pred" / "b_prob_organ.nii.gz")
    assert b.same_grid(turned)                                   # on the input's own grid
    np.testing.assert_allclose(b.reoriented("LPS").array, a.array, atol=1e-5)
    assert a.array.std() > 1e-4                                  # a map that could differ
    labels_a = load_volume(tmp_path / "pred" / "a.nii.gz").array
    labels_b = load_volume(tmp_path / "pred" / "b.nii.gz").reoriented("LPS").array
    np.testing.assert_array_equal(labels_a, labels_b)
    wrong = cli("predict", tmp_path / "run" / "last.pt", dataset / "labelsTr", tmp_path / "none")
    assert wrong.exit_code == 1 and "no input is named <case>_0000" in wrong.stderr


def test_small_structures_plan_linear_interpolation_on_any_device(cli, tmp_path):
    """The inference's interpolation follows the fingerprint's labelled share (not a CPU-only
    statistic): a lesion of 8 voxels in 16 x 32 x 32 cases (0.05 %) plans linear."""
    from medtool.formats import save_volume
    from medtool.volume import Volume

    dataset = tmp_path / "Dataset043_Spot"
    for sub in ("imagesTr", "labelsTr"):
        (dataset / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.normal(0, 50, (16, 32, 32)).astype(np.float32) - 800
        labels = np.zeros((16, 32, 32), np.uint8)
        labels[7 + i % 2:9 + i % 2, 10:12, 14:16] = 1
        image[labels > 0] = 40
        save_volume(Volume(image, (2.0, 1.0, 1.0)), dataset / "imagesTr" / f"spot_{i:03d}_0000.nii.gz")
        save_volume(Volume(labels, (2.0, 1.0, 1.0)), dataset / "labelsTr" / f"spot_{i:03d}.nii.gz")
    (dataset / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 3,
        "file_ending": ".nii.gz"}))
    result = cli("train", "segment", "--dataset", dataset, "--dim", "2d", "--plan-only", "--device", "cpu",
                 "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    lines = {line["name"]: line for line in json.loads((tmp_path / "run" / "plan.json").read_text())["plan"]}
    assert lines["interpolation"]["value"] == "linear" and "0.05%" in lines["interpolation"]["why"]
