"""Lung masks of realistic phantom CTs (512 x 512, bed, field of view, trachea) and of the
anatomy real scans have (bowel gas, other scan ranges, one lung, effusion, emphysema,
juxtapleural tumours).

medtool's ``lung_mask`` against the seeds' per-slice method (threshold -400 HU, scikit-image
labelling per slice, keep the two largest regions that do not touch the image border), on the
same volumes.

* Default chest (seeds 3, 11): Dice per lung for medtool (1 right, 2 left), Dice of the union
  for both (the seed method does not tell right from left), seconds; and the time on a
  512 x 512 x 300 volume (a case mirrored along z). Targets: Dice >= 0.98 per lung, 300
  slices in <= 5 s on 2 cores.
* Variants (:data:`VARIANTS`, :data:`CASES` cases each, seeds 1..CASES, 512² at the phantom's
  realistic spacing): per present lung the min and mean Dice for medtool and for the seed
  method (its mask split into right and left at the patient's midline, which it does not know
  itself), the voxels of gas in the stomach and bowel each labels lung, how often medtool says
  "no lung" (the abdomen-only variant must, every time), and seconds per volume. Targets:
  Dice >= 0.97 per present lung in every case, no bowel gas labelled.

``MEDTOOL_BENCH_CASES=3`` runs fewer cases per variant.
"""

from __future__ import annotations

import os

import numpy as np

SHAPE, SLICES = 512, 300
SEEDS = (3, 11)
THRESHOLD = -400
#: Cases per variant (seeds 1..CASES).
CASES = int(os.environ.get("MEDTOOL_BENCH_CASES", "10"))


def _variants():
    from medtool.phantom.ct import Anatomy

    # name: (anatomy, tumour probability)
    return {
        "bowel gas": (Anatomy(bowel=True), 0.65),
        "chest-abdomen-pelvis": (Anatomy(scan_range="cap"), 0.65),
        "abdomen only": (Anatomy(scan_range="abdomen"), 0.65),
        "lung bases only": (Anatomy(scan_range="bases"), 0.65),
        "apices only": (Anatomy(scan_range="apices"), 0.65),
        "one lung": (Anatomy(one_lung="either"), 0.65),
        "effusion": (Anatomy(effusion=True), 0.65),
        "emphysema": (Anatomy(emphysema=True), 0.65),
        "juxtapleural tumour": (Anatomy(juxtapleural=True), 1.0),
    }


VARIANTS = ("bowel gas", "chest-abdomen-pelvis", "abdomen only", "lung bases only", "apices only",
            "one lung", "effusion", "emphysema", "juxtapleural tumour")


def seed_method(hu: np.ndarray) -> np.ndarray:
    """The seeds' per-slice lung mask (binary)."""
    from skimage import measure

    out = np.zeros(hu.shape, dtype=bool)
    for k in range(hu.shape[0]):
        labels = measure.label(hu[k] < THRESHOLD)
        border = np.unique(np.r_[labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        sizes = np.bincount(labels.ravel())
        sizes[border] = 0
        sizes[0] = 0
        for label in np.argsort(sizes)[::-1][:2]:
            if sizes[label] > 0:
                out[k] |= labels == label
    return out


def _dice(a, b) -> float:
    return float(2.0 * np.sum(a & b) / (a.sum() + b.sum()))


def _volume(case):
    from medtool.volume import Volume

    hu = np.rint(np.nan_to_num(case.hu, nan=-1000.0)).astype(np.int16)
    return hu, Volume(hu, spacing=case.spacing, origin=case.origin, meta={"units": "HU"})


def _variant_rows() -> list[dict]:
    import time

    from medtool.errors import InputError
    from medtool.lungmask import NO_LUNG, lung_mask
    from medtool.phantom.ct import BOWEL_GAS_TRUTH, make_ct

    rows = []
    print(f"  {'variant':<22} {'cases':>5}  {'medtool Dice min/mean':>21}  {'seeds min/mean':>14}  "
          f"{'gas voxels ours/seeds':>21}  {'no lung':>7}  {'s/vol ours':>10}  {'s/vol seeds':>11}  {'tumour in':>9}")
    variants = _variants()
    for name in VARIANTS:
        anatomy, tumour_probability = variants[name]
        ours, theirs, gas_ours, gas_theirs, no_lung, t_ours, t_theirs, tumour_in = [], [], 0, 0, 0, [], [], []
        for seed in range(1, CASES + 1):
            case = make_ct(np.random.default_rng(seed), shape=SHAPE, anatomy=anatomy,
                           tumour_probability=tumour_probability)
            hu, volume = _volume(case)
            start = time.perf_counter()
            try:
                mask = lung_mask(volume).array
            except InputError as error:
                if NO_LUNG not in str(error):
                    raise
                mask = np.zeros(hu.shape, np.uint8)
                no_lung += 1
            t_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            peer = seed_method(hu)
            t_theirs.append(time.perf_counter() - start)
            gas = case.anatomy == BOWEL_GAS_TRUTH
            gas_ours += int(np.sum((mask > 0) & gas))
            gas_theirs += int(np.sum(peer & gas))
            right_side = (volume.world(np.array([[0, 0, i] for i in range(hu.shape[2])]))[:, 0]
                          < case.facts["midline_x_mm"])[None, None, :]
            for value, side in ((1, right_side), (2, ~right_side)):
                truth = case.lungs == value
                if truth.any():
                    ours.append(_dice(mask == value, truth))
                    theirs.append(_dice(peer & side, truth))
            if case.tumour.any():
                tumour_in.append(float(np.mean(mask[case.tumour > 0] > 0)))
        row = {"case": f"lungmask {name}", "peer": "seeds' per-slice", "variant": name,
               "cases": CASES, "medtool_s": float(np.mean(t_ours)), "peer_s": float(np.mean(t_theirs)),
               "dice_min": min(ours, default=float("nan")), "dice_mean": float(np.mean(ours)) if ours else float("nan"),
               "peer_dice_min": min(theirs, default=float("nan")),
               "peer_dice_mean": float(np.mean(theirs)) if theirs else float("nan"),
               "gas_voxels": gas_ours, "peer_gas_voxels": gas_theirs, "no_lung": no_lung,
               "lungs_scored": len(ours), "tumour_inside_mean": float(np.mean(tumour_in)) if tumour_in else None}
        rows.append(row)
        dice = "-" if not ours else f"{row['dice_min']:.3f} / {row['dice_mean']:.3f}"
        peer_dice = "-" if not theirs else f"{row['peer_dice_min']:.3f} / {row['peer_dice_mean']:.3f}"
        inside = "-" if not tumour_in else f"{np.mean(tumour_in):.2f}"
        print(f"  {name:<22} {CASES:>5}  {dice:>21}  {peer_dice:>14}  {f'{gas_ours} / {gas_theirs}':>21}  "
              f"{no_lung:>7}  {row['medtool_s']:>10.2f}  {row['peer_s']:>11.2f}  {inside:>9}", flush=True)
    return rows


def run(repeat, timeit):
    import torch

    from medtool.lungmask import lung_mask
    from medtool.phantom.ct import make_ct
    from medtool.volume import Volume

    torch.set_num_threads(2)
    rows = []
    for seed in SEEDS:
        case = make_ct(np.random.default_rng(seed), shape=SHAPE)
        hu, volume = _volume(case)
        ours = lung_mask(volume).array
        theirs = seed_method(hu)
        truth = case.lungs
        dice = {f"dice_{name}": _dice(ours == v, truth == v) for name, v in (("right", 1), ("left", 2))}
        dice["dice_union"] = _dice(ours > 0, truth > 0)
        dice["peer_dice_union"] = _dice(theirs, truth > 0)
        t_ours = timeit(lambda: lung_mask(volume), repeat=repeat)
        t_peer = timeit(lambda: seed_method(hu), repeat=repeat)
        print(f"  seed {seed} {hu.shape}: medtool Dice right {dice['dice_right']:.4f} left "
              f"{dice['dice_left']:.4f} union {dice['dice_union']:.4f}; seed method union "
              f"{dice['peer_dice_union']:.4f} (gap {case.facts['lung_gap_mm']} mm, FOV cut "
              f"{case.facts['body_cut_by_fov']})")
        rows.append({"case": f"lungmask {SHAPE}x{SHAPE}x{hu.shape[0]} seed {seed}",
                     "peer": "seeds' per-slice", "medtool_s": t_ours, "peer_s": t_peer, **dice})
        if seed == SEEDS[0]:
            n = hu.shape[0]
            period = np.r_[np.arange(n), np.arange(n - 2, 0, -1)]
            big = Volume(hu[np.resize(period, SLICES)], spacing=case.spacing, origin=case.origin,
                         meta={"units": "HU"})
            rows.append({"case": f"lungmask {SHAPE}x{SHAPE}x{SLICES}", "peer": "seeds' per-slice",
                         "medtool_s": timeit(lambda: lung_mask(big), repeat=repeat),
                         "peer_s": timeit(lambda: seed_method(big.array), repeat=repeat)})
    rows += _variant_rows()
    return rows
