"""Seeded fuzzing: hundreds of damaged DICOM files through dicom2npy, info, hu and anonymize.

The mutants (tests/dicom_mutants.py) go, one file at a time, through the commands in worker
processes (tests/fuzz_harness.py); every run must end in a one-line error naming its file or
in success, with exit code 0, 1 or 2, no traceback, no decoder panic or crash, nothing left
behind by a failed run, the input unchanged and under 1 GiB of memory. Every command runs
on every mutant (about 30 s on two cores); ``--full-every K`` of the harness would run hu and
info on every K-th mutant only, should the commands grow slower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .dicom_mutants import DEFAULT_SEED, write_mutants
from .fuzz_harness import CATEGORIES, format_examples

pytestmark = pytest.mark.slow     # whole workflows: left out by pytest -m 'not slow'

REPO = Path(__file__).resolve().parent.parent
#: Fewest mutants the suite must run.
MIN_MUTANTS = 500
#: Fewest source files the mutants come from.
MIN_SOURCES = 5
#: Peak resident memory allowed to the processes running the commands, in MiB.
PEAK_RSS_LIMIT_MB = 1024
#: hu and info (of the mutant) run on every FULL_EVERY-th mutant (1: on all of them).
FULL_EVERY = 1
#: Wall-clock limit of the harness subprocess, in seconds.
HARNESS_TIMEOUT_S = 170
#: Worker processes (the test machine has two cores).
WORKERS = max(1, min(2, os.cpu_count() or 1))


def run_harness(inputs: list[Path], report: Path, *, full_every: int = 1) -> dict:
    """Run ``python -m tests.fuzz_harness`` on ``inputs``; its JSON report."""
    command = [sys.executable, "-m", "tests.fuzz_harness", *map(str, inputs), str(report),
               "--workers", str(WORKERS), "--full-every", str(full_every)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          timeout=HARNESS_TIMEOUT_S)
    assert done.returncode == 0 and report.is_file(), (
        f"harness failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(report.read_text())


def assert_clean(report: dict) -> None:
    """Every category of ``report`` is 0 and the peak memory is under the limit."""
    bad = {c: report["counts"][c] for c in CATEGORIES if report["counts"][c]}
    assert not bad and report["peak_rss_mb"] < PEAK_RSS_LIMIT_MB, format_examples(report)


@pytest.mark.slow
def test_mutants_fail_cleanly(tmp_path):
    manifest = write_mutants(tmp_path / "mutants", seed=DEFAULT_SEED)
    assert len(manifest) >= MIN_MUTANTS
    assert len({m["source"] for m in manifest}) >= MIN_SOURCES
    assert not any((tmp_path / "mutants" / m["file"]).is_symlink() for m in manifest)
    report = run_harness([tmp_path / "mutants"], tmp_path / "report.json",
                         full_every=FULL_EVERY)
    assert report["counts"]["mutants"] == len(manifest)
    for command in ("dicom2npy", "anonymize"):
        assert sum(report["exit_codes"][command].values()) == len(manifest)
    assert_clean(report)


def test_mutants_are_deterministic(tmp_path):
    first = write_mutants(tmp_path / "a", seed=DEFAULT_SEED)
    second = write_mutants(tmp_path / "b", seed=DEFAULT_SEED)
    assert first == second
    for entry in first:
        assert (tmp_path / "a" / entry["file"]).read_bytes() == \
            (tmp_path / "b" / entry["file"]).read_bytes()


def _judged(stderr: str, code: int, *, stdout: str = "", exception=None, name="dicom2npy"):
    from types import SimpleNamespace

    from .fuzz_harness import judge

    result = SimpleNamespace(stdout=stdout, stderr=stderr, exit_code=code,
                             exception=exception if exception is not None
                             else (SystemExit(code) if code else None))
    run = {"name": name, "argv": [name, "/d/in.dcm", "/o/d.npy"]}
    return judge(run, result, None, 0.1, names=["/d/in.dcm", "/o/d.npy", "/o"])


def test_harness_judges_each_fault():
    assert not any(v for k, v in _judged("", 0).items() if k in CATEGORIES)
    clean = _judged("error: /d/in.dcm: not a DICOM file, check the path\n", 1)
    assert not any(v for k, v in clean.items() if k in CATEGORIES)
    assert _judged("error: in: modality is MR\n", 1)["error_lines_not_naming_file"]
    assert _judged("", 1)["silent_failures"]
    assert _judged("error: /d/in.dcm: internal error: ValueError: x\n", 1)["internal_errors"]
    assert _judged("Traceback (most recent call last):\n  File \"x.py\", line 1\n", 1)[
        "tracebacks"]
    assert _judged("", 1, exception=ValueError("escaped"))["tracebacks"]
    assert _judged("error: /d/in.dcm: x (PanicException: index out of bounds)\n", 1)[
        "reported_panics"]
    assert _judged("error: /d/in.dcm: x (MemoryError)\n", 1)["memory_errors"]
    assert _judged("", 3)["bad_exit_codes"]
    findings = _judged("checked 1 DICOM file(s): 2 attribute(s) to de-identify\n", 1,
                       stdout="/d/in.dcm    (0010,0010)    Patient's Name    Z\n",
                       name="anonymize --check")
    assert not findings["silent_failures"] and not findings["failed"]
