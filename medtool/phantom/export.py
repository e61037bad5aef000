"""How the phantom's CT studies are laid out on disk, and the clutter of real exports.

Layouts (``medtool phantom --layout``):

* ``flat`` (default): ``ct/<case_id>/IM-NNNN.dcm``, every series of the study in one folder.
* ``tcia``: the tree of a TCIA download,
  ``ct/<PatientID>/<MM-DD-YYYY>-NA-<StudyDescription>-<NNNNN>/<SeriesNumber>.000000-<SeriesDescription>-<NNNNN>/1-NNN.dcm``.

``--clutter`` adds to each study what scanner exports hold besides the image series: a
localizer (topogram), an RGB dose screen (Secondary Capture, burned-in text), an X-Ray
Radiation Dose SR, a second reconstruction with a sharper kernel, a gantry-tilted series and a
series with uneven slice spacing. The extra image series are resampled from the case's CT;
the truth files stay on the main series' grid.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .ct import CTCase
from .dicomfiles import (Study, write_ct_series, write_dose_report, write_dose_screen,
                         write_localizer)
from .identity import Person, Site

#: Layouts of ``--layout``.
LAYOUTS = ("flat", "tcia")
#: Gantry tilt of the tilted series (degrees, either sign): the range of real head and chest
#: protocols (the exports in issue 22 had 16.5 and 18.5).
TILT_RANGE_DEG = (12.0, 20.0)
#: Uneven series: the upper part keeps the CT's spacing, the lower part this many times it
#: (not a whole number, so it is no "missing slices" pattern).
UNEVEN_FACTOR = 1.6
#: Series numbers and descriptions of the clutter's image series.
SHARP_SERIES, TILTED_SERIES, UNEVEN_SERIES = 3, 4, 5
SHARP_KERNEL = "B70f"
#: Weight of the Laplacian the sharp kernel subtracts.
SHARPEN = 0.5


def series_folder(study_dir: Path, layout: str, number: int, description: str,
                  study: Study) -> Path:
    """The folder of one series of the study in ``study_dir`` (created)."""
    if layout == "flat":
        folder = study_dir
    else:
        folder = study_dir / f"{number}.000000-{_tcia(description)}-{_digits(study, number)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def study_path(layout: str, *, case_id: str, patient_id: str, study: Study) -> Path:
    """Where a case's study goes under ``OUT/ct``: ``<case_id>``, or TCIA's
    ``<PatientID>/<MM-DD-YYYY>-NA-<StudyDescription>-<NNNNN>``."""
    if layout == "flat":
        return Path(case_id)
    date = study.date.strftime("%m-%d-%Y")
    return Path(patient_id, f"{date}-NA-{_tcia(study.description)}-{_digits(study, 'study')}")


def _tcia(text: str) -> str:
    """A description as TCIA writes it into folder names (no spaces or slashes)."""
    return re.sub(r"[^A-Za-z0-9.+-]", "", text) or "NA"


def _digits(study: Study, what: object) -> str:
    """TCIA's five digits after a folder name, derived from the study (same seed, same name)."""
    import hashlib

    digest = hashlib.sha256(f"{study.uid_seed}/{what}".encode()).digest()
    return f"{10000 + int.from_bytes(digest[:4], 'big') % 90000}"


def write_study(study_dir: Path, case: CTCase, *, layout: str, clutter: bool, person: Person,
                site: Site, study: Study, rng: np.random.Generator,
                labels_as: str | None = None) -> int:
    """Write the CT series of ``case`` (and with ``clutter`` the rest of a real export) into
    ``study_dir``; the number of image series that dicom2npy should convert.

    ``labels_as`` (:data:`LABELS_AS`) also writes the lung truth as an RT Structure Set or a
    DICOM SEG of the CT series into its folder (:func:`write_truth_labels`)."""
    names = "tcia" if layout == "tcia" else "random"
    main = f"CHEST {case.slice_thickness:.3g}mm {site.kernel}"
    main_folder = series_folder(study_dir, layout, 2, main, study)
    write_ct_series(main_folder, case, person=person, site=site, study=study, rng=rng, names=names)
    if labels_as is not None:
        write_truth_labels(main_folder, case, study=study, labels_as=labels_as)
    if not clutter:
        return 1
    where = {"person": person, "site": site, "study": study}
    write_localizer(series_folder(study_dir, layout, 1, "TOPOGRAM", study), case, **where)
    write_dose_screen(series_folder(study_dir, layout, 501, "Patient Protocol", study), rng=rng,
                      **where)
    write_dose_report(series_folder(study_dir, layout, 502, "Dose Report", study), **where)
    sharp = f"CHEST {case.slice_thickness:.3g}mm {SHARP_KERNEL}"
    write_ct_series(series_folder(study_dir, layout, SHARP_SERIES, sharp, study), case,
                    rng=rng, series_number=SHARP_SERIES, key="sharp", kernel=SHARP_KERNEL,
                    hu=_sharpened(case.hu), names=names, prefix=f"IM{SHARP_SERIES}", **where)
    tilt = float(rng.uniform(*TILT_RANGE_DEG) * rng.choice([-1, 1]))
    tilted = f"CHEST TILT {abs(tilt):.1f}"
    write_ct_series(series_folder(study_dir, layout, TILTED_SERIES, tilted, study), case,
                    rng=rng, series_number=TILTED_SERIES, key="tilted", tilt_deg=tilt,
                    hu=tilted_values(case, tilt), description=tilted, names=names,
                    prefix=f"IM{TILTED_SERIES}", **where)
    z, values = uneven_values(case)
    uneven = "CHEST VARIABLE SPACING"
    write_ct_series(series_folder(study_dir, layout, UNEVEN_SERIES, uneven, study), case,
                    rng=rng, series_number=UNEVEN_SERIES, key="uneven", hu=values,
                    z_positions=z, description=uneven, names=names,
                    prefix=f"IM{UNEVEN_SERIES}", **where)
    return 4


#: ``--labels-as``: the lung truth written into the CT series folder, as which DICOM object.
LABELS_AS = ("rtstruct", "seg")
#: ROI / segment names of the lung truth (the LCTSC challenge's), by label value.
TRUTH_ROI_NAMES = {"1": "Lung_R", "2": "Lung_L"}
#: File names of the truth objects in the series folder.
TRUTH_FILES = {"rtstruct": "RS-lungs.dcm", "seg": "SEG-lungs.dcm"}


def write_truth_labels(folder: Path, case: CTCase, *, study: Study, labels_as: str) -> Path:
    """The lung truth of ``case`` as an RTSTRUCT or SEG (``labels_as``) of the CT series in
    ``folder``, with UIDs and dates from the study (same seed, same file)."""
    import datetime as dt

    from ..dicomlabels import Algorithm, reference_for, scan_references, write_dicom_labels
    from ..volume import AXIAL_DIRECTION, Volume

    truth = Volume(case.lungs, case.spacing, case.origin, AXIAL_DIRECTION,
                   meta={"labels": dict(TRUTH_ROI_NAMES)})
    reference = reference_for(truth, scan_references([folder]), series_uid=study.uid("series", "ct"))
    created = dt.datetime.combine(study.date, dt.time.fromisoformat(
        f"{study.time[:2]}:{study.time[2:4]}:{study.time[4:6]}"))
    path = folder / TRUTH_FILES[labels_as]
    write_dicom_labels(truth, reference, path, fmt="dcm-seg" if labels_as == "seg" else "rtstruct",
                       algorithm=Algorithm(name="medtool phantom", manual=True),
                       series_uid=study.uid("series", labels_as), sop_uid=study.uid(labels_as, 1),
                       created=created, description="LUNG TRUTH")
    return path


def _sharpened(hu: np.ndarray) -> np.ndarray:
    """A sharper kernel's reconstruction: the CT plus its in-plane Laplacian (edges enhanced)."""
    from scipy import ndimage

    filled = np.nan_to_num(hu, nan=-1000.0)
    sharp = filled - SHARPEN * np.stack([ndimage.laplace(s, mode="nearest") for s in filled])
    return np.where(np.isnan(hu), np.nan, sharp).astype(np.float32)


def tilted_values(case: CTCase, tilt_deg: float) -> np.ndarray:
    """The CT sampled on gantry-tilted planes: slice k through ``(x0, y0, z_k)`` with rows along
    x and columns along ``(0, cos t, -sin t)`` (the orientation :func:`write_ct_series` writes
    with ``tilt_deg``); outside the CT: NaN (out of the field of view)."""
    from scipy import ndimage

    n, rows, cols = case.hu.shape
    dz, dy, _ = case.spacing
    t = np.deg2rad(tilt_deg)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    # offsets from slice k's position (LPS), as indices of the CT's (z, y, x) grid
    y_index = i * np.cos(t)
    z_offset = -i * dy * np.sin(t) / dz
    filled = np.nan_to_num(case.hu, nan=-1000.0)
    field = np.isnan(case.hu).astype(np.float32)
    out = np.empty(case.hu.shape, np.float32)
    for k in range(n):                              # one plane at a time: bounded memory
        coords = np.stack([k + z_offset, y_index, j.astype(np.float64)])
        values = ndimage.map_coordinates(filled, coords, order=1, mode="constant", cval=np.nan)
        outside = ndimage.map_coordinates(field, coords, order=0, mode="constant", cval=1.0)
        out[k] = np.where(outside > 0, np.nan, values)
    return out


def uneven_values(case: CTCase) -> tuple[np.ndarray, np.ndarray]:
    """Slice positions (mm) spaced as the CT's above its middle and :data:`UNEVEN_FACTOR`
    times that below, and the CT interpolated there."""
    n = case.hu.shape[0]
    dz = case.spacing[0]
    z0 = case.origin[2]
    top = z0 + (n - 1) * dz
    middle = z0 + (n // 2) * dz
    upper = np.arange(middle, top + dz / 2, dz)
    lower = np.arange(middle - UNEVEN_FACTOR * dz, z0 - dz / 2, -UNEVEN_FACTOR * dz)[::-1]
    z = np.concatenate([lower, upper])
    index = (z - z0) / dz
    below = np.clip(np.floor(index).astype(int), 0, n - 1)
    above = np.clip(below + 1, 0, n - 1)
    weight = (index - below)[:, None, None].astype(np.float32)
    values = (1 - weight) * case.hu[below] + weight * case.hu[above]   # NaN stays NaN
    return z, values.astype(np.float32)
