"""Write the checkpoints of tests/test_checkpoints.py: tiny segment and classify runs of this
medtool, and what they predict on fixed inputs. Run it (``python tests/data/checkpoints/make.py``)
only when the checkpoint format changes on purpose: the test guards that checkpoints written
before still load and predict the same."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))


def main() -> None:
    from typer.testing import CliRunner

    from medtool.cli import app
    from tests.layout_fixtures import write_nnunet
    from tests.test_checkpoints import classify_inputs, expected_outputs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = write_nnunet(tmp, cases=3)
        runner = CliRunner()
        result = runner.invoke(app, ["train", "segment", "--dataset", str(dataset), "--dim", "2d", "--width", "4",
                                     "--depth", "2", "--epochs", "1", "--steps", "2", "--batch-size", "2",
                                     "--out", str(tmp / "seg"), "-q"])
        assert result.exit_code == 0, result.output
        crops = classify_inputs(tmp / "crops")
        result = runner.invoke(app, ["train", "classify", "--images", str(crops), "--labels", str(crops / "labels.csv"),
                                     "--model", "simple3d", "--width", "4", "--epochs", "1", "--normalize", "zscore",
                                     "--out", str(tmp / "cls"), "-q"])
        assert result.exit_code == 0, result.output
        for task, run in (("segment", "seg"), ("classify", "cls")):
            shutil.copy(tmp / run / "last.pt", HERE / f"{task}.pt")
    np.savez_compressed(HERE / "expected.npz", **expected_outputs(HERE))


if __name__ == "__main__":
    main()
