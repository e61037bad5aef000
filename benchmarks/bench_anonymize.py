"""De-identifying 1000 phantom CT DICOM files (4 series of 250 slices, 256 x 256).

medtool anonymize (``--workers 1`` and ``2``, Basic Profile with ``--date-shift``) against
``deid`` (PyPI; its default ``dicom`` recipe through ``replace_identifiers``, one process, as
its documentation shows) and ``gdcmanon`` (GDCM's Basic Profile de-identification ``-e``, with
a throw-away self-signed certificate made by ``openssl`` because gdcmanon encrypts the removed
values into the file), all on the same folder in the same run, the files read once before
timing so every contender sees the same page cache. Target: faster than deid.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from medtool.anonymize import Settings, anonymize
from medtool.phantom.ct import make_ct
from medtool.phantom.dicomfiles import Study, write_ct_series
from medtool.phantom.identity import make_person, make_site

SERIES = 4
SLICES = 250
SHAPE = 256
CASE = f"anonymize {SERIES * SLICES} files {SHAPE}x{SHAPE}"


def _write_data(root: Path) -> None:
    rng = np.random.default_rng(1)
    base = make_ct(rng, shape=SHAPE)
    period = np.r_[np.arange(base.hu.shape[0]), np.arange(base.hu.shape[0] - 2, 0, -1)]
    index = np.resize(period, SLICES)
    case = dataclasses.replace(base, hu=base.hu[index], lungs=base.lungs[index],
                               tumour=base.tumour[index])
    for k in range(SERIES):
        study = Study(date=dt.date(2020, 1, 1 + k), time="093000", accession=f"A{k:08d}",
                      study_id=f"{4242 + k}", description="CT CHEST", uid_seed=f"bench-anon-{k}")
        folder = root / f"case_{k + 1:03d}"
        folder.mkdir(parents=True)
        write_ct_series(folder, case, person=make_person(rng), site=make_site(rng), study=study,
                        rng=rng)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def run(*, repeat: int, timeit) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        data = temp / "data"
        _write_data(data)
        files = _files(data)
        size = sum(len(p.read_bytes()) for p in files)
        print(f"bench_anonymize: {len(files)} files, {size / 2**20:.0f} MiB")
        out = temp / "out"
        settings = Settings(b"bench salt", frozenset({"modified_dates"}))

        def ours(workers: int):
            def call():
                report = anonymize([data], _fresh(out / "medtool"), settings=settings,
                                   workers=workers, force=True)
                if report.failures or len(report.written) != len(files):
                    raise RuntimeError(f"medtool anonymize failed: {report.failures[:3]}")
            return call

        ours_j1 = timeit(ours(1), repeat=repeat)
        ours_j2 = timeit(ours(2), repeat=repeat)

        try:
            from deid.config import DeidRecipe
            from deid.dicom import replace_identifiers
        except ImportError as exc:
            print(f"bench_anonymize: deid not importable ({exc}), skipping its rows")
        else:
            recipe = DeidRecipe()                     # deid's default "dicom" recipe
            names = [str(p) for p in files]

            def peer_deid():
                target = _fresh(out / "deid")
                written = replace_identifiers(names, deid=recipe, save=True, overwrite=True,
                                              output_folder=str(target))
                if len(written) != len(files):
                    raise RuntimeError(f"deid wrote {len(written)} of {len(files)} files")

            deid_s = timeit(peer_deid, repeat=repeat)
            rows.append({"case": f"{CASE} (medtool -j1)", "peer": "deid (default recipe)",
                         "medtool_s": ours_j1, "peer_s": deid_s})
            rows.append({"case": f"{CASE} (medtool -j2)", "peer": "deid (default recipe)",
                         "medtool_s": ours_j2, "peer_s": deid_s})

        gdcmanon, openssl = shutil.which("gdcmanon"), shutil.which("openssl")
        if gdcmanon is None or openssl is None:
            print("bench_anonymize: gdcmanon or openssl not on PATH, skipping its rows")
        else:
            key, cert = temp / "key.pem", temp / "cert.pem"
            subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key),
                            "-out", str(cert), "-days", "1", "-nodes", "-subj", "/CN=bench"],
                           check=True, capture_output=True)

            def peer_gdcm():
                target = _fresh(out / "gdcmanon")
                subprocess.run([gdcmanon, "-e", "-c", str(cert), "-r", "--continue",
                                "-i", str(data), "-o", str(target)], check=True,
                               capture_output=True)
                if len(_files(target)) != len(files):
                    raise RuntimeError(f"gdcmanon wrote {len(_files(target))} files")

            gdcm_s = timeit(peer_gdcm, repeat=repeat)
            rows.append({"case": f"{CASE} (medtool -j1)", "peer": "gdcmanon -e (basic)",
                         "medtool_s": ours_j1, "peer_s": gdcm_s})
            rows.append({"case": f"{CASE} (medtool -j2)", "peer": "gdcmanon -e (basic)",
                         "medtool_s": ours_j2, "peer_s": gdcm_s})
    return rows
