"""Inputs to volume files: DICOM folders (``dicom2npy``, ``hu``) and volume to volume (``hu``,
``lungmask``, ``resample``).

:func:`convert` scans the inputs, plans the stacks (:mod:`medtool.series`), and writes each as
one volume file named after its case folder. Work is spread over ``workers`` processes: across
series when there are several, across the slices of a series when there is one.

:func:`map_volumes` is the one mechanism of the volume-to-volume commands: it finds the volume
files, mirrors their names under the output folder (:func:`plan_outputs`), takes ``--shard``,
refuses existing outputs without ``--force``, runs a transform over the files with
``--workers`` and collects each file's error while the others go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError, MedtoolError, UsageError, check_choice
from .files import find_files, take_shard, volume_suffix
from .tables import upsert_csv
from .series import (Notice, ScanResult, Stack, assemble, plan, planned_volume, read_slabs,
                     scan)

#: Output formats of ``dicom2npy`` (``--format``).
FORMATS = ("npy", "npz", "nii.gz", "nii", "nrrd", "seg.nrrd", "mha", "mhd")


@dataclass(frozen=True)
class HuOptions:
    """How to turn stored values into HU (``--hu``, ``medtool hu``); ``None`` fields are off."""

    window: tuple[float, float] | None = None
    normalize: bool = False
    rescale: tuple[float, float] | None = None

    def apply(self, volume):
        """Convert ``volume`` to HU, then window / normalise it as asked."""
        from .hounsfield import NORMALIZE_RANGE, to_hu, window

        volume = to_hu(volume, rescale=self.rescale)
        if self.window is not None or self.normalize:
            low, high = self.window if self.window is not None else NORMALIZE_RANGE
            volume = window(volume, low, high, normalize=self.normalize)
        return volume


@dataclass
class Findings:
    """What reading inputs met besides the images: files that failed (name, error), files
    skipped (path, what they are) and notices of the series planned."""

    failures: list[tuple[str, MedtoolError]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


@dataclass
class Report(Findings):
    """What :func:`convert` did."""

    written: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0
    inputs: list[str] = field(default_factory=list)
    cases: Path | None = None           # the cases.csv index written, if any
    identified: bool = False            # it holds PatientIDs of data not de-identified


@dataclass
class _Job:
    stack: Stack
    path: Path
    hu: HuOptions | None
    step: dict[str, Any]
    force: bool
    workers: int
    progress: bool


#: The index every conversion keeps beside its outputs: case id -> source and DICOM identity.
CASES_FILE = "cases.csv"
CASES_COLUMNS = ("case_id", "output", "source", "PatientID", "StudyInstanceUID",
                 "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "files")


def convert(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, fmt: str = "npy",
            series: str = "all", allow_gaps: bool = False, untilt: bool = True,
            name: str | None = None, labels: bool = False, allow_empty: bool = False,
            labels_out: str | os.PathLike | None = None,
            hu: HuOptions | None = None, workers: int = 1, force: bool = False,
            shard: tuple[int, int] | None = None, step: dict[str, Any] | None = None,
            progress: bool = False, on_error: Callable[[MedtoolError], None] | None = None,
            on_notice: Callable[[Notice], None] | None = None) -> Report:
    """Convert every image series under ``inputs`` into volume files under ``out``.

    ``out`` is a folder (``OUT/<case>.<fmt>``, the case being the series' folder relative to
    the input it was found in, plus a series suffix when a case holds several series, or the
    ``name`` template filled in, see :class:`~medtool.series.NameTemplate`) or, when it ends
    in a volume suffix, the single output file of a single series. Each written volume gets a
    row in :data:`CASES_FILE` beside it (case id, source, PatientID, Study/Series UIDs, ...).

    With ``labels``, every RTSTRUCT and SEG file among the inputs becomes a label volume on the
    grid of the series it references, ``<that series' output name>_rtstruct`` / ``_seg``
    (:mod:`medtool.dicomlabels`; ``allow_empty`` keeps ROIs without contours as empty labels),
    written under ``labels_out`` instead of ``out`` when given; one whose series is not among
    the inputs is an error naming the file.
    """
    from .series import NameTemplate

    check_choice("--format", fmt, FORMATS)
    template = NameTemplate(name) if name is not None else None
    report = Report(inputs=[str(p) for p in inputs])
    scanned, found_labels = _scan_inputs(inputs, report, labels=labels, workers=workers,
                                         progress=progress, on_error=on_error,
                                         keywords=template.keywords if template else ())
    planned = plan(scanned.frames, roots=inputs, series=series, allow_gaps=allow_gaps,
                   untilt=untilt, name=template)
    for name, error in planned.failures:
        report.failures.append((name, error))
        if on_error:
            on_error(error)
    report.notices.extend(planned.notices)
    if on_notice:
        for notice in report.notices:
            on_notice(notice)
    stacks = take_shard(planned.stacks, shard)

    out = Path(out)
    single = volume_suffix(out) is not None
    if single and len(stacks) > 1:
        raise UsageError(f"{out} names one file, but the input holds {len(stacks)} series "
                         f"({', '.join(s.name for s in stacks[:4])}{' ...' if len(stacks) > 4 else ''})",
                         hint="give an output folder instead")
    jobs = []
    for stack in stacks:
        path = out if single else out / f"{stack.name}.{fmt}"
        jobs.append(_Job(stack, path, hu, step or {}, force, 1, False))
    jobs = _writable(jobs, force=force, report=report, on_error=on_error,
                     root=None if single else out)
    label_jobs = _label_jobs(found_labels, planned.stacks, stacks, scanned.frames, out, fmt=fmt,
                             single=single, labels_out=None if labels_out is None else Path(labels_out),
                             step=step or {}, force=force, allow_empty=allow_empty, shard=shard,
                             report=report, on_error=on_error)
    if len(jobs) == 1:
        jobs[0].workers, jobs[0].progress = workers, progress
    from .batch import run_batch

    outcome = run_batch(_write, jobs, workers=workers if len(jobs) > 1 else 1,
                        description="converting", progress=progress, on_error=on_error,
                        name=lambda job: job.stack.source)
    report.written.extend(r for r in outcome.results if r is not None)
    report.failures.extend(outcome.failures)
    _run_labels(label_jobs, report, workers=workers, progress=progress, on_error=on_error, on_notice=on_notice)
    _index_cases(report, jobs, folder=out.parent if single else out)
    return report


def _scan_inputs(inputs: Sequence[str | os.PathLike], report: Report, *, labels: bool, workers: int,
                 progress: bool, on_error: Callable[[MedtoolError], None] | None,
                 keywords: Sequence[str]) -> tuple[ScanResult, list]:
    """Read the headers of every file under ``inputs`` but the volume files (:func:`scan`).

    Missing inputs and unreadable files become failures of ``report``, skipped files its
    ``skipped``, but for the RTSTRUCT and SEG files that ``labels`` asks for: those are
    returned with the scan (``(path, kind, ...)`` items, sorted).
    """
    candidates = [p for p in find_files(inputs, suffixes=None) if not _is_volume_file(p)]
    missing = [p for p in candidates if not p.exists()]
    for path in missing:
        error = InputError("no such file or folder", path=path, hint="check the path")
        report.failures.append((str(path), error))
        if on_error:
            on_error(error)
    candidates = [p for p in candidates if p.exists()]
    report.files = len(candidates)
    scanned = scan(candidates, workers=workers, progress=progress, on_error=on_error,
                   keywords=keywords)
    report.failures.extend(scanned.failures)
    found_labels = sorted(item for item in scanned.skipped if item[1] in _LABEL_KINDS) if labels else []
    report.skipped = [item for item in scanned.skipped if item not in set(found_labels)]
    return scanned, found_labels


def _index_cases(report: Report, jobs: list[_Job], *, folder: Path) -> None:
    """Add a row for every volume of ``jobs`` that ``report`` says was written to
    :data:`CASES_FILE` in ``folder``, and record the index and whether any case still holds
    patient identity (PatientIdentityRemoved is not YES) in ``report``."""
    by_path = {str(job.path): job.stack for job in jobs}
    done = [(Path(row["output"]), by_path[row["output"]]) for row in report.written
            if row["output"] in by_path]
    if done:
        index = folder / CASES_FILE
        upsert_csv(index, CASES_COLUMNS, [_case_row(path, stack, index.parent)
                                          for path, stack in done])
        report.cases = index
        report.identified = any(stack.frames[0].naming.get("PatientIdentityRemoved", "").upper()
                                != "YES" for _, stack in done)


#: Kinds of skipped files that are label objects (:data:`medtool.dicom.LABEL_CLASSES`).
_LABEL_KINDS = ("RTSTRUCT", "SEG")


@dataclass
class _LabelJob:
    source: str
    stack: Stack
    path: Path
    step: dict[str, Any]
    force: bool
    allow_empty: bool


def _label_jobs(found: list[tuple[str, str]], planned: list[Stack], stacks: list[Stack],
                frames, out: Path, *, fmt: str, single: bool, labels_out: Path | None,
                step: dict[str, Any], force: bool,
                allow_empty: bool, shard, report: Report, on_error) -> list[_LabelJob]:
    """One job per RTSTRUCT / SEG file whose series is converted in this run; an object whose
    series is not among the inputs is a failure (reported by one shard only)."""
    from collections import Counter

    if not found:
        return []
    from .dicomlabels import LABEL_SUFFIXES, match_stack, read_header
    from .files import check_inside, check_writable, strip_suffix

    found_series = {f.series_uid for f in frames}
    planned_series = {s.frames[0].series_uid for s in planned}
    converted = {id(s) for s in stacks}
    jobs, errors = [], []
    taken: Counter = Counter()
    for source, kind in found:
        try:
            stack = match_stack(read_header(source), planned,
                                other_series=sorted(found_series - planned_series))
        except MedtoolError as exc:
            errors.append((source, exc))
            continue
        if stack is None or id(stack) not in converted:
            continue
        taken[stack.name, kind] += 1
        suffix = LABEL_SUFFIXES[kind] + ("" if taken[stack.name, kind] == 1
                                         else f"_{taken[stack.name, kind]}")
        folder = out.parent if single else out
        if labels_out is not None:
            folder = labels_out
        if single:
            path = folder / (strip_suffix(out) + suffix + (volume_suffix(out) or ""))
        else:
            path = folder / f"{stack.name}{suffix}.{fmt}"
        try:
            if not single:
                check_inside(path, folder)
            check_writable(path, force=force)
        except MedtoolError as exc:
            errors.append((source, exc))
            continue
        jobs.append(_LabelJob(source, stack, path, step, force, allow_empty))
    for source, error in take_shard(errors, shard):
        report.failures.append((source, error))
        if on_error:
            on_error(error)
    return jobs


def _run_labels(jobs: list[_LabelJob], report: Report, *, workers: int, progress: bool, on_error,
                on_notice) -> None:
    """Write the label volumes of ``jobs``; their rows, notes and failures go into ``report``."""
    from .batch import run_batch

    if not jobs:
        return
    labelled = run_batch(_write_labels, jobs, workers=workers, description="labels",
                         progress=progress and len(jobs) > 1, on_error=on_error, name=lambda job: job.source)
    for row in (r for r in labelled.results if r is not None):
        for note in row.pop("notes"):
            notice = Notice("note", f"{row['source']}: {note}")
            report.notices.append(notice)
            if on_notice:
                on_notice(notice)
        report.written.append(row)
    report.failures.extend(labelled.failures)


def _write_labels(job: _LabelJob) -> dict[str, Any]:
    """Read one RTSTRUCT / SEG onto its series' grid and write the label volume."""
    from .dicomlabels import grid_of, read_labels
    from .formats import save_volume

    grid = grid_of(job.stack)
    grid.meta = {"dicom": {"series_uid": job.stack.frames[0].series_uid}}
    result = read_labels(job.source, grid, allow_empty=job.allow_empty)
    volume = result.volume
    volume.history.append({**job.step, "source": job.source})
    save_volume(volume, job.path, force=job.force)
    row = written_row(volume, job.path, series=job.stack.name, files=1)
    row.update(source=job.source, labels=volume.meta["labels"], notes=result.notes)
    return row


def _case_row(path: Path, stack: Stack, folder: Path) -> dict[str, Any]:
    """The :data:`CASES_FILE` row of the volume written to ``path`` from ``stack``."""
    relative = path.relative_to(folder) if path.is_relative_to(folder) else Path(path.name)
    suffix = volume_suffix(relative) or ""
    naming = stack.frames[0].naming
    return {"case_id": relative.as_posix()[: len(relative.as_posix()) - len(suffix)],
            "output": relative.as_posix(), "source": stack.source,
            **{k: naming.get(k, "") for k in CASES_COLUMNS[3:-1]}, "files": stack.files}


def _is_volume_file(path: Path) -> bool:
    """A volume file, the .json sidecar of one, or medtool's cases.csv (never DICOM)."""
    if volume_suffix(path) or path.name == CASES_FILE:
        return True
    return path.suffix == ".json" and path.with_suffix(".npy").exists()


def _writable(jobs: list[_Job], *, force: bool, report: Report, on_error,
              root: Path | None) -> list[_Job]:
    """The jobs whose output may be written (it does not exist, or ``force``; it lies inside
    the output folder ``root``); the others are reported as failures of their input."""
    from .files import check_inside, check_writable

    seen: set[Path] = set()
    writable = []
    for job in jobs:
        if job.path in seen:
            raise UsageError(f"two series would both be written to {job.path}",
                             hint="convert the folders separately")
        seen.add(job.path)
        try:
            if root is not None:
                check_inside(job.path, root)
            check_writable(job.path, force=force)
        except MedtoolError as exc:
            report.failures.append((job.stack.source, exc))
            if on_error:
                on_error(exc)
        else:
            writable.append(job)
    return writable


def _write(job: _Job) -> dict[str, Any]:
    from .formats import save_volume, save_volume_slabs, writes_slabs

    planned = planned_volume(job.stack) if job.hu is None else None
    if planned is not None and writes_slabs(job.path, planned.array.dtype):
        planned.history.append({**job.step, "source": job.stack.case})
        lows, highs = [], []

        def slabs():                                    # read and written a few at a time
            for slab in read_slabs(job.stack):
                lows.append(slab.min().item())
                highs.append(slab.max().item())
                yield slab

        save_volume_slabs(planned, job.path, slabs(), force=job.force)
        return written_row(planned, job.path, series=job.stack.name, files=job.stack.files,
                           value_range=(min(lows), max(highs)))
    volume = assemble(job.stack, workers=job.workers, progress=job.progress)
    if job.hu is not None:
        try:
            volume = job.hu.apply(volume)
        except MedtoolError as exc:
            exc.path = exc.path or job.stack.source
            raise
    volume.history.append({**job.step, "source": job.stack.case})
    save_volume(volume, job.path, force=job.force)
    return written_row(volume, job.path, series=job.stack.name, files=job.stack.files)


def written_row(volume, path: Path, *, series: str, files: int,
                value_range: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """The row a command prints (and ``--json`` gives) for one written volume (``value_range``:
    its values' (min, max), when its array does not hold them)."""
    low, high = value_range or (np.min(volume.array).item(), np.max(volume.array).item())
    return {"output": str(path), "series": series, "shape": list(volume.shape),
            "spacing": [round(s, 6) for s in volume.spacing], "files": files,
            "dtype": str(volume.array.dtype), "units": volume.units,
            "modality": volume.meta.get("modality"), "orientation": volume.orientation,
            "range": [low, high]}


def convert_hu(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
               window: tuple[float, float] | None = None, preset: str | None = None,
               normalize: bool = False, rescale: tuple[float, float] | None = None,
               fmt: str | None = None, workers: int = 1, force: bool = False,
               shard: tuple[int, int] | None = None, step: dict[str, Any] | None = None,
               progress: bool = False, on_error: Callable[[MedtoolError], None] | None = None,
               on_notice: Callable[[Notice], None] | None = None) -> Report:
    """``medtool hu``: volume files and DICOM folders under ``inputs`` to HU volumes in ``out``.

    Volume files keep their names (mirrored under ``out``) and, unless ``fmt`` is given, their
    format; DICOM series are converted as :func:`convert` does with ``hu`` set.
    """
    from .hounsfield import WINDOW_PRESETS

    if window is not None and preset is not None:
        raise UsageError("give --window or --preset, not both")
    if preset is not None:
        check_choice("--preset", preset, WINDOW_PRESETS)
        window = WINDOW_PRESETS[preset]
    if fmt is not None:
        check_choice("--format", fmt, FORMATS)
    options = HuOptions(window=window, normalize=normalize, rescale=rescale)
    candidates = find_files(inputs, suffixes=None)
    dicom = [p for p in candidates if not _is_volume_file(p)]
    report = Report(inputs=[str(p) for p in inputs])
    if dicom:
        report = convert(inputs, out, fmt=fmt or "npy", hu=options,
                         workers=workers, force=force, shard=shard, step=step, progress=progress,
                         on_error=on_error, on_notice=on_notice)
        report.inputs = [str(p) for p in inputs]
    volumes = [p for p in candidates if volume_suffix(p)]
    return map_volumes(volumes, out, options.apply, roots=inputs, fmt=fmt, workers=workers,
                       force=force, shard=shard, step=step, progress=progress, on_error=on_error,
                       description="converting", report=report,
                       unchanged_note="input was HU already; values unchanged")


# -- volume files to volume files: what hu, lungmask and resample share ------------------------

@dataclass
class VolumeJob:
    """One input volume file and where its outputs go."""

    source: Path
    path: Path
    transform: Callable[[Any], Any]
    extra: tuple[str, ...]
    step: dict[str, Any]
    force: bool
    unchanged_note: str | None = None
    root: Path | None = None        # the output folder (outputs never land outside it)

    def output(self, key: str) -> Path:
        """Path of output ``key`` (``""``: the main one; others get ``_<key>`` in the name)."""
        if not key:
            return self.path
        suffix = volume_suffix(self.path) or self.path.suffix
        stem = self.path.name[: len(self.path.name) - len(suffix)]
        return self.path.with_name(f"{stem}_{key}{suffix}")


def format_suffix(fmt: str | None, *, name: str = "", default: str = ".npy") -> Callable[[Path], str]:
    """The ``suffix`` of :func:`plan_outputs` for ``--format fmt``: ``name`` (``_lungs``), then
    ``.fmt``, or the input's own volume suffix, or ``default`` for other inputs (DICOM).

    Raises
    ------
    UsageError
        ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt is not None:
        check_choice("--format", fmt, FORMATS)
    return lambda source: name + (f".{fmt}" if fmt else volume_suffix(source) or default)


def plan_outputs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                 suffix: Callable[[Path], str], roots: Sequence[str | os.PathLike] | None = None,
                 shard: tuple[int, int] | None = None, single_suffixes: Sequence[str] | None = None,
                 already: int = 0, image_suffix: str = "") -> list[tuple[Path, Path]]:
    """Pair every input file with its output path: ``OUT/<relative name><suffix>``.

    With ``image_suffix`` (``_flair``, ``_0000``) only files named ``<case><image_suffix>`` are
    inputs, and their outputs are named ``<case><suffix>``.

    Folders among ``inputs`` are walked for volume files; their relative layout is mirrored
    under ``out`` (``roots`` are the folders the names are relative to, default ``inputs``).
    When ``out`` ends in one of ``single_suffixes`` (default: the volume suffixes) it names the
    one output file of one input. ``already`` counts outputs written by an earlier stage into
    the same ``out`` (``hu`` converts DICOM folders first).

    Raises
    ------
    UsageError
        ``out`` names one file but there are several inputs, or two inputs would be written to
        the same output.
    """
    from .files import VOLUME_SUFFIXES, case_of_image, mirror_path

    out = Path(out)
    sources = take_shard([p for p in find_files(inputs) if case_of_image(p, image_suffix)], shard)
    single_suffixes = tuple(single_suffixes or VOLUME_SUFFIXES)
    single = out.name.lower().endswith(single_suffixes)
    if single and len(sources) + already > 1:
        raise UsageError(f"{out} names one file, but there are several inputs",
                         hint="give an output folder instead")
    roots = [Path(p) for p in (inputs if roots is None else roots)]
    pairs = [(source, out if single else mirror_path(source, roots, out, suffix(source),
                                                     image_suffix=image_suffix))
             for source in sources]
    seen: dict[Path, Path] = {}
    for source, path in pairs:
        if path in seen:
            raise UsageError(f"{seen[path]} and {source} would both be written to {path}",
                             hint="give them different names or run them separately")
        seen[path] = source
    return pairs


def map_volumes(inputs: Sequence[str | os.PathLike], out: str | os.PathLike,
                transform: Callable[[Any], Any], *, roots: Sequence[str | os.PathLike] | None = None,
                fmt: str | None = None, extra: Sequence[str] = (), workers: int = 1,
                force: bool = False, shard: tuple[int, int] | None = None,
                step: dict[str, Any] | None = None, progress: bool = False,
                on_error: Callable[[MedtoolError], None] | None = None,
                description: str = "working", report: Report | None = None,
                unchanged_note: str | None = None) -> Report:
    """Apply ``transform`` to every volume file under ``inputs``; write the results under ``out``.

    Parameters
    ----------
    transform
        A picklable callable (module-level function, bound method of a dataclass) taking the
        input :class:`~medtool.volume.Volume` and returning the output volume, or a dict of
        outputs keyed ``""`` (the main output) and each name in ``extra``. It raises
        :class:`~medtool.errors.MedtoolError` for inputs it cannot handle.
    fmt
        Output format (``npy``, ``npz``, ``nii.gz``, ``nii``); default the input's.
    extra
        Names of the additional outputs, written beside the main one as ``<name>_<extra>``.
    unchanged_note
        History note for an input that the transform returned unchanged.

    Every output is written atomically; existing outputs are refused without ``force``; an input
    that fails is reported (``on_error``) and the others go on. Each output gets the history
    entry ``step``.
    """
    from .batch import run_batch

    suffix = format_suffix(fmt)
    report = report or Report(inputs=[str(p) for p in inputs])
    pairs = plan_outputs(inputs, out, roots=roots, shard=shard, already=len(report.written),
                         suffix=suffix)
    single = len(pairs) == 1 and pairs[0][1] == Path(out)
    jobs = [VolumeJob(source, path, transform, tuple(extra), step or {}, force, unchanged_note,
                      None if single else Path(out))
            for source, path in pairs]
    outcome = run_batch(write_volume_job, jobs, workers=workers, description=description,
                        progress=progress, on_error=on_error, name=lambda job: str(job.source))
    report.written.extend(row for rows in outcome.results if rows is not None for row in rows)
    report.failures.extend(outcome.failures)
    report.files += len(jobs)
    return report


def write_volume_job(job: VolumeJob) -> list[dict[str, Any]]:
    """Run one :class:`VolumeJob`: read, transform, write every output; the rows written."""
    from .files import check_inside, check_writable
    from .formats import load_volume, save_volume

    keys = ("", *job.extra)
    for key in keys:
        if job.root is not None:
            check_inside(job.output(key), job.root)
        check_writable(job.output(key), force=job.force)
    source = load_volume(job.source, mmap=True)
    try:
        result = job.transform(source)
    except MedtoolError as exc:
        exc.path = exc.path or str(job.source)
        raise
    outputs = result if isinstance(result, dict) else {"": result}
    detail = {"note": job.unchanged_note} if result is source and job.unchanged_note else {}
    rows = []
    for key in keys:
        volume = outputs[key]
        volume.history.append({**job.step, **detail})
        save_volume(volume, job.output(key), force=job.force)
        rows.append(written_row(volume, job.output(key), series=str(job.source), files=1))
    return rows
