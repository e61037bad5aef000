"""Detection task: reading X-rays, letterbox geometry, input checks, RetinaNet weights, and a tiny
run that learns on phantom X-rays and whose predictions ``score`` reads back."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from medtool.detection import (DetectOptions, DetectTask, find_images, image_id, letterbox,
                               read_image)
from medtool.errors import InputError, UsageError


@pytest.fixture(scope="module")
def xrays(tmp_path_factory):
    """Six phantom X-rays (128 px): four with boxes, two without."""
    from medtool.phantom import write_dataset

    root = tmp_path_factory.mktemp("cxr")
    write_dataset(root / "all", cases=1, seed=3, shape=48, cxr=16)
    with open(root / "all" / "cxr_boxes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    positives = list(dict.fromkeys(r["patientId"] for r in rows if r["Target"] == "1"))[:4]
    negatives = [r["patientId"] for r in rows if r["Target"] == "0"][:2]
    keep = set(positives + negatives)
    (root / "cxr").mkdir()
    for name in keep:
        (root / "cxr" / f"{name}.dcm").write_bytes((root / "all" / "cxr" / f"{name}.dcm").read_bytes())
    with open(root / "boxes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["patientId"] in keep)
    return root


def _options(xrays, **changes):
    base = dict(images=str(xrays / "cxr"), boxes=str(xrays / "boxes.csv"), size=64, model="resnet18-fpn",
                fpn_width=32, val_fraction=0.0, augment="none")
    return DetectOptions(**{**base, **changes})


# -- images and geometry --------------------------------------------------------------------------------
def test_reads_dicom_png_and_volumes(tmp_path, xrays):
    from PIL import Image

    from medtool.formats import save_volume
    from medtool.volume import Volume

    dicom = sorted((xrays / "cxr").iterdir())[0]
    pixels, units = read_image(dicom)
    assert pixels.shape == (128, 128) and pixels.dtype == np.float32 and units == "raw"
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png")[0], pixels.astype(np.uint8))
    save_volume(Volume(pixels[None], (1.0, 0.5, 0.5)), tmp_path / "b.nii.gz")
    assert np.array_equal(read_image(tmp_path / "b.nii.gz")[0], pixels)
    (tmp_path / "notes.txt").write_text("not an image")
    assert {image_id(p) for p in find_images([tmp_path])} == {"a", "b"}
    assert image_id(dicom) == dicom.stem


def test_a_ct_volume_is_refused(tmp_path):
    from medtool.formats import save_volume
    from medtool.volume import Volume

    save_volume(Volume(np.zeros((5, 16, 16), np.int16), (2.0, 1.0, 1.0)), tmp_path / "ct.npy")
    with pytest.raises(InputError, match="3D volume .5 slices.* is not a 2D X-ray"):
        read_image(tmp_path / "ct.npy")


def test_letterbox_keeps_the_aspect_and_maps_boxes_exactly():
    array = np.zeros((100, 50), np.float32)
    array[20:60, 10:30] = 1.0
    image, (sy, sx) = letterbox(array, 64, {"mode": "none"})
    assert image.shape == (64, 64) and (sy, sx) == (0.64, 0.64)
    assert not image[:, 32:].any()                                       # padded on the right
    rows, cols = np.nonzero(image > 0.5)
    # the box x y w h = 10 20 20 40 lands at (x * sx, y * sy, ...) in model pixels
    assert cols.min() / sx == pytest.approx(10, abs=1 / sx) and (cols.max() + 1) / sx == pytest.approx(30, abs=1 / sx)
    assert rows.min() / sy == pytest.approx(20, abs=1 / sy) and (rows.max() + 1) / sy == pytest.approx(60, abs=1 / sy)


# -- bad inputs --------------------------------------------------------------------------------------------
def _write_boxes(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
        writer.writerows(rows)


def test_table_and_images_must_match(xrays, tmp_path):
    ids = sorted(p.stem for p in (xrays / "cxr").iterdir())
    _write_boxes(tmp_path / "b.csv", [[i, "", "", "", "", 0] for i in ids[1:]] + [["ghost", 1, 1, 5, 5, 1]])
    with pytest.raises(InputError, match=r"1 ids of the box table have no image \(ghost\); 1 images have no row"):
        DetectTask(_options(xrays, boxes=str(tmp_path / "b.csv"))).prepare(tmp_path / "cache", seed=0)
    assert not (tmp_path / "cache").exists()                             # nothing prepared


def test_boxes_outside_the_image_are_refused(xrays, tmp_path):
    ids = sorted(p.stem for p in (xrays / "cxr").iterdir())
    _write_boxes(tmp_path / "b.csv", [[ids[0], 100, 40, 50, 20, 1]] + [[i, "", "", "", "", 0] for i in ids[1:]])
    with pytest.raises(InputError, match=f"box x y w h = 100 40 50 20 of image {ids[0]} lies outside the 128 x 128 image"):
        DetectTask(_options(xrays, boxes=str(tmp_path / "b.csv"))).prepare(tmp_path / "cache", seed=0)


def test_options_are_checked():
    with pytest.raises(UsageError, match="--images DIR and --boxes CSV"):
        DetectOptions().check()
    with pytest.raises(UsageError, match="multiple of 32"):
        DetectOptions(images="a", boxes="b", size=100).check()
    with pytest.raises(UsageError, match="resnet18-fpn"):
        DetectOptions(images="a", boxes="b", model="unet").check()
    with pytest.raises(UsageError, match="paste .* is for train segment"):
        DetectOptions(images="a", boxes="b", aug=["paste=0.5"]).check()


# -- model ---------------------------------------------------------------------------------------------------
def test_local_resnet_weights_load_into_one_channel(tmp_path):
    from torchvision.models import resnet18

    from medtool import models
    from medtool.models.retinanet import load_pretrained

    reference = resnet18(weights=None).state_dict()
    model = models.build("resnet18-fpn", {"size": 64, "fpn_width": 32, "anchor_sizes": [8, 16, 32, 64, 128]})
    report = load_pretrained(model, reference)
    body = model.net.backbone.body
    assert torch.equal(body.conv1.weight, reference["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(body.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    assert report["skipped"] == 2                                        # the ImageNet classifier
    with pytest.raises(ValueError, match="no tensor"):
        load_pretrained(model, {"something.else": torch.zeros(3)})


# -- learning and predicting -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(xrays, tmp_path_factory):
    from medtool.train import TrainConfig, fit, make_task

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    task = make_task("detect", _options(xrays))
    # 120 steps: at 80 one seed stayed below the bar on an Intel CPU (map-iou 0.03; seeds 1 and 2
    # reached 0.30-0.33); at 120, seeds 0-2 give 0.25-0.39 there
    config = TrainConfig(epochs=1, steps_per_epoch=120, batch_size=4, lr=1e-3, schedule="constant", seed=0)
    fit(task, config, run, device=torch.device("cpu"), progress=False)
    return task, run


def test_learns_on_phantom_xrays(trained):
    from medtool.train import build_model, load_checkpoint

    task, run = trained
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["task"] == "detect" and checkpoint["recipe"]["size"] == 64
    task.val_cases = task.train_cases                                    # the training-set score
    metrics = task.validate(build_model(checkpoint), device=torch.device("cpu"))
    # chance: the same network untrained (it predicts nothing, or boxes anywhere) scores ~0
    from medtool import models

    torch.manual_seed(1)
    untrained = models.build(checkpoint["model"]["name"], checkpoint["model"]["config"])
    chance = task.validate(untrained, device=torch.device("cpu"))
    assert chance["map_iou"] < 0.02, chance
    assert metrics["map_iou"] > 0.1, metrics


def test_predictions_parse_back_in_score(trained, xrays, tmp_path, cli):
    from medtool.metrics.boxes import read_predictions
    from medtool.detection import PredictSettings, predict_files
    from medtool.train import build_model, load_checkpoint

    task, run = trained
    checkpoint = load_checkpoint(run / "last.pt")
    task.val_cases = task.train_cases
    model_space = task.validate(build_model(checkpoint), device=torch.device("cpu"))
    out = tmp_path / "submission.csv"
    outcome = predict_files(checkpoint, [xrays / "cxr"], out, device=torch.device("cpu"),
                            settings=PredictSettings(min_score=model_space["min_score"]))
    assert outcome.ok and len(outcome.results) == 6
    table = read_predictions(out)
    assert sorted(table.ids) == sorted(p.stem for p in (xrays / "cxr").iterdir())
    assert (table.boxes[table.valid][:, :2] >= 0).all()
    assert (table.boxes[table.valid][:, :2] + table.boxes[table.valid][:, 2:] <= 128 + 1e-6).all()
    result = cli("score", "--truth", xrays / "boxes.csv", out, "--metric", "map-iou", "--json")
    assert result.exit_code == 0, result.output

    scored = json.loads(result.stdout)
    value = scored["leaderboard"][0]["scores"]["map-iou"]
    assert math.isfinite(value) and value > 0.1
    # the CSV boxes are the model's boxes with the letterbox undone (x / sx, y / sy), rounded to 0.1 px
    from medtool.detection import detect_arrays, letterbox, read_image

    model = build_model(checkpoint)
    model.settings(min_score=model_space["min_score"])
    for path in sorted((xrays / "cxr").iterdir()):
        array, _ = read_image(path)
        image, (sy, sx) = letterbox(array, checkpoint["recipe"]["size"], checkpoint["recipe"]["normalize"])
        corners, scores = detect_arrays(model, [image], device=torch.device("cpu"))[0]
        expected = np.clip(corners / [sx, sy, sx, sy], 0, 128)
        expected[:, 2:] -= expected[:, :2]
        row = table.ids.index(path.stem)
        got = table.boxes[row, : table.counts[row]]
        assert table.counts[row] == len(scores)
        assert np.allclose(got, expected, atol=0.051) and np.allclose(table.scores[row, : len(scores)], scores, atol=5e-5)


def test_the_cpu_plan_takes_a_small_detector_unless_given(xrays, tmp_path):
    from medtool.detection import CPU_PLAN
    from medtool.train import TrainConfig, make_task

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    plain = DetectOptions(images=str(xrays / "cxr"), boxes=str(xrays / "boxes.csv"), val_fraction=0.0, given=[])
    task = make_task("detect", plain)
    task.plan_device(TrainConfig(given=[]), cpu)
    assert (plain.model, plain.fpn_width, plain.size) == (CPU_PLAN["model"], CPU_PLAN["fpn_width"], CPU_PLAN["size"])
    task.prepare(tmp_path / "cache", seed=0)
    lines = {line["name"]: line for line in task.recipe["plan"]}
    assert task.recipe["size"] == 128 and lines["size"]["source"] == "planned" and "CPU" in lines["size"]["why"]
    assert lines["model"]["value"] == "resnet18-fpn" and lines["nms"]["source"] == "default"
    given = DetectOptions(images=str(xrays / "cxr"), boxes=str(xrays / "boxes.csv"), size=64, given=["size"])
    make_task("detect", given).plan_device(TrainConfig(given=[]), cpu)
    assert given.size == 64 and given.model == "resnet18-fpn"          # the given size wins
    on_gpu = DetectOptions(images=str(xrays / "cxr"), boxes=str(xrays / "boxes.csv"), given=[])
    make_task("detect", on_gpu).plan_device(TrainConfig(given=[]), cuda)
    assert (on_gpu.model, on_gpu.fpn_width, on_gpu.size) == ("resnet50-fpn", 256, 256)   # the defaults stand
    python = DetectOptions(images=str(xrays / "cxr"), boxes=str(xrays / "boxes.csv"))   # given unknown
    make_task("detect", python).plan_device(TrainConfig(), cpu)
    assert python.model == "resnet50-fpn"
