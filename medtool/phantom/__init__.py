"""``medtool phantom``: the project's synthetic data set with exact ground truth.

Layout written under ``OUT``::

    ct/<case_id>/IM-NNNN.dcm           one CT series per case, file names not in slice order
    truth/<case_id>_lungs.nii.gz       0 background, 1 right lung, 2 left lung (series grid)
    truth/<case_id>_tumour.nii.gz      0/1
    truth/<case_id>_anatomy.nii.gz     with --range/--bowel/--effusion/...: what is not lung
                                       (ct.ANATOMY_LABELS: airway, bowel gas and content,
                                       effusion, emphysema, pneumonectomy space)
    labels.csv                         case_id,patient_id,label,tumour_volume_ml,tumour_diameter_mm,
                                       PatientID (the DICOM one)
    cxr/<patientId>.dcm                chest X-rays (CR)
    cxr_boxes.csv                      patientId,x,y,width,height,Target (RSNA form)

The same seed gives the same files (every case draws from its own child of the seed, so
``--workers`` does not change the result). ``label`` is 1 when the case has a tumour whose
longest axial diameter is at least :data:`~medtool.phantom.ct.LABEL_DIAMETER_MM`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..batch import run_batch
from ..files import atomic_directory, atomic_output, atomic_write_text, check_writable
from ..errors import UsageError, check_choice
from ..formats import save_volume
from ..metrics import longest_axial_diameter
from ..volume import AXIAL_DIRECTION, Volume
from .ct import LABEL_DIAMETER_MM, LEFT_LUNG, RIGHT_LUNG, TUMOUR_FRACTION, make_ct
from .ct import ANATOMY_LABELS, STUDY_TITLES, Anatomy     # the optional anatomy (scan ranges, bowel ...)
from .cxr import RSNA_SIZE, make_cxr
from .dicomfiles import Study, write_cxr
from .export import LABELS_AS, LAYOUTS, study_path, write_study
from .identity import Person, Site, make_person, make_site

#: Chance that a new case is a follow-up scan of an earlier patient (who then has two cases).
FOLLOW_UP_PROBABILITY = 0.3
#: What a follow-up scan is: ``independent`` (its own anatomy, as always) or ``grown`` (the
#: baseline's body and lungs, its tumour grown by 2^(days / (3 x doubling time))).
FOLLOW_UPS = ("independent", "grown")
#: Volume doubling times (days) of the tumours of grown follow-ups; the diameter grows at most
#: this much.
DOUBLING_DAYS = (90.0, 360.0)
MAX_GROWTH = 2.0
LABELS_HEADER = ("case_id", "patient_id", "label", "tumour_volume_ml", "tumour_diameter_mm",
                 "PatientID")
BOXES_HEADER = ("patientId", "x", "y", "width", "height", "Target")
LUNG_LABELS = {str(RIGHT_LUNG): "right lung", str(LEFT_LUNG): "left lung"}


@dataclass
class CaseJob:
    """Everything one worker needs to write one CT case."""

    out: Path
    case_id: str
    patient_id: str
    person: Person
    site: Site
    study: Study
    seed: np.random.SeedSequence
    shape: int
    force: bool
    step: dict[str, Any]
    tumour_fraction: float = TUMOUR_FRACTION
    layout: str = "flat"                 # export layout of the study (phantom.export)
    clutter: bool = False                # add what real exports hold besides the series
    anatomy: Anatomy = Anatomy()         # scan range, bowel, effusion ... (phantom.ct)
    baseline_seed: np.random.SeedSequence | None = None   # grown follow-up: the baseline's anatomy
    interval_days: int = 0               # ... and the days since it
    labels_as: str | None = None         # lung truth also as RTSTRUCT / SEG in the series folder


@dataclass
class XrayJob:
    """Everything one worker needs to write one chest X-ray."""

    out: Path
    patient_uid: str
    person: Person
    site: Site
    study: Study
    seed: np.random.SeedSequence
    size: int
    force: bool


def _study(rng: np.random.Generator, seed: int, key: str, date: dt.date, description: str) -> Study:
    return Study(date=date, time=f"{rng.integers(7, 19):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}",
                 accession=f"A{rng.integers(10**7, 10**8)}", study_id=f"{rng.integers(1000, 99999)}",
                 description=description, uid_seed=f"medtool-phantom-{seed}-{key}")


def plan(*, cases: int, seed: int, cxr: int, shape: int, out: Path, force: bool,
         step: dict[str, Any], tumour_fraction: float = TUMOUR_FRACTION,
         anatomy: Anatomy | None = None, follow_up: str = "independent", cxr_size: int | None = None,
         ) -> tuple[list[CaseJob], list[XrayJob]]:
    """Decide patients, studies and seeds of every case and X-ray (deterministic for ``seed``).

    ``anatomy`` applies to every CT case; ``follow_up`` (:data:`FOLLOW_UPS`) decides what a
    follow-up scan is; ``cxr_size`` is the X-rays' size in pixels (default: twice ``shape``,
    128 to :data:`~medtool.phantom.cxr.RSNA_SIZE`)."""
    anatomy = anatomy or Anatomy()
    title = STUDY_TITLES[anatomy.scan_range]
    first_seed: dict[str, tuple[np.random.SeedSequence, dt.date]] = {}   # patient: baseline
    root = np.random.SeedSequence(seed)
    plan_seed, *item_seeds = root.spawn(1 + cases + cxr)
    rng = np.random.default_rng(plan_seed)
    width = max(3, len(str(cases)))
    patients: list[tuple[str, Person, dt.date, int]] = []   # id, person, last scan, scans
    jobs: list[CaseJob] = []
    for index in range(cases):
        single = [i for i, p in enumerate(patients) if p[3] == 1]
        if single and rng.uniform() < FOLLOW_UP_PROBABILITY:
            which = int(rng.choice(single))
            patient_id, person, last, _ = patients[which]
            date = last + dt.timedelta(days=int(rng.integers(60, 400)))
            patients[which] = (patient_id, person, date, 2)
            description = f"{title} FOLLOW-UP"
        else:
            patient_id, person = f"P{len(patients) + 1:0{width}d}", make_person(rng)
            date = dt.date(2016, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 7)))
            patients.append((patient_id, person, date, 1))
            description = f"{title} WITHOUT CONTRAST"
            first_seed[patient_id] = (item_seeds[index], date)
        case_id = f"case_{index + 1:0{width}d}"
        jobs.append(CaseJob(out, case_id, patient_id, person, make_site(rng),
                            _study(rng, seed, case_id, date, description),
                            item_seeds[index], shape, force, step, tumour_fraction))
        jobs[-1].anatomy = anatomy
        if follow_up == "grown" and description.endswith("FOLLOW-UP"):
            baseline, baseline_date = first_seed[patient_id]
            jobs[-1].baseline_seed, jobs[-1].interval_days = baseline, (date - baseline_date).days
    size = int(min(RSNA_SIZE, max(128, 2 * shape))) if cxr_size is None else int(cxr_size)
    xrays = []
    for index in range(cxr):
        uid = str(_uuid(rng))
        date = dt.date(2016, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 7)))
        xrays.append(XrayJob(out, uid, make_person(rng), make_site(rng),
                             _study(rng, seed, uid, date, "XR CHEST 1 VIEW"),
                             item_seeds[cases + index], size, force))
    return jobs, xrays


def _uuid(rng: np.random.Generator):
    import uuid

    return uuid.UUID(bytes=rng.bytes(16), version=4)


def _study_dir(job: CaseJob) -> Path:
    """The folder of the case's study under ``OUT/ct`` (see :mod:`medtool.phantom.export`)."""
    return job.out / "ct" / study_path(job.layout, case_id=job.case_id,
                                       patient_id=job.person.patient_id, study=job.study)


def _truth_paths(out: Path, case_id: str) -> tuple[Path, Path]:
    return out / "truth" / f"{case_id}_lungs.nii.gz", out / "truth" / f"{case_id}_tumour.nii.gz"


def _anatomy_path(out: Path, case_id: str) -> Path:
    """Truth of what is not lung; written when the anatomy is not the default chest."""
    return out / "truth" / f"{case_id}_anatomy.nii.gz"


def _make_case(job: CaseJob, rng: np.random.Generator):
    """The case's CT: its own anatomy, or for a grown follow-up the baseline's (same seed)
    with the tumour grown over the interval and the job's own noise."""
    if job.baseline_seed is None:
        return make_ct(rng, shape=job.shape, tumour_probability=job.tumour_fraction, anatomy=job.anatomy)
    doubling = rng.uniform(*DOUBLING_DAYS)
    growth = float(min(MAX_GROWTH, 2.0 ** (job.interval_days / (3.0 * doubling))))
    return make_ct(np.random.default_rng(job.baseline_seed), shape=job.shape,
                   tumour_probability=job.tumour_fraction, anatomy=job.anatomy,
                   tumour_growth=growth, noise_rng=rng)


def write_case(job: CaseJob) -> dict[str, Any]:
    """Generate and write one CT case; return its row of ``labels.csv``."""
    rng = np.random.default_rng(job.seed)
    case = _make_case(job, rng)
    lungs_path, tumour_path = _truth_paths(job.out, job.case_id)
    with atomic_directory(_study_dir(job), force=job.force) as folder:
        write_study(folder, case, layout=job.layout, clutter=job.clutter, person=job.person,
                    site=job.site, study=job.study, rng=rng, labels_as=job.labels_as)
    meta = {"units": "label", "modality": "SEG", "case_id": job.case_id, "source": "medtool phantom"}
    grid = dict(spacing=case.spacing, origin=case.origin, direction=AXIAL_DIRECTION)
    save_volume(Volume(case.lungs, **grid, meta={**meta, "labels": LUNG_LABELS}, history=[job.step]),
                lungs_path, force=job.force)
    save_volume(Volume(case.tumour, **grid, meta={**meta, "labels": {"1": "tumour"}}, history=[job.step]),
                tumour_path, force=job.force)
    if case.anatomy is not None:
        save_volume(Volume(case.anatomy, **grid, meta={**meta, "labels": ANATOMY_LABELS,
                                                       "anatomy": job.anatomy.describe()},
                           history=[job.step]), _anatomy_path(job.out, job.case_id), force=job.force)
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    diameter = longest_axial_diameter(case.tumour, case.spacing)
    return {
        "case_id": job.case_id,
        "patient_id": job.patient_id,
        "label": int(diameter >= LABEL_DIAMETER_MM),
        "tumour_volume_ml": round(float(case.tumour.sum()) * voxel_ml, 3),
        "tumour_diameter_mm": round(diameter, 2),
        "PatientID": job.person.patient_id,
    }


def write_xray(job: XrayJob) -> list[dict[str, Any]]:
    """Generate and write one chest X-ray; return its rows of ``cxr_boxes.csv``."""
    xray = make_cxr(np.random.default_rng(job.seed), size=job.size)
    path = job.out / "cxr" / f"{job.patient_uid}.dcm"
    with atomic_output(path, force=job.force) as temp:
        write_cxr(temp, xray.image, spacing_mm=xray.spacing_mm, view=xray.view,
                  person=job.person, site=job.site, study=job.study)
    if not xray.boxes:
        return [{"patientId": job.patient_uid, "x": "", "y": "", "width": "", "height": "", "Target": 0}]
    return [{"patientId": job.patient_uid, "x": f"{x:.1f}", "y": f"{y:.1f}", "width": f"{w:.1f}",
             "height": f"{h:.1f}", "Target": 1} for x, y, w, h in xray.boxes]


def _write(job: CaseJob | XrayJob):
    return write_case(job) if isinstance(job, CaseJob) else write_xray(job)


def _csv(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_dataset(out: str | Path, *, cases: int = 5, seed: int = 42, shape: int = 512,
                  cxr: int = 5, workers: int = 1, force: bool = False,
                  step: dict[str, Any] | None = None, progress: bool = False,
                  tumour_fraction: float = TUMOUR_FRACTION, layout: str = "flat",
                  clutter: bool = False,
                  anatomy: Anatomy | None = None, follow_up: str = "independent",
                  cxr_size: int | None = None, labels_as: str | None = None) -> dict[str, Any]:
    """Write the whole phantom data set under ``out``; return counts of what was written.

    ``anatomy`` (:class:`~medtool.phantom.ct.Anatomy`: scan range, bowel, effusion,
    emphysema, one lung, juxtapleural tumour) applies to every CT case; when it is not the
    default chest, ``truth/<case>_anatomy.nii.gz`` holds the truth of what is not lung.
    ``follow_up="grown"`` gives a follow-up scan the baseline's body and lungs and a grown
    tumour (:data:`FOLLOW_UPS`). ``cxr_size`` is the X-rays' size in pixels (default: twice
    ``shape``, 128 to 1024). ``labels_as`` (``rtstruct`` or ``seg``) also writes the lung
    truth into each CT series folder as that DICOM object (ROIs / segments ``Lung_R`` 1,
    ``Lung_L`` 2, as the LCTSC challenge names them).

    ``layout`` lays the CT studies out as ``flat`` (``ct/<case_id>/``) or as a TCIA download
    (``tcia``); ``clutter`` adds what real exports hold besides the image series (see
    :mod:`medtool.phantom.export`).

    ``tumour_fraction`` is each CT case's chance of a lung tumour (1 for a tumour-segmentation
    cohort in which every case has one, as in the Medical Segmentation Decathlon's lung task).

    Raises
    ------
    OutputExistsError
        ``out`` already holds a phantom data set and ``force`` is false.
    """
    out = Path(out)
    check_choice("--layout", layout, LAYOUTS)
    check_choice("--follow-up", follow_up, FOLLOW_UPS)
    if labels_as is not None:
        check_choice("--labels-as", labels_as, LABELS_AS)
    if cxr_size is not None and cxr_size < 32:
        raise UsageError(f"--cxr-size {cxr_size}: an X-ray needs at least 32 x 32 pixels")
    case_jobs, xray_jobs = plan(cases=cases, seed=seed, cxr=cxr, shape=shape, out=out,
                                force=force, step=step or {}, tumour_fraction=tumour_fraction,
                                anatomy=anatomy, follow_up=follow_up, cxr_size=cxr_size)
    # Refuse before generating anything, rather than after minutes of work.
    outputs = [out / "labels.csv", out / "cxr_boxes.csv"]
    for job in case_jobs:
        job.layout, job.clutter, job.labels_as = layout, clutter, labels_as
        outputs += [_study_dir(job), *_truth_paths(out, job.case_id)]
        outputs += [] if job.anatomy.is_default else [_anatomy_path(out, job.case_id)]
    outputs += [out / "cxr" / f"{job.patient_uid}.dcm" for job in xray_jobs]
    for path in outputs:
        check_writable(path, force=force)
    outcome = run_batch(_write, [*case_jobs, *xray_jobs], workers=workers,
                        description="phantom", progress=progress,
                        name=lambda job: getattr(job, "case_id", None) or job.patient_uid)
    if outcome.failures:
        raise outcome.failures[0][1]
    labels = outcome.results[:cases]
    boxes = [row for rows in outcome.results[cases:] for row in rows]
    atomic_write_text(out / "labels.csv", _csv(LABELS_HEADER, labels), force=force)
    atomic_write_text(out / "cxr_boxes.csv", _csv(BOXES_HEADER, boxes), force=force)
    ct_files = sum(1 for _ in (out / "ct").rglob("*.dcm")) if cases else 0
    return {"cases": cases, "ct_files": ct_files, "cxr": cxr,
            "positives": sum(row["label"] for row in labels)}


