"""The main job's summary: OUT/summary.json from the scores it wrote, and a table of what it made.

    python examples/summary.py OUT --seconds N

Reads OUT/scores/lungs.json, recist.json, detect.json (``medtool score --json``) and
gradcam.json (``medtool gradcam --json``). A value that could not be computed (an AUC over
one class at the test size) is ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _scores(path: Path) -> dict:
    board = json.loads(path.read_text())["leaderboard"]
    return {**board[0]["scores"], "cases": board[0]["cases"]} if board else {}


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def summarise(out: Path, seconds: float) -> dict:
    """The summary's values (see the module docstring)."""
    scores = out / "scores"
    lungs = _scores(scores / "lungs.json")
    per_lung = {k: _number(v) for k, v in lungs.items() if k.startswith("dice[")}
    recist = _scores(scores / "recist.json")
    detect = _scores(scores / "detect.json")
    ratios = [row["inside_outside"] for row in json.loads((scores / "gradcam.json").read_text())
              if row.get("inside_outside") is not None]
    lung_values = [v for v in per_lung.values() if v is not None]
    return {
        "lung_dice": min(lung_values) if lung_values else _number(lungs.get("dice")),
        "lung_dice_per_label": per_lung,
        "lung_hd95_mm": _number(lungs.get("hd95")),
        "lung_cases": lungs.get("cases"),
        "recist_auc": _number(recist.get("auc")),
        "recist_accuracy": _number(recist.get("accuracy")),
        "recist_cases": recist.get("cases"),
        "detect_map_iou": _number(detect.get("map-iou")),
        "detect_cases": detect.get("cases"),
        "gradcam_inside_outside": sum(ratios) / len(ratios) if ratios else None,
        "gradcam_cases": len(ratios),
        "seconds": round(seconds, 1),
    }


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(summary: dict, out: Path) -> str:
    """The final table: each model, what it was scored on, its number and where its files are."""
    oof = out / "run_recist" / "oof.csv"
    recist, table_path = ("out-of-fold", oof) if oof.is_file() else ("all", out / "recist.csv")
    rows = [
        ("lung segmentation", f"held-out CTs ({summary['lung_cases']})", "Dice, lower lung",
         _shown(summary["lung_dice"]), out / "pred_lungs"),
        ("RECIST >= 20 mm classifier", f"{recist} CTs ({summary['recist_cases']})", "AUC",
         _shown(summary["recist_auc"]), table_path),
        ("Grad-CAM of the classifier", f"held-out CTs with a tumour ({summary['gradcam_cases']})",
         "inside / outside", _shown(summary["gradcam_inside_outside"]), out / "gradcam"),
        ("X-ray opacity detector", f"held-out X-rays ({summary['detect_cases']})", "RSNA map-iou",
         _shown(summary["detect_map_iou"]), out / "cxr_predictions.csv"),
    ]
    head = ("model", "scored on", "metric", "value", "files")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    lines.append(f"main job: {summary['seconds']:.0f} s; {out / 'summary.json'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    summary = summarise(args.out, args.seconds)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table(summary, args.out))


if __name__ == "__main__":
    main()
