import contextlib
import io

import numpy as np
import pytest

from medtool.metrics import boxes
from medtool.metrics.boxes import ImageBoxes
from medtool.errors import InputError


def _random_images(seed, n, max_truth=4, max_pred=8):
    """Random images: truth boxes, and predictions that are jittered truths or random boxes."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(n)]
    truth, pred, scores = [], [], []
    for _ in range(n):
        t = np.column_stack([rng.uniform(0, 800, (k := rng.integers(0, max_truth + 1), 2)),
                             rng.uniform(20, 300, (k, 2))])
        m = rng.integers(0, max_pred + 1)
        p = np.column_stack([rng.uniform(0, 800, (m, 2)), rng.uniform(20, 300, (m, 2))])
        near = rng.random(m) < 0.7
        if k:
            source = t[rng.integers(0, k, m)]
            jitter = source + rng.normal(0, 1, (m, 4)) * source[:, [2, 3, 2, 3]] * 0.15
            jitter[:, 2:] = np.abs(jitter[:, 2:]) + 1
            p[near] = jitter[near]
        truth.append(t)
        pred.append(p)
        scores.append(rng.random(m))
    return ids, truth, pred, scores


def _iou(a, b):
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    h = max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return w * h / union if union > 0 else 0.0


def reference_rsna(truth, pred, scores):
    """The competition text, literally: loops over thresholds, predictions and truth boxes."""
    if len(truth) == 0 and len(pred) == 0:
        return None                                   # neither: the image is not counted
    if len(truth) == 0:
        return 0.0                                    # any prediction on an empty image: 0
    order = sorted(range(len(pred)), key=lambda j: -scores[j])    # stable: ties keep input order
    total = 0.0
    for t in [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]:
        matched_truth = set()
        tp = 0
        for j in order:                               # in confidence order
            best, best_iou = None, -1.0
            for g in range(len(truth)):
                if g in matched_truth:
                    continue
                value = _iou(pred[j], truth[g])
                if value > t and value > best_iou:    # "IoU above the threshold"; best truth
                    best, best_iou = g, value
            if best is not None:
                matched_truth.add(best)
                tp += 1
        fp = len(pred) - tp
        fn = len(truth) - tp
        total += tp / (tp + fp + fn)
    return total / 8


def test_iou_by_hand():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 5.0, 10.0, 10.0], [20.0, 0.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    assert boxes.iou(a, b)[0] == pytest.approx([25 / 175, 0.0, 1.0])
    assert boxes.iou(np.zeros((1, 4)), np.zeros((1, 4))) == 0.0     # no area: 0, not NaN


def test_rsna_thresholds():
    assert boxes.RSNA_THRESHOLDS.tolist() == [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]


def test_map_iou_equals_the_competition_text_on_thousands_of_images():
    ids, truth, pred, scores = _random_images(0, 4000)
    t = ImageBoxes.from_lists(ids, truth)
    p = ImageBoxes.from_lists(ids, pred, scores)
    ours = boxes.map_iou_per_image(t, p)
    expected = [reference_rsna(truth[i], pred[i], scores[i]) for i in range(len(ids))]
    left_out = np.array([e is None for e in expected])
    assert np.array_equal(np.isnan(ours), left_out) and left_out.any()
    assert np.allclose(ours[~left_out], [e for e in expected if e is not None], atol=1e-12)
    # a spread of scores, not all 0 or 1
    assert 0.05 < np.mean((ours[~left_out] > 0) & (ours[~left_out] < 1))
    assert boxes.map_iou(t, p) == pytest.approx(np.mean([e for e in expected if e is not None]))


def test_map_iou_hand_cases():
    truth = ImageBoxes.from_lists(["a", "b", "c", "d"], [
        np.array([[0, 0, 10, 10], [100, 100, 10, 10]]), np.zeros((0, 4)), np.zeros((0, 4)),
        np.array([[0, 0, 10, 10]])])
    pred = ImageBoxes.from_lists(["a", "b", "c", "d"], [
        np.array([[0, 0, 10, 10], [50, 50, 5, 5]]), np.array([[1, 1, 5, 5]]), np.zeros((0, 4)),
        np.zeros((0, 4))], [np.array([0.9, 0.8]), np.array([0.5]), np.zeros(0), np.zeros(0)])
    per_image = boxes.map_iou_per_image(truth, pred)
    # a: one exact hit, one FP, one FN at every threshold -> 1 / 3; b: FP on an empty image -> 0
    # c: nothing at all -> left out; d: missed truth -> 0
    assert per_image[0] == pytest.approx(1 / 3) and per_image[1] == 0 and np.isnan(per_image[2])
    assert per_image[3] == 0
    assert boxes.map_iou(truth, pred) == pytest.approx((1 / 3) / 3)


def test_greedy_matching_by_hand():
    # truth A and B; p_wide overlaps A with IoU 0.8, p_a overlaps A with IoU 0.6, neither B
    a, b = [0, 0, 10, 10], [10, 0, 10, 10]
    p_wide, p_a = [0, 0, 10, 8], [0, 0, 6, 10]
    truth = ImageBoxes.from_lists(["x"], [np.array([a, b])])
    assert np.allclose(boxes.iou(np.array([p_wide, p_a]), np.array([a, b])), [[0.8, 0], [0.6, 0]])
    wide = [5, 0, 10, 10]          # IoU 1/3 with both A and B
    assert np.allclose(boxes.iou(np.array([wide]), np.array([a, b])), [[1 / 3, 1 / 3]])
    # p_wide taken first matches A everywhere it can; p_a is then a FP
    first_wide = ImageBoxes.from_lists(["x"], [np.array([p_wide, p_a])], [np.array([0.9, 0.1])])
    # TP 1, FP 1, FN 1 at 0.40..0.75 (0.8 passes all)
    assert boxes.map_iou_per_image(truth, first_wide)[0] == pytest.approx(1 / 3)
    # p_a first: it takes A at 0.40..0.55 (0.6 > t); p_wide has no other partner -> FP; at
    # 0.60..0.75 p_a fails and p_wide takes A: TP 1, FP 1, FN 1 every time again
    first_a = ImageBoxes.from_lists(["x"], [np.array([p_wide, p_a])], [np.array([0.1, 0.9])])
    assert boxes.map_iou_per_image(truth, first_a)[0] == pytest.approx(1 / 3)
    # the box halfway between A and B (IoU 1/3 with each) never passes 0.40
    halfway = ImageBoxes.from_lists(["x"], [np.array([wide])], [np.array([0.5])])
    assert boxes.map_iou_per_image(truth, halfway)[0] == 0.0


def _pycocotools(ids, truth, pred, scores):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    number = {image: i + 1 for i, image in enumerate(ids)}
    annotations = [{"id": k + 1, "image_id": number[image], "category_id": 1, "bbox": list(map(float, box)),
                    "area": float(box[2] * box[3]), "iscrowd": 0}
                   for k, (image, box) in enumerate((image, box) for image, b in zip(ids, truth) for box in b)]
    gt = COCO()
    gt.dataset = {"images": [{"id": number[i]} for i in ids], "annotations": annotations,
                  "categories": [{"id": 1, "name": "opacity"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": number[image], "category_id": 1, "bbox": list(map(float, box)),
                          "score": float(score)}
                         for image, b, s in zip(ids, pred, scores) for box, score in zip(b, s)])
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0], evaluation.stats[1]


@pytest.mark.parametrize("seed", range(4))
def test_coco_map_equals_pycocotools(seed):
    ids, truth, pred, scores = _random_images(seed + 10, 300, max_pred=8 + 100 * (seed == 3))
    t = ImageBoxes.from_lists(ids, truth)
    p = ImageBoxes.from_lists(ids, pred, scores)
    ap, ap50 = boxes.coco_map(t, p)
    ref_ap, ref_ap50 = _pycocotools(ids, truth, pred, scores)
    assert 0.05 < ap < 0.95
    assert ap == pytest.approx(ref_ap, abs=1e-12)
    assert ap50 == pytest.approx(ref_ap50, abs=1e-12)


def test_coco_bootstrap_weights_repeat_images():
    ids, truth, pred, scores = _random_images(3, 40)
    t = ImageBoxes.from_lists(ids, truth)
    p = ImageBoxes.from_lists(ids, pred, scores)
    matches = boxes.coco_matches(t, p)
    assert boxes.coco_accumulate(matches, np.ones(40, int)) == boxes.coco_map(t, p)
    weights = np.zeros(40, int)
    weights[:10] = 1
    sub = boxes.coco_map(ImageBoxes.from_lists(ids[:10], truth[:10]),
                         ImageBoxes.from_lists(ids[:10], pred[:10], scores[:10]))
    assert boxes.coco_accumulate(matches, weights) == pytest.approx(sub)
    assert np.isnan(boxes.coco_accumulate(matches, np.zeros(40, int))[0])


def test_read_truth_and_predictions(tmp_path):
    (tmp_path / "truth.csv").write_text(
        "patientId,x,y,width,height,Target\n"
        "p1,10,20,30,40,1\np1,100,100,10,10,1\np2,,,,,0\n")
    (tmp_path / "pred.csv").write_text(
        "patientId,PredictionString\np2,\np1,0.5 10 20 30 40 0.9 100 100 10 10\n")
    truth = boxes.read_truth(tmp_path / "truth.csv")
    assert truth.ids == ["p1", "p2"] and truth.counts.tolist() == [2, 0]
    pred = boxes.read_predictions(tmp_path / "pred.csv").take(truth.ids)
    assert pred.counts.tolist() == [2, 0]
    assert pred.scores[0].tolist() == [0.9, 0.5]                      # best first
    assert pred.boxes[0, 0].tolist() == [100, 100, 10, 10]
    assert boxes.map_iou_per_image(truth, pred)[0] == 1.0
    assert boxes.read_boxes(tmp_path / "pred.csv").ids == ["p2", "p1"]


@pytest.mark.parametrize("text, what", [
    ("0.5 10 20 30", "4 numbers, not a multiple of 5"),
    ("0.5 10 20 30 forty", "'forty' is not a number"),
    ("0.5 10 20 -30 40", "negative width or height"),
    ("nan 10 20 30 40", "NaN or infinite"),
])
def test_malformed_prediction_strings_name_file_and_line(tmp_path, text, what):
    path = tmp_path / "pred.csv"
    path.write_text(f"patientId,PredictionString\np1,0.9 1 2 3 4\np2,{text}\n")
    with pytest.raises(InputError) as error:
        boxes.read_predictions(path)
    message = str(error.value)
    assert message.startswith(f"{path}: line 3: PredictionString") and what in message


def test_repeated_image_and_bad_truth(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("patientId,PredictionString\np1,0.9 1 2 3 4\np1,0.8 1 2 3 4\n")
    with pytest.raises(InputError, match="line 3: image p1 appears again"):
        boxes.read_predictions(path)
    path.write_text("patientId,x,y,width,height,Target\np1,1,2,x,4,1\n")
    with pytest.raises(InputError, match="line 2: box"):
        boxes.read_truth(path)
