"""Checkpoints written by an earlier medtool still load and predict the same (segment and
classify; a detection checkpoint is 45 MB and is not kept in the repository). The files in
tests/data/checkpoints are made by its make.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtool.train import CHECKPOINT_VERSION, build_model, load_checkpoint

DATA = Path(__file__).resolve().parent / "data" / "checkpoints"


def classify_inputs(folder: Path) -> Path:
    """Six small MR-like volumes, classes 0 and 1, and their labels.csv."""
    from medtool.formats import save_volume
    from medtool.volume import Volume

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["case_id,label"]
    for i in range(6):
        array = rng.normal(0, 1, (4, 8, 8)).astype(np.float32) + (i % 2)
        save_volume(Volume(array, (2.0, 1.0, 1.0), meta={"modality": "MR", "units": "MR"}), folder / f"c{i}.npy")
        lines.append(f"c{i},{i % 2}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def expected_outputs(folder: Path) -> dict[str, np.ndarray]:
    """What the checkpoints in ``folder`` predict: segmentation labels and probabilities of one
    CT-like case on its own grid, class probabilities of fixed volumes."""
    import torch

    from medtool.classify import predict_arrays
    from medtool.segmentation import PredictSettings, predict_volume
    from tests.layout_fixtures import _case

    segment = load_checkpoint(folder / "segment.pt")
    image, _ = _case(11)
    labels, maps = predict_volume(build_model(segment), image, segment["recipe"],
                                  PredictSettings(probabilities=True), device=torch.device("cpu"))
    classify = load_checkpoint(folder / "classify.pt")
    arrays = np.random.default_rng(1).normal(0, 1, (3, *classify["recipe"]["shape"])).astype(np.float32)
    probs = predict_arrays(build_model(classify), arrays[:, None], two_d=False, device=torch.device("cpu"))
    return {"segment_labels": labels.array, "segment_probs": np.stack([m.array for m in maps]),
            "classify_probs": probs}


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_a_kept_checkpoint_loads_with_its_format(task):
    checkpoint = load_checkpoint(DATA / f"{task}.pt")
    assert checkpoint["task"] == task and checkpoint["format_version"] <= CHECKPOINT_VERSION
    assert "recipe" in checkpoint and "classes" in checkpoint["recipe"]


def test_kept_checkpoints_predict_what_they_predicted():
    expected = np.load(DATA / "expected.npz")
    found = expected_outputs(DATA)
    np.testing.assert_array_equal(found["segment_labels"], expected["segment_labels"])
    np.testing.assert_allclose(found["segment_probs"], expected["segment_probs"], atol=1e-5)
    np.testing.assert_allclose(found["classify_probs"], expected["classify_probs"], atol=1e-5)
