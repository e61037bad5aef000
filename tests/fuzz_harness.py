"""Run DICOM files, each on its own, through medtool's file commands and tally what went wrong.

Usage (from the repository root)::

    python -m tests.fuzz_harness INPUT... REPORT.json [--workers N] [--full-every K]

Each INPUT is a file, or a folder: every regular file in it (recursively), or the files its
``manifest.json`` lists (as :mod:`tests.dicom_mutants` writes it, which also names each file's
source and mutation kind). Every file goes, in-process through typer's ``CliRunner``, through::

    medtool dicom2npy FILE OUT/d.npy     (then medtool info OUT/d.npy when it was written)
    medtool hu FILE OUT/h.npy
    medtool info FILE
    medtool anonymize FILE OUT/a.dcm --salt s
    medtool anonymize --check FILE

and each run is judged (:data:`CATEGORIES`): a traceback, "internal error", an exit code other
than 0/1/2, an ``error:`` line that names neither the input nor the output, a failure without
an error line (``--check`` listing attributes to de-identify is a finding, not a failure),
files left in the output folder by a failed run (or hidden temp files by a successful one), a
run over :data:`HANG_S`, an input that changed, a decoder panic (pyo3's ``PanicException``, a
BaseException) that escaped or that an error line names, a ``MemoryError``, a worker process
killed by a signal (a decoder aborting). Counted for information only (:data:`INFORMATION`):
a success that wrote nothing, Python warnings on stderr, and dicom2npy/hu converting a mutant
whose header cannot be right (``impossible`` in the manifest).

REPORT.json holds ``counts`` (``mutants`` and ``runs`` too), ``peak_rss_mb`` (the largest peak
resident memory of the worker processes that ran the commands), up to :data:`EXAMPLES`
examples per category, counts per mutation kind, exit codes and seconds per command, and
every flagged run.

The commands run in worker processes (so a crash ends a worker, recorded, and a new one goes
on after it). Each worker's address space is capped at ``--memory-limit-mb`` (an absurd image
size fails with a MemoryError instead of exhausting the machine) and each run at
:data:`RUN_TIMEOUT_S` (an alarm; a run stuck inside C code is ended by faulthandler, which
ends its worker).
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Sequence

from .dicom_mutants import MANIFEST_NAME

#: A run slower than this is reported as a hang.
HANG_S = 10.0
#: A run is interrupted (SIGALRM) after this long.
RUN_TIMEOUT_S = 30.0
#: A run still going this long after its alarm (stuck in C code) kills its worker.
HARD_TIMEOUT_GRACE_S = 30.0
#: Address-space cap of each worker process, in MiB.
MEMORY_LIMIT_MB = 4096
#: Exit codes a medtool command may return.
ALLOWED_EXIT_CODES = (0, 1, 2)
#: Examples kept per category, and characters of stderr kept per example.
EXAMPLES = 5
STDERR_TAIL = 300
#: The salt given to anonymize.
SALT = "s"
#: Categories counted over all runs; each must be 0 in a clean run.
CATEGORIES = ("tracebacks", "internal_errors", "bad_exit_codes", "error_lines_not_naming_file",
              "silent_failures", "leftovers", "hangs", "modified_inputs", "panics",
              "reported_panics", "memory_errors", "crashes")
#: Counted for information only (not failures by themselves).
INFORMATION = ("exit0_without_output", "python_warnings", "accepted_impossible")
#: Commands whose success on an impossible header (see tests/dicom_mutants.py) is counted.
CONVERTING = ("dicom2npy", "hu")
TRACEBACK_MARKERS = ("Traceback (most recent call last)",)
TRACEBACK_LINE = re.compile(r'^\s*(│\s*)?File "[^"]+", line \d+', re.MULTILINE)
PYTHON_WARNING = re.compile(r"^\S+\.py:\d+: \w*Warning: ", re.MULTILINE)
PANIC_MARKERS = ("PanicException", "panicked at")
MEMORY_MARKERS = ("MemoryError", "Unable to allocate", "std::bad_alloc")


class RunTimeout(BaseException):
    """Raised by the alarm inside a run that took longer than :data:`RUN_TIMEOUT_S`."""


def _on_alarm(signum, frame):
    raise RunTimeout(f"run exceeded {RUN_TIMEOUT_S:g} s")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _files_under(folder: Path) -> list[str]:
    """Every file (hidden ones and links included) under ``folder``, relative names."""
    if not folder.exists():
        return []
    found = []
    for root, dirs, files in os.walk(folder):
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(root, d)))]:
            found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def collect_inputs(paths: Sequence[str | Path]) -> list[dict]:
    """The files to run, each as ``{"path", "file", "source", "kind", "detail"}`` (plus
    ``impossible`` and ``size`` from a manifest)."""
    entries = []
    for path in map(Path, paths):
        manifest = path / MANIFEST_NAME
        if path.is_dir() and manifest.is_file():
            for entry in json.loads(manifest.read_text()):
                entries.append({**entry, "path": str(path / entry["file"])})
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
                entries.append({"path": str(file), "file": file.name, "source": file.name,
                                "kind": "file", "detail": ""})
        else:
            entries.append({"path": str(path), "file": path.name, "source": path.name,
                            "kind": "file", "detail": ""})
    return entries


def plan(entry: dict, scratch: Path, *, full: bool) -> list[dict]:
    """The command runs for one input, in order: argv, and the output folder to inspect
    (None for read-only commands). A run with ``needs`` runs only when that file exists."""
    path = entry["path"]
    npy = scratch / "d" / "d.npy"
    runs = [{"name": "dicom2npy", "argv": ["dicom2npy", path, str(npy)], "out": scratch / "d"},
            {"name": "info (dicom2npy output)", "argv": ["info", str(npy)], "out": None,
             "needs": npy}]
    if full:
        runs += [{"name": "hu", "argv": ["hu", path, str(scratch / "h" / "h.npy")],
                  "out": scratch / "h"},
                 {"name": "info", "argv": ["info", path], "out": None}]
    runs += [{"name": "anonymize", "argv": ["anonymize", path, str(scratch / "a" / "a.dcm"),
                                            "--salt", SALT], "out": scratch / "a"},
             {"name": "anonymize --check", "argv": ["anonymize", "--check", path], "out": None}]
    return runs


def _invoke(runner, app, argv: list[str]) -> tuple[Any, BaseException | None, float]:
    """Run one command; an exception escaping the runner (a BaseException) is returned."""
    start = time.perf_counter()
    faulthandler.dump_traceback_later(RUN_TIMEOUT_S + HARD_TIMEOUT_GRACE_S, exit=True)
    signal.setitimer(signal.ITIMER_REAL, RUN_TIMEOUT_S)
    try:
        return runner.invoke(app, argv, catch_exceptions=True), None, time.perf_counter() - start
    except BaseException as exc:  # noqa: BLE001 - PanicException, RunTimeout, ...
        return None, exc, time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()


def judge(run: dict, result, escaped: BaseException | None, seconds: float, *,
          names: Iterable[str]) -> dict:
    """The record of one run: its exit code, what it printed, and each category's verdict."""
    if result is not None:
        stdout, stderr, code = result.stdout, result.stderr, result.exit_code
        exception = result.exception
    else:
        stdout, stderr, code, exception = "", "", None, escaped
    if exception is not None and not isinstance(exception, SystemExit):
        stderr += f"\n[{type(exception).__module__}.{type(exception).__name__}: {exception}]"
    text = stdout + "\n" + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    error_lines = [line.strip() for line in lines if line.strip().startswith("error:")]
    names = [n for n in names if n]
    is_check = run["name"] == "anonymize --check"
    # --check exits 1 when it lists attributes to de-identify (lines "FILE  TAG  NAME  ACTION",
    # tabs expanded by rich): a finding, not a failure
    findings = is_check and code == 1 and any(
        line.startswith(n) for line in stdout.splitlines() for n in names)
    failed = code != 0 and not findings
    timed_out = isinstance(escaped, RunTimeout)
    # a panic that reached the runner (or a traceback), and one named in an error line
    panic = exception is not None and "Panic" in type(exception).__name__
    reported_panic = not panic and any(m in text for m in PANIC_MARKERS)
    record = {
        "command": run["name"], "argv": run["argv"], "exit_code": code,
        "seconds": round(seconds, 3), "stderr_lines": len(lines),
        "stderr_tail": stderr[-STDERR_TAIL:],
        "tracebacks": any(m in text for m in TRACEBACK_MARKERS)
        or bool(TRACEBACK_LINE.search(text))
        or (exception is not None and not isinstance(exception, (SystemExit, RunTimeout))),
        "internal_errors": "internal error" in text,
        "bad_exit_codes": code is not None and code not in ALLOWED_EXIT_CODES,
        "error_lines_not_naming_file": [line for line in error_lines
                                        if not any(n in line for n in names)],
        "silent_failures": failed and not error_lines and code is not None,
        "hangs": seconds > HANG_S or timed_out,
        "panics": panic,
        "reported_panics": reported_panic,
        "memory_errors": any(m in text for m in MEMORY_MARKERS)
        or isinstance(exception, MemoryError),
        "python_warnings": bool(PYTHON_WARNING.search(stderr)),
        "failed": failed,
    }
    return record


def _record(entry: dict, position: int, record: dict) -> dict:
    return {**{k: entry.get(k) for k in ("index", "file", "source", "kind", "detail")},
            "position": position, **record,
            "accepted_impossible": bool(entry.get("impossible")) and record.get("exit_code") == 0
            and record.get("command") in CONVERTING}


def run_entry(entry: dict, runner, app, scratch_root: Path, *, full: bool, first: int = 0,
              log=None) -> list[dict]:
    """The command runs of one input from run ``first`` on, judged; the input is restored
    if a run changed it. ``log(item)`` is told of each run before it starts and after."""
    path = Path(entry["path"])
    original = path.read_bytes()
    digest = hashlib.sha256(original).hexdigest()
    scratch = Path(tempfile.mkdtemp(dir=scratch_root))
    records = []
    try:
        for position, run in enumerate(plan(entry, scratch, full=full)):
            if position < first or ("needs" in run and not Path(run["needs"]).is_file()):
                continue
            if log is not None:
                log({"start": {"index": entry["index"], "position": position,
                               "command": run["name"], "argv": run["argv"]}})
            rss_before = peak_rss_mb()
            result, escaped, seconds = _invoke(runner, app, run["argv"])
            out = run.get("out")
            names = [str(path), *(a for a in run["argv"][1:] if a.startswith(str(scratch)))]
            if out is not None:
                names.append(str(out))
            record = judge(run, result, escaped, seconds, names=names)
            record["rss_growth_mb"] = round(peak_rss_mb() - rss_before, 1)
            if out is not None:
                left = _files_under(out)
                hidden = [f for f in left if any(p.startswith(".") for p in Path(f).parts)]
                record["leftovers"] = left if record["failed"] else hidden
                record["exit0_without_output"] = record["exit_code"] == 0 and not left
            else:
                record["leftovers"], record["exit0_without_output"] = [], False
            now = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
            record["modified_inputs"] = now != digest
            if now != digest:
                path.write_bytes(original)
            records.append(_record(entry, position, record))
            if log is not None:
                log({"record": records[-1]})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return records


def _is_full(entry: dict, full_every: int) -> bool:
    return full_every <= 1 or entry["index"] % full_every == 0


def cached_runner():
    """A typer ``CliRunner`` that builds the click command of an app once per process.

    typer's runner rebuilds every command of the app from its signature on each invoke
    (three quarters of a small run's time); the command line itself builds it once per
    process, so reusing the built command tests the same thing.
    """
    import typer.testing as testing

    build = getattr(testing, "_get_command", None)
    if callable(build) and not getattr(build, "medtool_cached", False):
        built: dict[int, Any] = {}

        def cached(app):
            if id(app) not in built:
                built[id(app)] = build(app)
            return built[id(app)]

        cached.medtool_cached = True
        testing._get_command = cached
    return testing.CliRunner()


def run_chunk(entries: list[dict], log_path: str, scratch_root: str, *, full_every: int,
              memory_limit_mb: int, first: int = 0) -> None:
    """Run ``entries`` in this (worker) process, from run ``first`` of the first entry on,
    appending each run's start and record to the JSON-lines file ``log_path``; outputs go
    to folders under ``scratch_root``, removed after each input."""
    if memory_limit_mb:
        limit = memory_limit_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    faulthandler.enable()
    signal.signal(signal.SIGALRM, _on_alarm)
    from medtool.cli import app

    runner = cached_runner()
    with open(log_path, "a", encoding="utf-8") as handle:
        def log(item: dict) -> None:
            item["peak_rss_mb"] = peak_rss_mb()
            handle.write(json.dumps(item, default=str) + "\n")
            handle.flush()

        for number, entry in enumerate(entries):
            run_entry(entry, runner, app, Path(scratch_root), full=_is_full(entry, full_every),
                      first=first if number == 0 else 0, log=log)


def _crash_record(entry: dict, start: dict, exitcode: int) -> dict:
    """The record of a run during which its worker process died."""
    # faulthandler ends a worker stuck past its alarm with exit status 1; a crash is a signal
    stuck = exitcode > 0
    how = f"signal {-exitcode}" if exitcode < 0 else f"exit status {exitcode}, stuck in a run"
    return _record(entry, start["position"], {
        "command": start["command"], "argv": start["argv"], "exit_code": exitcode,
        "seconds": 0.0, "stderr_lines": 0, "stderr_tail": f"[worker process died: {how}]",
        "crashes": not stuck, "hangs": stuck, "failed": True, "leftovers": [],
        "rss_growth_mb": 0.0})


def _run_worker(entries: list[dict], folder: Path, *, full_every: int,
                memory_limit_mb: int) -> tuple[list[dict], float]:
    """Run ``entries`` in worker processes one after another, with their log and outputs in
    ``folder``: when a worker dies (a crash inside a decoder), its run is recorded as a crash
    and a new worker goes on with the next run. The records and the workers' peak memory."""
    context = get_context("spawn")
    records: list[dict] = []
    peak = 0.0
    by_index = {e["index"]: n for n, e in enumerate(entries)}
    log_path, scratch = folder / "log.jsonl", folder / "scratch"
    scratch.mkdir(parents=True)
    todo, first = entries, 0
    while todo:
        log_path.write_text("")
        process = context.Process(target=run_chunk, args=(todo, str(log_path), str(scratch)),
                                  kwargs={"full_every": full_every,
                                          "memory_limit_mb": memory_limit_mb, "first": first})
        process.start()
        process.join()
        started = None
        for line in log_path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            peak = max(peak, item.pop("peak_rss_mb", 0.0))
            if "start" in item:
                started = item["start"]
            else:
                records.append(item["record"])
                started = None
        if process.exitcode == 0:
            break
        if started is None:   # died outside a run (at start-up?): nothing to blame
            raise RuntimeError(f"fuzz worker died (exit {process.exitcode}) outside a run; "
                               "its stderr above says why")
        entry = entries[by_index[started["index"]]]
        records.append(_crash_record(entry, started, process.exitcode))
        todo, first = entries[by_index[started["index"]]:], started["position"] + 1
    return records, peak


def _flagged(record: dict, category: str) -> bool:
    return bool(record.get(category))


def summarise(records: list[dict], *, inputs: int, peak_mb: float, seconds: float,
              workers: int) -> dict:
    """The report: counts, peak memory, examples per category, every flagged run."""
    counts = {"mutants": inputs, "runs": len(records)}
    examples: dict[str, list[dict]] = {}
    by_kind: dict[str, dict[str, int]] = {}
    for category in (*CATEGORIES, *INFORMATION):
        hits = [r for r in records if _flagged(r, category)]
        counts[category] = len(hits)
        examples[category] = [
            {"mutant": r["file"], "source": r["source"], "kind": r["kind"],
             "detail": r["detail"], "command": r["command"], "exit_code": r["exit_code"],
             "stderr": r["stderr_tail"]} for r in hits[:EXAMPLES]]
        by_kind[category] = dict(Counter(r["kind"] for r in hits).most_common())
    exit_codes: dict[str, dict[str, int]] = {}
    for record in records:
        codes = exit_codes.setdefault(record["command"], {})
        codes[str(record["exit_code"])] = codes.get(str(record["exit_code"]), 0) + 1
    seconds_by_command: Counter = Counter()
    for record in records:
        seconds_by_command[record["command"]] += record["seconds"]
    flagged = [r for r in records if any(_flagged(r, c) for c in CATEGORIES)]
    memory = sorted(records, key=lambda r: r.get("rss_growth_mb", 0), reverse=True)[:EXAMPLES]
    return {
        "counts": counts, "peak_rss_mb": round(peak_mb, 1), "seconds": round(seconds, 1),
        "workers": workers, "examples": examples, "by_kind": by_kind, "exit_codes": exit_codes,
        "seconds_by_command": {k: round(v, 1) for k, v in seconds_by_command.most_common()},
        "largest_memory_growth": [{k: r[k] for k in ("file", "kind", "detail", "command",
                                                     "rss_growth_mb")} for r in memory],
        "slowest": [{k: r[k] for k in ("file", "kind", "detail", "command", "seconds")}
                    for r in sorted(records, key=lambda r: r["seconds"],
                                    reverse=True)[:EXAMPLES]],
        "flagged": flagged,
        "accepted_impossible_runs": [
            {k: r[k] for k in ("file", "source", "detail", "command")}
            for r in records if r.get("accepted_impossible")],
    }


def run_files(paths: Sequence[str | Path], *, workers: int = 1, full_every: int = 1,
              memory_limit_mb: int = MEMORY_LIMIT_MB) -> dict:
    """Run every input of ``paths`` (see :func:`collect_inputs`) and return the report.

    Parameters
    ----------
    paths
        Files, or folders (with or without a manifest).
    workers
        Worker processes sharing the inputs. The commands always run in workers, so the
        caller's memory and limits stay untouched and a crash ends a worker only.
    full_every
        Run hu and info on every K-th input only (dicom2npy, info of its output and both
        anonymize runs go on every input); 1 runs everything on every input.
    memory_limit_mb
        Address-space cap of each worker (0: none).
    """
    entries = collect_inputs(paths)
    for index, entry in enumerate(entries):
        entry["index"] = index
    chunks = [entries[i::workers] for i in range(workers)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medtool-fuzz-") as work, \
            ThreadPoolExecutor(max_workers=workers) as pool:   # each thread drives one worker
        futures = [pool.submit(_run_worker, chunk, Path(work) / f"worker{n}",
                               full_every=full_every, memory_limit_mb=memory_limit_mb)
                   for n, chunk in enumerate(chunks) if chunk]
        results = [f.result() for f in futures]
    records = sorted((r for chunk, _ in results for r in chunk),
                     key=lambda r: (r["index"], r["position"]))
    peak = max([0.0, *(p for _, p in results)])
    return summarise(records, inputs=len(entries), peak_mb=peak,
                     seconds=time.perf_counter() - start, workers=workers)


def format_examples(report: dict) -> str:
    """The counts and the examples of every non-zero category, as text for a failure."""
    lines = [f"counts: {json.dumps(report['counts'])}", f"peak_rss_mb: {report['peak_rss_mb']}"]
    for category in CATEGORIES:
        if report["counts"].get(category):
            lines.append(f"--- {category}: {report['counts'][category]} "
                         f"(by kind: {report['by_kind'][category]})")
            for example in report["examples"][category]:
                lines.append(f"  {example['mutant']} [{example['kind']}: {example['detail']}] "
                             f"{example['command']} -> exit {example['exit_code']}: "
                             f"{example['stderr'].strip()[-200:]!r}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="files or folders (a mutant folder)")
    parser.add_argument("report", help="where to write the JSON report")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--full-every", type=int, default=1,
                        help="run hu and info on every K-th input only")
    parser.add_argument("--memory-limit-mb", type=int, default=MEMORY_LIMIT_MB)
    args = parser.parse_args(argv)
    report = run_files(args.inputs, workers=args.workers, full_every=args.full_every,
                       memory_limit_mb=args.memory_limit_mb)
    Path(args.report).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(format_examples(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
