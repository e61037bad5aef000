"""Datasets written in their owners' layouts (Decathlon, nnU-Net v2 raw, BraTS) from small
CT-like cases, for the layout tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medtool.formats import save_volume
from medtool.volume import Volume

SHAPE = (6, 10, 12)


def _case(seed: int, *, value: float = 40.0) -> tuple[Volume, Volume]:
    """A small CT-like image (air with a box of soft tissue, label 1, and a smaller box, label 2)."""
    rng = np.random.default_rng(seed)
    image = np.full(SHAPE, -1000.0, np.float32) + rng.normal(0, 5, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:5, 2:8, 3:9] = 1
    labels[2:4, 4:6, 5:7] = 2
    image[labels > 0] = value
    grid = dict(spacing=(2.5, 0.8, 0.8), origin=(-10.0, 20.0, 5.0 + seed))
    return Volume(image, **grid), Volume(labels, **grid)


def write_decathlon(root: Path, cases: int = 3, *, macos_junk: bool = True) -> Path:
    task = root / "Task03_Liver"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    training = []
    for i in range(cases):
        image, labels = _case(i)
        save_volume(image, task / "imagesTr" / f"liver_{i}.nii.gz")
        save_volume(labels, task / "labelsTr" / f"liver_{i}.nii.gz")
        training.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
        if macos_junk:      # the archives carry AppleDouble files beside every image
            (task / "imagesTr" / f"._liver_{i}.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    save_volume(_case(99)[0], task / "imagesTs" / "liver_99.nii.gz")
    (task / "dataset.json").write_text(json.dumps({
        "name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": cases, "training": training, "test": ["./imagesTs/liver_99.nii.gz"]}))
    return task


def write_nnunet(root: Path, cases: int = 3, *, channel: str = "CT") -> Path:
    dataset = root / "Dataset042_Box"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (dataset / sub).mkdir(parents=True)
    for i in range(cases):
        image, labels = _case(i)
        save_volume(image, dataset / "imagesTr" / f"box_{i:03d}_0000.nii.gz")
        save_volume(labels, dataset / "labelsTr" / f"box_{i:03d}.nii.gz")
    save_volume(_case(7)[0], dataset / "imagesTs" / "box_007_0000.nii.gz")
    (dataset / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": channel}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return dataset


def write_brats(root: Path, cases: int = 3, *, unlabelled: int = 1) -> Path:
    brats = root / "BraTS"
    for i in range(cases + unlabelled):
        case = f"BraTS20_Training_{i:03d}"
        (brats / case).mkdir(parents=True)
        image, labels = _case(i, value=300.0)
        for number, modality in enumerate(("flair", "t1", "t1ce", "t2")):
            save_volume(image.with_array(np.abs(image.array) + 100 * number), brats / case / f"{case}_{modality}.nii.gz")
        if i < cases:
            save_volume(labels, brats / case / f"{case}_seg.nii.gz")
    return brats
