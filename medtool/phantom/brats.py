"""``medtool phantom --kind brain-mri``: synthetic brain MRI cases in the BraTS layout.

Layout written under ``OUT`` (no ``dataset.json``; the BraTS folders as the challenge ships
them)::

    <case>/<case>_flair.nii.gz     FLAIR     int16, arbitrary positive units (white matter on T1 = 1000)
    <case>/<case>_t1.nii.gz        T1
    <case>/<case>_t1ce.nii.gz      T1 after contrast (T1c)
    <case>/<case>_t2.nii.gz        T2
    <case>/<case>_seg.nii.gz       uint8 tumour labels (:data:`~medtool.phantom.brain.LABEL_CONVENTIONS`)

The five files of a case share one grid exactly (same shape, spacing, origin and direction;
an axial LPS stack, written with its RAS affine as every medtool NIfTI). Case ids are
``brain_NNN``; each case draws from its own child of the seed, so ``--workers`` does not change
the result. What the images show is described in :mod:`medtool.phantom.brain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..batch import run_batch
from ..files import atomic_directory, check_writable
from ..formats import save_volume
from ..volume import AXIAL_DIRECTION, Volume
from ..errors import UsageError
from .brain import (DEFAULT_CONVENTION, DEFAULT_SHAPE, FOV_MM, LABEL_NAMES, MIN_SHAPE, MODALITIES,
                    check_convention, make_brain)

#: File-name suffix of the segmentation, after the modalities' (``<case>_<name>.nii.gz``).
SEG = "seg"
#: Sequence names written into each image's metadata.
SEQUENCES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1c", "t2": "T2"}
#: The file format of every volume (BraTS's).
SUFFIX = ".nii.gz"


@dataclass
class BrainJob:
    """Everything one worker needs to write one brain MRI case."""

    out: Path
    case_id: str
    seed: np.random.SeedSequence
    shape: int
    convention: str
    skull_strip: bool
    force: bool
    step: dict[str, Any]


def case_files(out: Path, case_id: str) -> dict[str, Path]:
    """The files of one case by name (the modalities, then ``seg``)."""
    return {name: out / case_id / f"{case_id}_{name}{SUFFIX}" for name in (*MODALITIES, SEG)}


def write_brain_case(job: BrainJob) -> dict[str, Any]:
    """Generate and write one case; return its voxel count per segmentation label."""
    case = make_brain(np.random.default_rng(job.seed), shape=job.shape, skull_strip=job.skull_strip)
    seg = case.seg(job.convention)
    grid = dict(spacing=case.spacing, origin=case.origin, direction=AXIAL_DIRECTION)
    source = {"case_id": job.case_id, "source": "medtool phantom --kind brain-mri"}
    files = case_files(Path("."), job.case_id)
    with atomic_directory(job.out / job.case_id, force=job.force) as folder:
        for name in MODALITIES:
            meta = {"units": "raw", "modality": "MR", "sequence": SEQUENCES[name], **source}
            save_volume(Volume(case.images[name], **grid, meta=meta, history=[job.step]),
                        folder / files[name].name)
        meta = {"units": "label", "modality": "SEG", "labels": LABEL_NAMES[job.convention],
                "convention": f"BraTS {job.convention}", **source}
        save_volume(Volume(seg, **grid, meta=meta, history=[job.step]), folder / files[SEG].name)
    counts = np.bincount(seg.ravel(), minlength=1 + max(map(int, LABEL_NAMES[job.convention])))
    return {"case_id": job.case_id, "voxels": {label: int(counts[int(label)])
                                               for label in LABEL_NAMES[job.convention]}}


def write_brain_dataset(out: str | Path, *, cases: int = 5, seed: int = 42, shape: int = DEFAULT_SHAPE,
                        convention: str = DEFAULT_CONVENTION, skull_strip: bool = False,
                        workers: int = 1, force: bool = False, step: dict[str, Any] | None = None,
                        progress: bool = False) -> dict[str, Any]:
    """Write ``cases`` brain MRI cases in the BraTS layout under ``out``; return a summary.

    Parameters
    ----------
    out
        The output folder; each case is a folder ``<out>/brain_NNN``.
    cases, seed, shape
        How many cases, the seed (same seed, same files) and the voxels along each axis of the
        192 mm cube (192: 1 mm voxels).
    convention
        The BraTS label convention of the segmentation: ``2015`` (necrosis 1, edema 2,
        non-enhancing 3, enhancing 4), ``2017`` (1, 2, 4) or ``2023`` (1, 2, 3).
    skull_strip
        Zero every image outside the intracranial space, as BraTS ships its images.

    Raises
    ------
    OutputExistsError
        A case folder exists already and ``force`` is false (checked before any work).
    UsageError
        An unknown ``convention`` or too small a ``shape``.
    """
    out = Path(out)
    check_convention(convention)
    if shape < MIN_SHAPE:
        raise UsageError(f"--shape {shape}: a brain MRI needs at least {MIN_SHAPE} voxels a side")
    width = max(3, len(str(cases)))
    seeds = np.random.SeedSequence(seed).spawn(cases)
    jobs = [BrainJob(out, f"brain_{i + 1:0{width}d}", seeds[i], shape, convention, skull_strip,
                     force, step or {}) for i in range(cases)]
    for job in jobs:
        check_writable(out / job.case_id, force=force)
    outcome = run_batch(write_brain_case, jobs, workers=workers, description="phantom",
                        progress=progress, name=lambda job: job.case_id)
    if outcome.failures:
        raise outcome.failures[0][1]
    spacing = FOV_MM / shape
    return {"kind": "brain-mri", "cases": cases, "shape": [shape] * 3, "spacing_mm": [spacing] * 3,
            "convention": f"BraTS {convention}", "labels": LABEL_NAMES[convention],
            "modalities": list(MODALITIES), "files": cases * (len(MODALITIES) + 1),
            "voxels": {row["case_id"]: row["voxels"] for row in outcome.results}}
