"""What each modality of the brain MRI phantom can tell: the contrast table and a per-voxel test.

``python benchmarks/quality_brain_modalities.py [--cases 10] [--shape 96] [--seed 0]``

1. The contrast table: mean and standard deviation of each tissue in each modality, measured
   on the generated cases (``medtool.phantom.brain.make_brain``), in the stored units (white
   matter on T1 = 1000 before bias and noise).
2. A per-voxel classifier (scikit-learn's HistGradientBoostingClassifier on each modality's
   intensity and its 3x3x3 mean, z-scored per case inside the head) trained on the first
   half of the cases and tested on the rest, for FLAIR, T1, T1c and T2 alone, FLAIR+T1c,
   FLAIR+T1c+T2 and all four: per-class Dice on the test cases (BraTS 2015 labels) and the
   BraTS regions. It sees intensities only, no shape: it measures what the contrasts carry,
   not what a U-Net reaches. Not part of CI; prints markdown tables.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.ndimage import uniform_filter

from medtool.metrics import dice
from medtool.phantom import brain
from medtool.metrics.regions import REGION_SETS, region_mask

COMBINATIONS = (("flair",), ("t1",), ("t1ce",), ("t2",), ("flair", "t1ce"), ("flair", "t1ce", "t2"),
                ("flair", "t1", "t1ce", "t2"))
SAMPLES_PER_CASE = 60_000
LABELS = (1, 2, 3, 4)


def _features(case, modalities) -> np.ndarray:
    head = case.tissues != brain.BACKGROUND
    columns = []
    for name in modalities:
        image = case.images[name].astype(np.float32)
        image = (image - image[head].mean()) / image[head].std()
        columns += [image, uniform_filter(image, 3)]
    return np.stack(columns, axis=-1)


def contrast_table(cases) -> str:
    rows = ["| tissue | " + " | ".join(brain.MODALITIES) + " |", "| --- |" + " --- |" * len(brain.MODALITIES)]
    for tissue, name in enumerate(brain.TISSUE_NAMES):
        cells = []
        for modality in brain.MODALITIES:
            values = np.concatenate([c.images[modality][c.tissues == tissue].astype(float) for c in cases])
            cells.append(f"{values.mean():.0f} ± {values.std():.0f}" if len(values) else "-")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def classify(cases, modalities, rng) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    half = len(cases) // 2
    inside = [c.tissues >= brain.CSF for c in cases]
    x, y = [], []
    for case, mask in zip(cases[:half], inside[:half]):
        features, seg = _features(case, modalities)[mask], case.seg()[mask]
        weights = np.where(seg > 0, 20.0, 1.0)
        pick = rng.choice(len(seg), size=min(SAMPLES_PER_CASE, len(seg)), replace=False, p=weights / weights.sum())
        x.append(features[pick])
        y.append(seg[pick])
    model = HistGradientBoostingClassifier(max_iter=150, random_state=0).fit(np.concatenate(x), np.concatenate(y))
    scores: dict[str, list[float]] = {}
    for case, mask in zip(cases[half:], inside[half:]):
        seg = case.seg()
        pred = np.zeros_like(seg)
        pred[mask] = model.predict(_features(case, modalities)[mask])
        for label in LABELS:
            scores.setdefault(str(label), []).append(dice(seg == label, pred == label))
        for region, members in REGION_SETS["brats"].items():
            scores.setdefault(region, []).append(dice(region_mask(seg, members), region_mask(pred, members)))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--shape", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = np.random.SeedSequence(args.seed).spawn(args.cases)
    cases = [brain.make_brain(np.random.default_rng(s), shape=args.shape) for s in seeds]
    print(f"{args.cases} cases at {args.shape}^3 generated in {time.perf_counter() - start:.1f} s\n")
    print(contrast_table(cases), "\n")
    rng = np.random.default_rng(args.seed)
    header = ["input", "necrosis 1", "edema 2", "non-enhancing 3", "enhancing 4", "wt", "tc", "et"]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for modalities in COMBINATIONS:
        scores = classify(cases, modalities, rng)
        cells = [f"{scores[k]:.3f}" for k in ("1", "2", "3", "4", "wt", "tc", "et")]
        print(f"| {'+'.join(modalities)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
