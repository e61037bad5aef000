"""Scoring speed: the RSNA map-iou on 30,000 images, and dice + hd95 on 512 x 512 x 300 masks.

* map-iou: 30,000 images with 0-4 truth boxes and 0-8 predictions each (jittered truths and
  random boxes). medtool's vectorised :func:`medtool.metrics.boxes.map_iou` (from the flat arrays its
  table reader produces; padding, sorting and IoU included in the time) against the Python-loop implementation that
  the seeds and most Kaggle kernels of the RSNA Pneumonia Detection Challenge used
  (:func:`kernel_map_iou` below, copied in its usual form: per image, per threshold, per truth
  box, per prediction). Target: < 2 s and >= 50x faster. The kernel loop matches truth-major
  and with IoU >= t, the competition text prediction-major in confidence order with IoU > t
  (which medtool follows, tested against a loop reference of that text), so the two can differ
  on a few images; the benchmark prints how many.
* dice + hd95: the phantom's lung mask at 512 x 512, tiled to 300 slices, against the same mask
  eroded by one voxel and shifted by two columns; spacing 0.78 x 0.78 x 1.25 mm. medtool's
  :func:`medtool.metrics.score_masks` against ``medpy.metric.binary.dc`` + ``hd95``; the values
  must agree to 1e-6.
"""

from __future__ import annotations

import numpy as np

IMAGES = 30_000
MAX_TRUTH, MAX_PRED = 4, 8
THRESHOLDS = [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
SLICES, SHAPE = 300, 512


# -- the peer: the typical Kaggle-kernel loop of the RSNA metric ------------------------------
def kernel_iou(box1, box2):
    x11, y11, w1, h1 = box1
    x21, y21, w2, h2 = box2
    assert w1 * h1 > 0
    assert w2 * h2 > 0
    x12, y12 = x11 + w1, y11 + h1
    x22, y22 = x21 + w2, y21 + h2

    area1, area2 = w1 * h1, w2 * h2
    xi1, yi1, xi2, yi2 = max([x11, x21]), max([y11, y21]), min([x12, x22]), min([y12, y22])

    if xi2 <= xi1 or yi2 <= yi1:
        return 0
    else:
        intersect = (xi2 - xi1) * (yi2 - yi1)
        union = area1 + area2 - intersect
        return intersect / union


def kernel_map_iou(boxes_true, boxes_pred, scores, thresholds=THRESHOLDS):
    # According to the introduction, images with no ground truth bboxes will not be
    # included in the map score unless there is a false positive detection
    if len(boxes_true) == 0 and len(boxes_pred) == 0:
        return None
    if len(boxes_pred):
        boxes_pred = boxes_pred[np.argsort(scores)[::-1], :]
    map_total = 0
    for t in thresholds:
        matched_bt = set()
        tp, fn = 0, 0
        for i, bt in enumerate(boxes_true):
            matched = False
            for j, bp in enumerate(boxes_pred):
                miou = kernel_iou(bt, bp)
                if miou >= t and not matched and j not in matched_bt:
                    matched = True
                    tp += 1
                    matched_bt.add(j)
            if not matched:
                fn += 1
        fp = len(boxes_pred) - len(matched_bt)
        m = tp / (tp + fn + fp)
        map_total += m
    return map_total / len(thresholds)


def _images(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_truth = rng.integers(0, MAX_TRUTH + 1, IMAGES)
    n_pred = rng.integers(0, MAX_PRED + 1, IMAGES)
    truth, pred, scores = [], [], []
    for k, m in zip(n_truth, n_pred):
        t = np.column_stack([rng.uniform(0, 800, (k, 2)), rng.uniform(20, 300, (k, 2))])
        p = np.column_stack([rng.uniform(0, 800, (m, 2)), rng.uniform(20, 300, (m, 2))])
        if k:
            source = t[rng.integers(0, k, m)]
            jitter = source + rng.normal(0, 1, (m, 4)) * source[:, [2, 3, 2, 3]] * 0.1
            jitter[:, 2:] = np.abs(jitter[:, 2:]) + 1
            near = rng.random(m) < 0.7
            p[near] = jitter[near]
        truth.append(t)
        pred.append(p)
        scores.append(rng.random(m))
    return [f"{i:06d}" for i in range(IMAGES)], truth, pred, scores


def _bench_map_iou(repeat, timeit) -> list[dict]:
    from medtool.metrics.boxes import ImageBoxes, map_iou, map_iou_per_image

    ids, truth, pred, scores = _images()
    # medtool's table reader hands over flat arrays: the image row of each box, boxes, scores
    truth_image = np.repeat(np.arange(IMAGES), [len(t) for t in truth])
    pred_image = np.repeat(np.arange(IMAGES), [len(p) for p in pred])
    truth_flat, pred_flat, scores_flat = np.concatenate(truth), np.concatenate(pred), np.concatenate(scores)

    def ours():
        return map_iou(ImageBoxes.from_flat(ids, truth_image, truth_flat),
                       ImageBoxes.from_flat(ids, pred_image, pred_flat, scores_flat))

    def peer():
        values = [kernel_map_iou(t, p, s) for t, p, s in zip(truth, pred, scores)]
        return np.mean([v for v in values if v is not None])

    ours_s = timeit(ours, repeat=repeat)
    peer_s = timeit(peer, repeat=1)
    per_image = map_iou_per_image(ImageBoxes.from_lists(ids, truth), ImageBoxes.from_lists(ids, pred, scores))
    kernel = np.array([np.nan if (v := kernel_map_iou(t, p, s)) is None else v
                       for t, p, s in zip(truth, pred, scores)])
    differ = int(np.sum(~np.isclose(per_image, kernel, equal_nan=True)))
    print(f"bench_score: map-iou medtool {ours():.6f}, kernel loop {peer():.6f}; images scored "
          f"differently (matching order/ties): {differ} of {IMAGES}; boxes {sum(map(len, truth))} truth, "
          f"{sum(map(len, pred))} predicted")
    return [{"case": f"map-iou {IMAGES} images <= {MAX_PRED} boxes", "peer": "Kaggle-kernel loop",
             "medtool_s": ours_s, "peer_s": peer_s}]


def _masks():
    from scipy.ndimage import binary_erosion

    from medtool.phantom.ct import make_ct

    case = make_ct(np.random.default_rng(0), shape=SHAPE)
    lungs = case.lungs > 0
    period = np.r_[np.arange(lungs.shape[0]), np.arange(lungs.shape[0] - 2, 0, -1)]
    truth = np.ascontiguousarray(lungs[np.resize(period, SLICES)])
    pred = np.roll(binary_erosion(truth), 2, axis=2)
    return truth, pred, (1.25, 0.78125, 0.78125)


def _bench_hd95(repeat, timeit) -> list[dict]:
    from medpy.metric import binary as medpy_binary

    from medtool.metrics import score_masks

    truth, pred, spacing = _masks()

    def ours():
        values = score_masks(truth, pred, spacing, ("dice", "hd95")).values
        return values["dice"], values["hd95"]

    def peer():
        return medpy_binary.dc(pred, truth), medpy_binary.hd95(pred, truth, voxelspacing=spacing)

    ours_s = timeit(ours, repeat=repeat)
    peer_s = timeit(peer, repeat=1)
    (dice, hd), (dice_ref, hd_ref) = ours(), peer()
    if abs(dice - dice_ref) > 1e-6 or abs(hd - hd_ref) > 1e-6:
        raise RuntimeError(f"medtool ({dice}, {hd}) differs from medpy ({dice_ref}, {hd_ref})")
    print(f"bench_score: {truth.shape} masks ({truth.mean():.1%} foreground): dice {dice:.6f} "
          f"hd95 {hd:.6f} mm, equal to medpy within 1e-6")
    return [{"case": f"dice+hd95 {SHAPE}x{SHAPE}x{SLICES} lungs", "peer": "medpy dc + hd95",
             "medtool_s": ours_s, "peer_s": peer_s}]


def run(*, repeat: int, timeit) -> list[dict]:
    return _bench_map_iou(repeat, timeit) + _bench_hd95(repeat, timeit)
