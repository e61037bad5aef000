"""The front door as whole processes: ``medtool dicom2npy`` and ``medtool anonymize`` against
``dcm2niix -z n`` and ``gdcmanon -e`` on the same input in the same run (issue 28).

Every contender is a fresh process (interpreter start-up and imports included), run in turn:
each repetition runs every contender once in the same order, so that a load that comes and
goes on the shared machine falls on all of them alike; the median of the repetitions is kept.
The inputs are read once before timing (warm page cache for everyone).

Cases: one 512 x 512 x 300 CT series to ``.nii`` (medtool ``-j1`` and ``-j2``); a folder of 20
such series with ``-j2``; anonymizing those 300 files and the 1,000 files of
``bench_anonymize`` (4 series of 250 slices at 256 x 256) with ``-j1``, ``-j2`` and no
``--workers`` (what a user runs: the batch chooses). Every contender's output is removed
before its timed run (an overwrite would time the deletion of the last run's file). Start-up rows: ``medtool --help``
against the 0.15 s target (the "peer" column is the target), and dicom2npy's time from process
start to its first file read (the process is ended at that read). Goals: ratio >= 1.0
(the floor to accept for 20 series: 0.7).

``python benchmarks/bench_process.py [--repeat N] [--quick]`` runs it alone (``--quick``
leaves out the 20-series case); ``benchmarks/run.py --only bench_process`` as part of the suite.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The 20-series case.
MANY_SERIES = 20
#: Repetitions of the 20-series case at most (each writes 3 GB).
MANY_REPEAT = 3
#: dicom2npy's start-up target (s): process start to the first DICOM file read.
STARTUP_TARGET_S = 0.15
#: Runs medtool's CLI and ends the process at its first file read (for the start-up row).
FIRST_READ = """
import os, sys
import medtool.series as series
def first_read(*args, **kwargs):
    os._exit(0)
series.read_frames = first_read
sys.argv = ["medtool", *sys.argv[1:]]
from medtool.cli import main
main()
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def medtool(*args: str) -> list[str]:
    """The command line of ``python -m medtool ARGS`` from this checkout."""
    return [sys.executable, "-m", "medtool", *args]


def alternate(contenders: dict, *, repeat: int) -> dict:
    """Median wall seconds of each contender (name -> (argv, prepare)), run in turn."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    env = _env()
    for _ in range(repeat):
        for name, (argv, prepare) in contenders.items():
            if prepare is not None:
                prepare()
            start = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True)
            times[name].append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed ({done.returncode}): "
                                   f"{done.stderr.decode(errors='replace')[-800:]}")
    return {name: statistics.median(values) for name, values in times.items()}


def _fresh(folder: Path):
    def prepare():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    return prepare


def _absent(path: Path):
    def prepare():
        path.unlink(missing_ok=True)
    return prepare


def _warm(folder: Path) -> int:
    return sum(len(p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def _copies(series: Path, root: Path, count: int) -> None:
    """``count`` copies of ``series``, each with its own SeriesInstanceUID (bytes patched)."""
    import pydicom

    files = sorted(series.iterdir())
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID.encode()
    for k in range(count):
        new = uid[:-2] + f"{k:02d}".encode()
        folder = root / f"case_{k:02d}"
        folder.mkdir(parents=True)
        for path in files:
            (folder / path.name).write_bytes(path.read_bytes().replace(uid, new))


def _dicom_rows(temp: Path, series: Path, *, repeat: int, quick: bool,
                only: str | None = None) -> list[dict]:
    out = temp / "out"
    out.mkdir(exist_ok=True)
    rows = []
    if only != "startup":
        rows += _one_series_rows(out, series, repeat=repeat)
    first = alternate({"first": ([sys.executable, "-c", FIRST_READ, "dicom2npy", str(series),
                                  str(out / "first.nii"), "--force", "-q"], None)},
                      repeat=repeat)["first"]
    rows.append({"case": "dicom2npy start-up to first file read", "peer": "target 0.15 s",
                 "medtool_s": first, "peer_s": STARTUP_TARGET_S})
    if not quick and only in (None, "dicom2npy"):
        rows.append(_many_series_row(temp, out, series, repeat=repeat))
    return rows


def _one_series_rows(out: Path, series: Path, *, repeat: int) -> list[dict]:
    peer = shutil.which("dcm2niix")
    contenders = {                  # every output removed before its run (as the peer's is)
        f"j{w}": (medtool("dicom2npy", str(series), str(out / f"j{w}.nii"), "--force", "-q",
                          "--workers", str(w)), _absent(out / f"j{w}.nii"))
        for w in (1, 2)}
    if peer:
        contenders["peer"] = ([peer, "-z", "n", "-o", str(out / "peer"), "-f", "peer",
                               str(series)], _fresh(out / "peer"))
    got = alternate(contenders, repeat=repeat)
    case = "dicom2npy 512x512x300 -> .nii"
    return [{"case": f"{case} (-j{w})", "peer": "dcm2niix -z n", "medtool_s": got[f"j{w}"],
             "peer_s": got.get("peer", float("nan"))} for w in (1, 2)]


def _many_series_row(temp: Path, out: Path, series: Path, *, repeat: int) -> dict:
    peer = shutil.which("dcm2niix")
    many = temp / "many"
    _copies(series, many, MANY_SERIES)
    _warm(many)
    contenders = {"j2": (medtool("dicom2npy", str(many), str(out / "many"), "--format",
                                 "nii", "--force", "-q", "--workers", "2"), _fresh(out / "many"))}
    if peer:
        contenders["peer"] = ([peer, "-z", "n", "-o", str(out / "many_peer"), str(many)],
                              _fresh(out / "many_peer"))
    got = alternate(contenders, repeat=min(repeat, MANY_REPEAT))
    shutil.rmtree(many)
    return {"case": f"dicom2npy {MANY_SERIES} series 512x512x300 (-j2)",
            "peer": "dcm2niix -z n", "medtool_s": got["j2"],
            "peer_s": got.get("peer", float("nan"))}


def _anonymize_rows(temp: Path, inputs: dict[str, Path], *, repeat: int) -> list[dict]:
    gdcmanon, openssl = shutil.which("gdcmanon"), shutil.which("openssl")
    cert = temp / "cert.pem"
    if gdcmanon and openssl:
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-keyout",
                        str(temp / "key.pem"), "-out", str(cert), "-days", "1", "-nodes",
                        "-subj", "/CN=bench"], check=True, capture_output=True)
    else:
        print("bench_process: gdcmanon or openssl not on PATH, skipping its rows")
    rows = []
    for label, data in inputs.items():
        out = temp / "anon"
        contenders = {
            f"j{w}": (medtool("anonymize", str(data), str(out / f"j{w}"), "--force", "-q",
                              *(("--workers", str(w)) if w else ()), "--date-shift", "--salt",
                              "bench"), _fresh(out / f"j{w}"))
            for w in (1, 2, 0)}                         # 0: no --workers (the batch chooses)
        if gdcmanon and openssl:
            contenders["peer"] = ([gdcmanon, "-e", "-c", str(cert), "-r", "--continue", "-i",
                                   str(data), "-o", str(out / "peer")], _fresh(out / "peer"))
        got = alternate(contenders, repeat=repeat)
        for w in (1, 2, 0):
            rows.append({"case": f"anonymize {label} ({f'-j{w}' if w else 'default'})",
                         "peer": "gdcmanon -e", "medtool_s": got[f"j{w}"],
                         "peer_s": got.get("peer", float("nan"))})
    return rows


def _help_row(*, repeat: int) -> dict:
    got = alternate({"help": (medtool("--help"), None)}, repeat=repeat)
    return {"case": "medtool --help", "peer": "target 0.15 s", "medtool_s": got["help"],
            "peer_s": STARTUP_TARGET_S}


def run(*, repeat: int, timeit=None, quick: bool = False, only: str | None = None) -> list[dict]:
    """The rows; ``only``: just the ``startup``, ``dicom2npy`` or ``anonymize`` rows."""
    sys.path.insert(0, str(HERE))
    import bench_anonymize
    import bench_dicom

    rows = [_help_row(repeat=repeat)] if only in (None, "startup") else []
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        series = temp / "series"
        series.mkdir()
        bench_dicom._write_series(series)
        thousand = temp / "thousand"
        bench_anonymize._write_data(thousand)
        print(f"bench_process: {_warm(series) / 2**20:.0f} MiB series, "
              f"{_warm(thousand) / 2**20:.0f} MiB in 1,000 files")
        if only in (None, "startup", "dicom2npy"):
            rows += _dicom_rows(temp, series, repeat=repeat, quick=quick, only=only)
        if only in (None, "anonymize"):
            rows += _anonymize_rows(temp, {"300 files 512x512": series,
                                       "1000 files 256x256": thousand}, repeat=repeat)
    return rows


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="leave out the 20-series case")
    parser.add_argument("--only", choices=("startup", "dicom2npy", "anonymize"),
                        help="only these rows")
    args = parser.parse_args()
    print(f"{'case':<48} {'peer':<16} {'medtool s':>10} {'peer s':>8} {'peer/medtool':>13}")
    for row in run(repeat=args.repeat, quick=args.quick, only=args.only):
        ratio = row["peer_s"] / row["medtool_s"]
        print(f"{row['case']:<48} {row['peer']:<16} {row['medtool_s']:>10.3f} "
              f"{row['peer_s']:>8.3f} {ratio:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
