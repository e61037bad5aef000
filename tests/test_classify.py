"""Classification task: it learns on phantom CT, metrics match scikit-learn, the checkpoint
reproduces its validation, and bad inputs stop before any training."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from medtool.classify import ClassifyOptions, class_weights, evaluate, match_labels, read_labels
from medtool.errors import InputError, UsageError
from medtool.formats import save_volume
from medtool.train import LAST, TrainConfig, build_model, fit, load_checkpoint, make_task
from medtool.volume import Volume

from .classdata import write_class_dataset

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from typer.testing import CliRunner

    from medtool.cli import app

    runner = CliRunner()
    return write_class_dataset(tmp_path_factory.mktemp("classify"),
                               lambda *a: runner.invoke(app, [str(x) for x in a]))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    crops, labels, folds = data
    run = tmp_path_factory.mktemp("run") / "run"
    options = ClassifyOptions(images=str(crops), labels=str(labels), folds=str(folds), fold=0,
                              augment="none", width=8, dropout=0.0)
    task = make_task("classify", options)
    config = TrainConfig(epochs=12, steps_per_epoch=0, batch_size=3, lr=3e-3, schedule="constant", seed=1)
    summary = fit(task, config, run, device=CPU, progress=False)
    return task, run, summary


def test_it_learns_the_training_cases(trained):
    task, run, summary = trained
    model = build_model(load_checkpoint(run / LAST))
    truth = np.array([c["label"] for c in task.train_cases])
    assert set(truth) == {0, 1}
    probs = task.probabilities(model, task.train_cases, device=CPU)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    metrics = evaluate(truth, probs)
    # above chance on the training set (chance: balanced accuracy and AUC 0.5)
    assert metrics["balanced-accuracy"] > 0.5 and metrics["auc"] > 0.5
    # the metrics are scikit-learn's
    pred = probs.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert metrics["balanced-accuracy"] == pytest.approx(balanced_accuracy_score(truth, pred))
    assert metrics["auc"] == pytest.approx(roc_auc_score(truth, probs[:, 1]))


def test_checkpoint_holds_the_recipe_and_reproduces_validation(trained):
    task, run, summary = trained
    checkpoint = load_checkpoint(run / LAST)
    recipe = checkpoint["recipe"]
    assert recipe["classes"] == ["0", "1"] and recipe["dim"] == 3
    assert recipe["shape"] == [12, 32, 32] and recipe["spacing"] == [None, None, None]   # taken as they are
    assert recipe["normalize"]["mode"] == "ct"
    plan = {line["name"]: line for line in recipe["plan"]}
    assert list(plan)[:5] == ["dim", "crop", "spacing", "shape", "normalize"]
    assert plan["crop"]["value"] == "none" and plan["crop"]["why"] == "volumes of one shape: taken as they are"
    assert plan["spacing"]["source"] == "planned" and plan["spacing"]["why"] == "volumes of one shape: taken as they are"
    assert plan["shape"]["value"] == [12, 32, 32] and plan["width"]["value"] == 8
    assert checkpoint["model"]["name"] == "simple3d" and checkpoint["model"]["config"]["num_classes"] == 2
    # one pass over 3 training cases in batches of 3 is 1 batch: the floor of 10 applies
    assert checkpoint["training"]["config"]["steps_per_epoch"] == 10
    again = task.validate(build_model(checkpoint), device=CPU)
    assert again == pytest.approx(checkpoint["metrics"])
    assert set(checkpoint["metrics"]) == {"accuracy", "balanced-accuracy", "auc", "score"}


def test_balanced_class_weights_are_sklearns():
    from sklearn.utils.class_weight import compute_class_weight

    labels = [0, 0, 0, 1, 2, 2]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(labels))
    assert class_weights("balanced", labels, ["a", "b", "c"]) == pytest.approx(expected)
    assert class_weights("none", labels, ["a", "b", "c"]) == [1.0, 1.0, 1.0]
    assert class_weights("1,2,3", labels, ["a", "b", "c"]) == [1.0, 2.0, 3.0]
    with pytest.raises(UsageError, match="no training case of class c"):
        class_weights("balanced", [0, 1], ["a", "b", "c"])
    with pytest.raises(UsageError, match="2 weights for 3 classes"):
        class_weights("1,2", labels, ["a", "b", "c"])


def test_labels_must_match_the_images(tmp_path):
    for case in ("a", "b", "c"):
        save_volume(Volume(np.zeros((4, 8, 8), np.int16)), tmp_path / "img" / f"{case}_masked.npy")
    save_volume(Volume(np.zeros((4, 8, 8), np.uint8)), tmp_path / "img" / "a.npy")   # not an image
    table = tmp_path / "labels.csv"
    table.write_text("case_id,label\na,1\nb,0\nd,1\n")
    labels = read_labels(table, id_column="case_id", label_column="label")
    with pytest.raises(InputError) as error:
        match_labels(tmp_path / "img", table, labels, "_masked")
    text = str(error.value)
    assert "1 images have no label (c)" in text and "1 labels have no image (d)" in text
    table.write_text("case_id,label\na,1\nb,0\nc,1\n")
    cases = match_labels(tmp_path / "img", table, read_labels(table, id_column="case_id", label_column="label"),
                         "_masked")
    assert [c.case_id for c in cases] == ["a", "b", "c"]
    table.write_text("case_id,label\na,1\na,0\n")
    with pytest.raises(InputError, match="line 3: case a is listed twice"):
        read_labels(table, id_column="case_id", label_column="label")
    with pytest.raises(InputError, match="no column 'outcome'"):
        read_labels(table, id_column="case_id", label_column="outcome")


def test_recipe_shape_crops_and_pads_about_the_centre():
    from medtool.segmentation import to_model_space

    array = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    volume = Volume(array, spacing=(2.0, 1.0, 1.0), origin=(10.0, 20.0, 30.0))
    out = to_model_space(volume, {"spacing": [None, None, None], "shape": [2, 8, 4]})
    assert out.shape == (2, 8, 4)
    # the same voxels: z 1..2, y padded by one on each side, x 1..4 (hand-computed)
    assert np.array_equal(out.array[:, 1:7, :], array[1:3, :, 1:5])
    assert np.all(out.array[:, 0] == array.min()) and np.all(out.array[:, 7] == array.min())
    # origin in LPS (x, y, z): x one column in, y one row out, z one slice (2 mm) in
    assert np.allclose(out.origin, (10.0 + 1.0, 20.0 - 1.0, 30.0 + 2.0))


def test_fit_budget_coarsens_the_finest_axes_first():
    from medtool.classify import fit_budget

    # 300 x 200 x 200 mm at 5 x 1 x 1: 2.4 M voxels. 100,000 allowed: in-plane to c with z kept
    # at 5: 60 * (200 / c)^2 <= 100,000 gives c = 4.899 -> 4.90 (below 5, so z stays).
    spacing, changed = fit_budget([5.0, 1.0, 1.0], [300.0, 200.0, 200.0], 100_000)
    assert changed and spacing == [5.0, 4.9, 4.9]
    # 20,000 allowed: 60 * (200 / c)^2 <= 20,000 gives c = 10.95, past 5, so all three axes go
    # to c with 12,000,000 / c^3 <= 20,000: c = 8.434 -> 8.44 (hand-computed)
    spacing, changed = fit_budget([5.0, 1.0, 1.0], [300.0, 200.0, 200.0], 20_000)
    assert changed and spacing == [8.44, 8.44, 8.44]
    assert 300 / 5 * (200 / spacing[1]) ** 2 <= 100_000
    assert fit_budget([5.0, 1.0, 1.0], [300.0, 200.0, 200.0], None) == ([5.0, 1.0, 1.0], False)
    assert fit_budget([None, 1.0, 1.0], [1.0, 100.0, 100.0], 2_500) == ([None, 2.0, 2.0], True)   # 2D


def _masked_cases(root, boxes):
    """Masked CT volumes (-1000 outside) of other shapes, each with a box of lung (-850)."""
    from medtool.tables import write_csv

    root.mkdir()
    rows = []
    for k, (shape, box) in enumerate(boxes):
        array = np.full(shape, -1000, np.int16)
        array[box] = -850
        array[box][0, 0, 0] = 40 * (k % 2)
        save_volume(Volume(array, spacing=(2.0, 2.0, 2.0), meta={"units": "HU"}), root / f"c{k}.npy")
        rows.append({"case_id": f"c{k}", "label": k % 2})
    write_csv(root / "labels.csv", ["case_id", "label"], rows)
    return root


def test_masked_volumes_are_cropped_to_their_largest_box_and_a_given_option_wins(tmp_path):
    boxes = [((20, 30, 30), np.s_[2:12, 5:25, 3:13]), ((24, 30, 34), np.s_[0:24, 1:9, 2:30]),
             ((18, 30, 30), np.s_[4:10, 10:20, 10:20]), ((22, 32, 30), np.s_[1:7, 0:32, 5:9])]
    root = _masked_cases(tmp_path / "m", boxes)
    task = make_task("classify", ClassifyOptions(images=str(root), labels=str(root / "labels.csv"), val_fraction=0))
    task.plan_device(TrainConfig(), CPU)
    task.prepare(tmp_path / "cache", seed=0)
    recipe = task.recipe
    assert recipe["crop"] is True and recipe["spacing"] == [2.0, 2.0, 2.0]
    assert recipe["shape"] == [24, 32, 28]           # the largest box on each axis (hand-read above)
    image = np.load(tmp_path / "cache" / "c1.npy")
    assert image.shape == (24, 32, 28)
    # case 1's box (24 x 8 x 28) centred in y: rows 12..19 are lung (-850 -> 0.107 in the window)
    assert np.allclose(image[1:, 12:20, :], 150 / 1400) and np.all(image[:, :12] == 0)
    lines = {line["name"]: line for line in recipe["plan"]}
    assert lines["crop"]["value"] == "foreground" and lines["crop"]["source"] == "planned"
    assert lines["width"]["value"] == 8 and "CPU" in lines["width"]["why"]
    given = make_task("classify", ClassifyOptions(images=str(root), labels=str(root / "labels.csv"), val_fraction=0,
                                                  crop="none", width=4, given=["crop", "width"]))
    given.plan_device(TrainConfig(), CPU)
    given.prepare(tmp_path / "cache2", seed=0)
    assert given.recipe["crop"] is False and given.recipe["shape"] == [21, 30, 30]   # median sizes
    assert {line["name"]: line for line in given.recipe["plan"]}["crop"]["source"] == "given"
    assert given.options.width == 4


def test_a_large_input_is_coarsened_to_the_cpu_budget(tmp_path):
    root = _masked_cases(tmp_path / "big", [((64, 80, 80), np.s_[:, :, :]), ((60, 80, 80), np.s_[:, :, :])])
    task = make_task("classify", ClassifyOptions(images=str(root), labels=str(root / "labels.csv"), val_fraction=0))
    task.plan_device(TrainConfig(), CPU)
    task.prepare(tmp_path / "cache", seed=0)
    shape = task.recipe["shape"]
    assert np.prod(shape) <= 1.1 * 2 ** 16 and task.recipe["spacing"][1] > 2.0
    assert "coarsened to fit the cpu budget" in {line["name"]: line for line in task.recipe["plan"]}["spacing"]["why"]
