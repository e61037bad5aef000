"""Converting a 512 x 512 x 300 CT DICOM series (one file per slice) to uncompressed NIfTI.

medtool's ``convert`` (``--workers 2`` and ``--workers 1``) against dcm2niix (``-z n``),
SimpleITK's ImageSeriesReader + WriteImage and dicom2nifti, all on the same folder in the same
run. The series is a medtool phantom CT whose slices are mirrored back and forth along z to reach
300 slices (the content along z does not matter for timing). The files are read once before
timing, so every contender sees the same page cache. Target: faster than SimpleITK and
dicom2nifti, and at least half of dcm2niix's speed with two workers (ratio >= 0.5).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from medtool.ingest import convert
from medtool.phantom.ct import make_ct
from medtool.phantom.dicomfiles import Study, write_ct_series
from medtool.phantom.identity import make_person, make_site

SLICES = 300
SHAPE = 512
CASE = f"DICOM {SHAPE}x{SHAPE}x{SLICES} -> .nii"


def _zigzag(n_have: int, n_want: int) -> np.ndarray:
    """Indices 0, 1, ..., n-1, n-2, ..., 0, 1, ... (mirrored tiling: no jumps between slices)."""
    period = np.r_[np.arange(n_have), np.arange(n_have - 2, 0, -1)] if n_have > 1 else np.zeros(1, int)
    return np.resize(period, n_want)


def _write_series(folder: Path) -> None:
    rng = np.random.default_rng(0)
    case = make_ct(rng, shape=SHAPE)
    index = _zigzag(case.hu.shape[0], SLICES)
    case = dataclasses.replace(case, hu=case.hu[index], lungs=case.lungs[index],
                               tumour=case.tumour[index])
    study = Study(date=dt.date(2020, 1, 1), time="093000", accession="A12345678", study_id="4242",
                  description="CT CHEST WITHOUT CONTRAST", uid_seed="medtool-bench-dicom")
    write_ct_series(folder, case, person=make_person(rng), site=make_site(rng), study=study, rng=rng)


def _warm_cache(folder: Path) -> int:
    total = 0
    for path in sorted(folder.iterdir()):
        total += len(path.read_bytes())
    return total


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def run(*, repeat: int, timeit) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        series = temp / "series"
        series.mkdir()
        _write_series(series)
        files = sorted(series.iterdir())
        size = _warm_cache(series)
        print(f"bench_dicom: {len(files)} files, {size / 2**20:.0f} MiB in {series}")
        out = temp / "out"
        out.mkdir()

        def ours(workers: int):
            def call():
                report = convert([series], out / "ours.nii", fmt="nii", workers=workers, force=True)
                if report.failures or len(report.written) != 1:
                    raise RuntimeError(f"medtool convert failed: {report.failures}")
            return call

        ours_j2 = timeit(ours(2), repeat=repeat)
        ours_j1 = timeit(ours(1), repeat=repeat)
        written = convert([series], out / "ours.nii", fmt="nii", workers=2, force=True).written[0]
        print(f"bench_dicom: medtool wrote shape {written['shape']} {written['dtype']}")

        if shutil.which("dcm2niix") is None:
            print("bench_dicom: dcm2niix not on PATH, skipping its rows")
        else:
            def peer_dcm2niix():
                target = _fresh(out / "dcm2niix")
                subprocess.run(["dcm2niix", "-z", "n", "-o", str(target), "-f", "peer", str(series)],
                               check=True, capture_output=True)
                if not (target / "peer.nii").exists():
                    raise RuntimeError(f"dcm2niix wrote {sorted(p.name for p in target.iterdir())}")

            dcm2niix_s = timeit(peer_dcm2niix, repeat=repeat)
            rows.append({"case": f"{CASE} (medtool -j2)", "peer": "dcm2niix -z n",
                         "medtool_s": ours_j2, "peer_s": dcm2niix_s})
            rows.append({"case": f"{CASE} (medtool -j1)", "peer": "dcm2niix -z n",
                         "medtool_s": ours_j1, "peer_s": dcm2niix_s})

        try:
            import SimpleITK as sitk
        except ImportError as exc:
            print(f"bench_dicom: SimpleITK not importable ({exc}), skipping its row")
        else:
            def peer_sitk():
                reader = sitk.ImageSeriesReader()
                names = reader.GetGDCMSeriesFileNames(str(series))
                reader.SetFileNames(names)
                image = reader.Execute()
                sitk.WriteImage(image, str(out / "sitk.nii"))

            rows.append({"case": f"{CASE} (medtool -j2)", "peer": "SimpleITK series",
                         "medtool_s": ours_j2, "peer_s": timeit(peer_sitk, repeat=repeat)})

        try:
            import dicom2nifti

            def peer_d2n():
                dicom2nifti.dicom_series_to_nifti(str(series), str(out / "d2n.nii"),
                                                  reorient_nifti=False)

            d2n_s = timeit(peer_d2n, repeat=repeat)
        except Exception as exc:  # noqa: BLE001 - a failing peer is reported, not fatal
            print(f"bench_dicom: dicom2nifti failed, skipping its row: {type(exc).__name__}: {exc}")
        else:
            rows.append({"case": f"{CASE} (medtool -j2)", "peer": "dicom2nifti",
                         "medtool_s": ours_j2, "peer_s": d2n_s})
    return rows
