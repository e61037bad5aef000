"""Tiny phantom classification data for the classify tests: 6 CT cases at 64 x 64, in HU,
resampled to 12 x 32 x 32 as the seeds did (``resample --shape --crop-z``), their labels
(RECIST >= 20 mm) and two folds that each leave both classes to train on."""

from __future__ import annotations

from pathlib import Path

#: Seed and size of the phantom data set (cases 1 and 3 are positive).
SEED, CASES, SHAPE = 3, 6, 64
FOLDS = {"case_001": 0, "case_002": 0, "case_005": 0, "case_003": 1, "case_004": 1, "case_006": 1}


def write_class_dataset(root: Path, invoke) -> tuple[Path, Path, Path]:
    """``root/crops/case_NNN.npy``, ``root/phantom/labels.csv`` and ``root/folds.csv``;
    ``invoke`` runs ``medtool ARGS...`` (the ``cli`` fixture's function)."""
    from medtool.phantom import write_dataset

    write_dataset(root / "phantom", cases=CASES, seed=SEED, shape=SHAPE, cxr=0,
                  step={"command": "medtool phantom test"})
    for args in (("dicom2npy", root / "phantom" / "ct", root / "raw"),
                 ("hu", root / "raw", root / "hu"),
                 ("resample", root / "hu", root / "crops", "--shape", "32", "32", "--crop-z", "12")):
        result = invoke(*args, "-q")
        assert result.exit_code == 0, result.output
    folds = root / "folds.csv"
    folds.write_text("case_id,fold\n" + "".join(f"{c},{f}\n" for c, f in FOLDS.items()))
    return root / "crops", root / "phantom" / "labels.csv", folds
