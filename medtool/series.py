"""Building volumes from DICOM images: grouping, sorting, checking and stacking.

The steps, each stated where a user can read it (``medtool dicom2npy --help`` quotes the
tolerances below):

1. :func:`scan` reads the header of every file (in parallel) into :class:`~medtool.dicom.Frame`
   records; non-DICOM files are skipped and counted, broken ones reported one by one.
2. :func:`plan` groups frames by SeriesInstanceUID, splits a series into stacks by orientation,
   image size and pixel spacing, drops localizers, sorts each stack by ImagePositionPatient
   projected on the slice normal (row x column cosines), drops exact duplicates, splits
   multi-phase stacks by the attribute that tells the phases apart, and checks the spacing of
   the positions (gaps) and the angle between stacking direction and normal (gantry tilt).
3. :func:`assemble` reads the pixels into one output array, a window of slices at a time, and
   applies the explicit corrections the user asked for (``untilt``, ``allow_gaps``).

Slice spacing always comes from the positions, never from SliceThickness.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .dicom import Frame, SkippedFile, read_frames, read_pixels
from .errors import InputError, MedtoolError, UsageError
from .volume import AXIAL_DIRECTION, UNITS_RAW, Volume

log = logging.getLogger(__name__)

#: Consecutive slice spacings may differ from the median spacing by this fraction before the
#: stack counts as having gaps or uneven spacing.
GAP_TOLERANCE = 0.05
#: Two images whose projected positions are closer than this (mm) are at the same position.
SAME_POSITION_MM = 0.01
#: A stack is tilted when its slices drift sideways (perpendicular to the slice normal) by more
#: than this fraction of a pixel from the first slice to the last.
TILT_PIXEL_FRACTION = 0.25
#: Spline order of the in-plane shifts that straighten a tilted stack (3: cubic, so that a
#: source pixel read back from the straight grid is within a few HU of itself).
UNTILT_ORDER = 3
#: Source pixel centres within this fraction of a pixel outside the straight grid count as
#: inside it (rounding of positions in the header).
TILT_EDGE_PIXELS = 1e-3
#: Stacks with fewer images than this, in another orientation than the series' main stack,
#: are localizers.
LOCALIZER_MAX_IMAGES = 3
#: Cosines are compared after rounding to this many decimals (about 0.06 degrees).
_COSINE_DECIMALS = 3
#: A slice spacing taken from SliceThickness / SpacingBetweenSlices above this (mm) is not used.
MAX_SLICE_SPACING_MM = 1000.0
#: Header-reading tasks hold at least this many files (fewer tasks, less process overhead).
_SCAN_CHUNK = 32
#: Decoding compressed slices in parallel pays off from this many slices on.
_PARALLEL_MIN_SLICES = 8
#: Slices per slab of :func:`read_slabs` (16 slices of 512 x 512 int16: 8 MiB, hot in cache).
SLAB_SLICES = 16


@dataclass
class Notice:
    """Something a user should know about a series (``level`` is ``note`` or ``warning``)."""

    level: str
    text: str
    paths: list[str] = field(default_factory=list)   # files left out because of it


@dataclass
class ScanResult:
    """What :func:`scan` found: image frames, skipped files, and files that failed."""

    frames: list[Frame] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, MedtoolError]] = field(default_factory=list)


@dataclass
class Stack:
    """One volume to build: its frames in slice order and its geometry.

    ``positions`` are the projected positions (mm along the normal) of the frames, ``shifts``
    the in-plane shift (rows, columns) of each slice that straightens a tilted stack, and
    ``grid`` the positions of the output slices when they differ from ``positions``.
    """

    frames: list[Frame]
    name: str
    case: str
    spacing: tuple[float, ...]
    origin: tuple[float, float, float]
    direction: np.ndarray
    meta: dict[str, Any]
    positions: np.ndarray | None = None
    shifts: np.ndarray | None = None
    grid: np.ndarray | None = None
    pad: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))   # rows, columns added

    @property
    def shape(self) -> tuple[int, ...]:
        rows, columns = self.frames[0].shape
        rows += sum(self.pad[0])
        columns += sum(self.pad[1])
        slices = len(self.grid) if self.grid is not None else len(self.frames)
        return (rows, columns) if self.is_2d else (slices, rows, columns)

    @property
    def is_2d(self) -> bool:
        return len(self.frames) == 1

    @property
    def files(self) -> int:
        return len({f.path for f in self.frames})

    @property
    def source(self) -> str:
        """Where the stack comes from: its one file, or the folder holding its files."""
        paths = {f.path for f in self.frames}
        if len(paths) == 1:
            return next(iter(paths))
        return os.path.commonpath([str(Path(p).parent) for p in paths])


@dataclass
class Plan:
    """The stacks to build and the series that could not be built."""

    stacks: list[Stack] = field(default_factory=list)
    failures: list[tuple[str, MedtoolError]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


# -- 1. scanning ----------------------------------------------------------------------------

def scan(files: Sequence[Path], *, workers: int = 1, progress: bool = False,
         on_error=None, keywords: Sequence[str] = ()) -> ScanResult:
    """Read the headers of ``files``; see :class:`ScanResult`. ``keywords`` (of a name
    template) are kept in each frame's ``naming``."""
    from .batch import run_batch

    files = [str(f) for f in files]
    size = max(_SCAN_CHUNK, math.ceil(len(files) / max(1, workers * 8)))
    chunks = [(files[i:i + size], tuple(keywords)) for i in range(0, len(files), size)] or []
    result = ScanResult()

    def collect(_: int, part: ScanResult) -> None:
        result.frames.extend(part.frames)
        result.skipped.extend(part.skipped)
        for name, error in part.failures:
            result.failures.append((name, error))
            if on_error is not None:
                on_error(error)

    run_batch(_scan_chunk, chunks, workers=workers, description="reading headers",
              progress=progress and len(files) > _SCAN_CHUNK, on_result=collect)
    result.failures.sort(key=lambda item: item[0])
    return result


def _scan_chunk(chunk: tuple[list[str], tuple[str, ...]]) -> ScanResult:
    paths, keywords = chunk
    part = ScanResult()
    for path in paths:
        try:
            part.frames.extend(read_frames(path, keywords=keywords))
        except SkippedFile as exc:
            part.skipped.append((path, exc.kind))
        except MedtoolError as exc:
            part.failures.append((path, exc))
    return part


# -- 2. planning ----------------------------------------------------------------------------

class NameTemplate:
    """``--name TEMPLATE``: case names from DICOM keywords, e.g. ``{PatientID}`` or
    ``{PatientID}_{StudyDate}_{SeriesNumber:03}``.

    Each ``{Keyword}`` is replaced by that attribute of the series' first image; characters
    other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (``DOE^JOHN`` ->
    ``DOE_JOHN``), a missing value becomes :data:`MISSING_VALUE`; a format spec applies to
    numbers (``{SeriesNumber:03}`` -> ``003``). ``/`` in the template makes sub-folders.
    """

    def __init__(self, text: str):
        import string

        from pydicom.datadict import tag_for_keyword

        self.text = text
        try:
            fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(text)
                      if name is not None]
        except ValueError as exc:
            raise UsageError(f"--name {text!r}: {exc}",
                             hint="put DICOM keywords in braces, e.g. --name '{PatientID}'") from None
        if not fields:
            raise UsageError(f"--name {text!r} holds no {{Keyword}}",
                             hint="e.g. --name '{PatientID}_{SeriesNumber}'")
        unknown = [name for name, _ in fields if not name or tag_for_keyword(name) is None]
        if unknown:
            raise UsageError(f"--name {text!r}: {', '.join(repr(u) for u in unknown)} is not a "
                             "DICOM keyword", hint="use keywords such as PatientID, StudyDate, "
                                                   "SeriesNumber, AccessionNumber")
        if text.startswith("/") or ".." in Path(text).parts:
            raise UsageError(f"--name {text!r} must stay inside the output folder")
        self.fields = fields
        self.keywords = tuple(dict.fromkeys(name for name, _ in fields))

    def format(self, naming: dict[str, str]) -> str:
        """The case name for a series whose first image has the values ``naming``."""
        import string

        parts = []
        for literal, name, spec, _ in string.Formatter().parse(self.text):
            parts.append(literal)
            if name is None:
                continue
            value = naming.get(name, "")
            if spec:
                try:
                    number = float(value)
                    value = format(int(number) if number.is_integer() else number, spec)
                except (ValueError, TypeError):
                    pass
            parts.append(_NAME_UNSAFE.sub("_", value).strip("._") or MISSING_VALUE)
        return "".join(parts)


#: What a template keyword without a value gives.
MISSING_VALUE = "NA"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def plan(frames: Sequence[Frame], *, roots: Sequence[str | os.PathLike] = (),
         series: str = "all", allow_gaps: bool = False, untilt: bool = True,
         name: NameTemplate | None = None) -> Plan:
    """Group ``frames`` into stacks and check them (see the module docstring).

    Parameters
    ----------
    roots
        The inputs the user named; a stack's case name is its folder relative to its root,
        unless ``name`` gives it.
    series
        ``all``, ``largest`` (per case) or one SeriesInstanceUID.
    allow_gaps
        Resample stacks with missing slices or uneven spacing to uniform spacing (else such a
        stack is an error).
    untilt
        Resample gantry-tilted stacks onto a straight grid widened to hold every source pixel,
        with a warning, as dcm2niix does (else such a stack is an error).
    """
    result = Plan()
    by_series: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        key = frame.series_uid or f"(no SeriesInstanceUID) {Path(frame.path).parent}"
        by_series[key].append(frame)
    if series not in ("all", "largest"):
        if series not in by_series:
            raise UsageError(f"--series {series}: no series with this SeriesInstanceUID among "
                             f"the {len(by_series)} series found")
        by_series = {series: by_series[series]}

    roots = [Path(r) for r in roots]
    built: list[Stack] = []
    for uid, members in by_series.items():
        case = _case_name(members, roots)
        try:
            built.extend(_plan_series(uid, members, case, result.notices,
                                      allow_gaps=allow_gaps, untilt=untilt))
        except MedtoolError as exc:
            if exc.path is None:
                exc.path = f"{case} (series {_series_label(members)})"
            result.failures.append((exc.path, exc))

    by_case: dict[str, list[Stack]] = defaultdict(list)
    for stack in built:
        if name is not None:
            stack.case = name.format(stack.frames[0].naming)
        by_case[stack.case].append(stack)
    for case, stacks in by_case.items():
        if series == "largest" and len(stacks) > 1:
            stacks.sort(key=lambda s: (-math.prod(s.shape), s.name))
            for other in stacks[1:]:
                result.notices.append(Notice("note", f"{case}: left out series {other.name} "
                                                     f"(--series largest)"))
            stacks = stacks[:1]
        if name is not None and len(stacks) > 1:
            shown = ", ".join(sorted({s.source for s in stacks})[:3])
            error = InputError(f"--name {name.text!r} gives {case!r} to {len(stacks)} series "
                               f"(from {shown})", path=case,
                               hint="add {SeriesNumber} or {SeriesInstanceUID} to --name, or "
                                    "pass --series largest")
            result.failures.append((shown, error))
            continue
        if name is not None:
            stacks[0].name = case
        else:
            _name_stacks(case, stacks)
        result.stacks.extend(stacks)
    result.stacks.sort(key=lambda s: s.name)
    return result


def _series_label(frames: Sequence[Frame]) -> str:
    number = frames[0].facts.get("series_number")
    return str(number) if number is not None else (frames[0].series_uid or "?")


#: File name suffixes of DICOM files, dropped when a file named on its own names its volume.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def _case_name(frames: Sequence[Frame], roots: Sequence[Path]) -> str:
    """The folder holding ``frames``, relative to the input root it was found under; a file
    that the user named on its own and that holds the whole series gives its own name."""
    files = {Path(f.path) for f in frames}
    if len(files) == 1:
        (only,) = files
        if any(not root.is_dir() and root == only for root in roots):
            name = only.name
            for suffix in DICOM_SUFFIXES:
                if name.lower().endswith(suffix) and len(name) > len(suffix):
                    name = name[: -len(suffix)]
                    break
            return name
    folder = Path(os.path.commonpath([str(Path(f.path).parent) for f in frames]))
    for root in roots:
        if root.is_dir():
            try:                                # as found (through folder links), or resolved
                relative = (folder.relative_to(root) if folder.is_relative_to(root)
                            else folder.resolve().relative_to(root.resolve()))
            except ValueError:
                continue
            return relative.as_posix() if relative.parts else root.resolve().name
    return folder.resolve().name or "series"


def _name_stacks(case: str, stacks: list[Stack]) -> None:
    """Output names: the case, plus a series suffix when the case holds several stacks."""
    if len(stacks) == 1:
        stacks[0].name = case
        return
    counts: dict[str, int] = defaultdict(int)
    for stack in stacks:
        counts[stack.name] += 1
    seen: dict[str, int] = defaultdict(int)
    for stack in stacks:
        base = stack.name
        if counts[base] > 1:
            seen[base] += 1
            base = f"{base}_{seen[base]}"
        stack.name = f"{case}_{base}"


def _plan_series(uid: str, frames: list[Frame], case: str, notices: list[Notice], *,
                 allow_gaps: bool, untilt: bool) -> list[Stack]:
    label = _series_label(frames)
    where = f"{case} (series {label})"
    localizers = [f for f in frames if f.is_localizer]
    if localizers:
        notices.append(Notice("note", f"{where}: dropped {len(localizers)} localizer image(s) "
                                      f"(ImageType {'/'.join(localizers[0].image_type)})",
                              [f.path for f in localizers]))
        frames = [f for f in frames if not f.is_localizer]
        if not frames:
            return []

    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[_stack_key(frame)].append(frame)
    stacks = sorted(groups.values(), key=len, reverse=True)
    main = stacks[0]
    kept = [main]
    for other in stacks[1:]:
        if (len(main) > LOCALIZER_MAX_IMAGES and len(other) <= LOCALIZER_MAX_IMAGES
                and _stack_key(other[0])[0] != _stack_key(main[0])[0]):
            notices.append(Notice("note", f"{where}: dropped {len(other)} image(s) in another "
                                          f"orientation than the series' {len(main)} (localizer)",
                                  [f.path for f in other]))
        else:
            kept.append(other)

    base = f"series{label}" if frames[0].facts.get("series_number") is not None else "series"
    result: list[Stack] = []
    for index, members in enumerate(kept, 1):
        name = base if len(kept) == 1 else f"{base}_stack{index}"
        for phase_name, phase in _split_phases(members, where, notices):
            stack_name = name if phase_name is None else f"{name}_{phase_name}"
            result.append(_geometry(phase, stack_name, case, where, notices,
                                    allow_gaps=allow_gaps, untilt=untilt))
    return result


def _stack_key(frame: Frame) -> tuple:
    orientation = (None if frame.orientation is None
                   else tuple(np.round(frame.orientation, _COSINE_DECIMALS) + 0.0))
    spacing = None if frame.pixel_spacing is None else tuple(np.round(frame.pixel_spacing, 4))
    return orientation, frame.shape, spacing


def _normal(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal row cosine, column cosine and slice normal (row x column) of ``frame``."""
    cosines = np.asarray(frame.orientation, dtype=np.float64)
    row = cosines[:3] / np.linalg.norm(cosines[:3])
    column = cosines[3:] - (cosines[3:] @ row) * row
    column /= np.linalg.norm(column)
    return row, column, np.cross(row, column)


def _projected(frames: Sequence[Frame]) -> np.ndarray | None:
    if any(f.position is None for f in frames) or frames[0].orientation is None:
        return None
    _, _, normal = _normal(frames[0])
    return np.asarray([f.position for f in frames], dtype=np.float64) @ normal


def _split_phases(frames: list[Frame], where: str,
                  notices: list[Notice]) -> list[tuple[str | None, list[Frame]]]:
    """Drop exact duplicates; split images sharing positions into phases, or fail."""
    positions = _projected(frames)
    if positions is None or len(frames) < 2:
        return [(None, frames)]
    order = np.lexsort((np.arange(len(frames)), positions))
    frames = [frames[i] for i in order]
    positions = positions[order]
    same = np.abs(np.diff(positions)) < SAME_POSITION_MM
    if not same.any():
        return [(None, frames)]

    # Runs of frames at one position.
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    runs = np.split(np.arange(len(frames)), starts[1:])
    keep: list[Frame] = []
    dropped: list[Frame] = []
    conflicts: list[float] = []
    for run in runs:
        members = [frames[i] for i in run]
        distinct = _distinct_images(members)
        dropped.extend(f for f in members if not any(f is d for d in distinct))
        keep.extend(distinct)
        if len(distinct) > 1:
            conflicts.append(float(positions[run[0]]))
    if dropped:
        notices.append(Notice("warning", f"{where}: dropped {len(dropped)} exact duplicate "
                                         f"slice(s) (same position, same pixels)",
                              sorted({f.path for f in dropped})))
    if not conflicts:
        return [(None, keep)]
    for key in _phase_keys(keep):
        values = [f.phase[key] for f in keep]
        groups: dict[str, list[Frame]] = defaultdict(list)
        for value, frame in zip(values, keep):
            groups[value].append(frame)
        if len(groups) > 1 and all(_unique_positions(g) for g in groups.values()):
            ordered = sorted(groups.items(), key=lambda kv: _sort_value(kv[0]))
            notices.append(Notice("warning", f"{where}: {len(conflicts)} position(s) hold "
                                             f"different images: multi-phase, split by {key} "
                                             f"into {len(groups)} volumes"))
            return [(f"phase{i}", members) for i, (_, members) in enumerate(ordered, 1)]
    shown = ", ".join(f"{p:.2f}" for p in conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
    raise InputError(f"{len(conflicts)} slice position(s) hold different images (multi-phase "
                     f"or repeated acquisition, at {shown} mm along the normal) and no DICOM "
                     f"attribute tells the phases apart",
                     hint="put each phase's files in its own folder and convert them separately")


def _phase_keys(frames: Sequence[Frame]) -> list[str]:
    from .dicom import PHASE_KEYS

    return [k for k in PHASE_KEYS if all(k in f.phase for f in frames)]


def _sort_value(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _unique_positions(frames: Sequence[Frame]) -> bool:
    positions = np.sort(_projected(frames))
    return bool(np.all(np.diff(positions) >= SAME_POSITION_MM))


def _distinct_images(frames: list[Frame]) -> list[Frame]:
    """``frames`` at one position without exact copies (same SOP instance, or same pixels)."""
    distinct: list[Frame] = []
    pixels: list[np.ndarray] = []
    for frame in frames:
        if any(frame.sop_uid and frame.sop_uid == d.sop_uid and frame.frame == d.frame
               for d in distinct):
            continue
        image = read_pixels([frame])[0]
        if any(np.array_equal(image, p) and (frame.slope, frame.intercept) == (d.slope, d.intercept)
               for p, d in zip(pixels, distinct)):
            continue
        distinct.append(frame)
        pixels.append(image)
    return distinct


def _geometry(frames: list[Frame], name: str, case: str, where: str, notices: list[Notice], *,
              allow_gaps: bool, untilt: bool) -> Stack:
    """The :class:`Stack` of one series' ``frames``: slice order, pixel and slice spacing,
    origin and direction; a tilted or unevenly spaced stack is planned for resampling onto a
    straight, uniform grid (and ``notices`` say so)."""
    frames, positions = _sorted_frames(frames)
    first = frames[0]
    meta = _meta(frames)
    spacing_yx = _pixel_spacing(first, meta, where, notices)

    if len(frames) == 1:
        origin = first.position or (0.0, 0.0, 0.0)
        if first.orientation is not None:
            row, column, normal = _normal(first)
            direction = np.column_stack([normal, column, row])
        else:
            direction = _projection_direction(first.patient_orientation)
        return Stack(frames, name, case, tuple(spacing_yx), tuple(origin), direction, meta)

    if positions is None:
        return _unpositioned(frames, name, case, where, notices, meta, spacing_yx)

    row, column, normal = _normal(frames[0])
    direction = np.column_stack([normal, column, row])
    origin = tuple(frames[0].position)
    stack = Stack(frames, name, case, (), origin, direction, meta, positions=positions)
    _plan_untilt(stack, spacing_yx, where, notices, untilt=untilt)
    _plan_slices(stack, spacing_yx, where, notices, allow_gaps=allow_gaps)
    if stack.spacing[0] <= 0:
        raise InputError("all slices lie at the same position", hint="this is not a volume")
    return stack


def _sorted_frames(frames: list[Frame]) -> tuple[list[Frame], np.ndarray | None]:
    """``frames`` in slice order and their positions along the stack's normal: by position
    (ties in the given order) or, without positions, by instance number, frame and path."""
    positions = _projected(frames)
    if positions is not None:
        order = np.lexsort((np.arange(len(frames)), positions))
        frames = [frames[i] for i in order]
        positions = positions[order]
    else:
        frames = sorted(frames, key=lambda f: (f.instance if f.instance is not None else 0,
                                               f.frame or 0, f.path))
    return frames, positions


def _pixel_spacing(first: Frame, meta: dict[str, Any], where: str, notices: list[Notice]) -> tuple[float, float]:
    """The (row, column) pixel spacing of the stack whose first frame is ``first``: 1 mm with
    a warning where it has none; ``meta`` says where it came from when not PixelSpacing."""
    spacing_yx = first.pixel_spacing
    if spacing_yx is None:
        spacing_yx = (1.0, 1.0)
        meta["pixel_spacing_source"] = "unknown"
        invalid = next(((k[len("invalid_"):], v) for k, v in first.facts.items()
                        if k.startswith("invalid_")), None)
        why = ("no PixelSpacing" if invalid is None else
               f"{invalid[0]} {'/'.join(f'{v:g}' for v in invalid[1])} is not a spacing")
        notices.append(Notice("warning", f"{where}: {why}; using 1 mm pixels"))
    elif first.spacing_source != "PixelSpacing":
        meta["pixel_spacing_source"] = first.spacing_source
    return spacing_yx


def _plan_untilt(stack: Stack, spacing_yx, where: str, notices: list[Notice], *, untilt: bool) -> None:
    """Gantry tilt: where the slice positions drift sideways (relative to the first slice), set
    ``stack``'s shifts, padding and origin to resample it onto a straight grid that holds every
    source pixel (or, without ``untilt``, refuse)."""
    frames, positions, meta = stack.frames, stack.positions, stack.meta
    origin = stack.origin
    row, column, normal = _normal(frames[0])
    extent = positions[-1] - positions[0]
    points = np.asarray([f.position for f in frames], dtype=np.float64) - np.asarray(origin)
    lateral = points - np.outer(points @ normal, normal)
    drift = float(np.linalg.norm(lateral[-1]))
    if drift <= TILT_PIXEL_FRACTION * min(spacing_yx):
        return
    angle = math.degrees(math.atan2(drift, extent))
    meta["gantry_tilt_deg"] = round(angle, 4)
    if not untilt:
        raise InputError(f"gantry tilt of {angle:.2f} degrees: the slices shift "
                         f"{drift / (len(frames) - 1):.3f} mm sideways from one to the next",
                         hint="leave out --no-untilt to resample the stack onto a straight "
                              "grid")
    shifts = np.column_stack([lateral @ column / spacing_yx[0], lateral @ row / spacing_yx[1]])
    # widen the straight grid so that it holds every source pixel: source pixel i of slice
    # k lands at i + shift_k, so the grid runs from min(shift) to size - 1 + max(shift)
    low = np.ceil(np.maximum(0.0, -shifts.min(axis=0)) - TILT_EDGE_PIXELS).astype(int)
    high = np.ceil(np.maximum(0.0, shifts.max(axis=0)) - TILT_EDGE_PIXELS).astype(int)
    low, high = np.maximum(low, 0), np.maximum(high, 0)
    stack.pad = ((int(low[0]), int(high[0])), (int(low[1]), int(high[1])))
    stack.shifts = shifts + low
    stack.origin = tuple(np.asarray(origin) - low[0] * spacing_yx[0] * column
                         - low[1] * spacing_yx[1] * row)
    meta["untilted"] = True
    meta["untilt_added_pixels"] = {"rows": list(stack.pad[0]), "columns": list(stack.pad[1])}
    added = sum(stack.pad[0]) + sum(stack.pad[1])
    notices.append(Notice("warning", f"{where}: gantry tilt of {angle:.2f} degrees, "
                                     f"resampled onto a straight grid widened by {added} "
                                     f"pixel(s) so that it holds every source pixel "
                                     f"(--no-untilt refuses instead)"))


def _plan_slices(stack: Stack, spacing_yx, where: str, notices: list[Notice], *, allow_gaps: bool) -> None:
    """The slice spacing of ``stack``: the least-squares step of even positions, or for uneven
    ones a uniform grid to resample onto (refused for missing slices without ``allow_gaps``)."""
    frames, positions, meta = stack.frames, stack.positions, stack.meta
    steps = np.diff(positions)
    extent = positions[-1] - positions[0]
    step = _median(steps)
    uneven = np.abs(steps - step) > GAP_TOLERANCE * step
    if not uneven.any():     # least squares over all positions: jitter within tolerance averages out
        stack.spacing = (float(np.polyfit(np.arange(len(frames)), positions, 1)[0]), *spacing_yx)
        return
    bad = np.flatnonzero(uneven)
    shown = "; ".join(f"{steps[i]:.3g} mm between slices {i} and {i + 1} "
                      f"(at {positions[i]:.2f} mm)" for i in bad[:4])
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    # a step of k whole steps (k >= 2) is k - 1 missing files: a damaged export; other
    # steps are a reconstruction with uneven spacing (a head CT denser at the skull base)
    multiple = steps[bad] / step
    missing = (multiple >= 2 - GAP_TOLERANCE) & (
        np.abs(multiple - np.round(multiple)) <= GAP_TOLERANCE * np.round(multiple))
    if missing.any() and not allow_gaps:
        raise InputError(f"missing slices: expected {step:.4g} mm, found {shown}{more}",
                         hint="find the missing files, or pass --allow-gaps to interpolate "
                              "onto a uniform grid")
    count = int(round(extent / step)) + 1
    stack.grid = positions[0] + np.arange(count) * (extent / (count - 1))
    meta["slice_positions"] = [round(float(p - positions[0]), 6) for p in positions]
    meta["interpolated_slices"] = int(count - np.isin(
        np.round(stack.grid, 4), np.round(positions, 4)).sum())
    why = "--allow-gaps" if missing.any() else "uneven spacing is resampled by default"
    notices.append(Notice("warning", f"{where}: uneven spacing ({shown}{more}); resampled "
                                     f"{len(frames)} slices to {count} at "
                                     f"{extent / (count - 1):.4g} mm ({why})"))
    stack.spacing = (extent / (count - 1), *spacing_yx)


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1D array, without the import of ``numpy.ma`` it makes (18 ms)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _unpositioned(frames, name, case, where, notices, meta, spacing_yx) -> Stack:
    """A stack without ImagePositionPatient/Orientation: ordered by InstanceNumber."""
    first = frames[0]
    facts = first.facts
    def usable(value) -> bool:
        return isinstance(value, (int, float)) and 0 < value <= MAX_SLICE_SPACING_MM

    spacing_between, slice_thickness = (facts.get("spacing_between_slices"),
                                        facts.get("slice_thickness"))
    thickness = (spacing_between if usable(spacing_between)
                 else slice_thickness if usable(slice_thickness) else None)
    source = ("SpacingBetweenSlices" if usable(spacing_between)
              else "SliceThickness" if thickness else None)
    spacing_z = float(thickness) if thickness else 1.0
    meta["slice_spacing_source"] = source or "unknown"
    notices.append(Notice("warning", f"{where}: no slice positions; slices ordered by "
                                     f"InstanceNumber, spacing {spacing_z:g} mm taken from "
                                     f"{source or 'nowhere (1 mm assumed)'}, not verified"))
    if first.orientation is not None:
        row, column, normal = _normal(first)
        direction = np.column_stack([normal, column, row])
    else:
        direction = AXIAL_DIRECTION.copy()
    origin = first.position or (0.0, 0.0, 0.0)
    return Stack(frames, name, case, (spacing_z, *spacing_yx), tuple(origin), direction, meta)


#: LPS unit vectors of the anatomical letters of PatientOrientation.
_LETTERS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0),
            "H": (0, 0, 1), "F": (0, 0, -1)}


def _projection_direction(letters: Sequence[str] | None) -> np.ndarray:
    """Direction of a projection image (X-ray) from PatientOrientation (row, column letters).

    Only the first letter of each value counts (``"FL"`` -> feet). Without usable letters the
    default is the plain axial convention (:data:`AXIAL_DIRECTION`).
    """
    if letters and len(letters) == 2 and all(v[:1] in _LETTERS for v in letters):
        row = np.asarray(_LETTERS[letters[0][0]], dtype=np.float64)
        column = np.asarray(_LETTERS[letters[1][0]], dtype=np.float64)
        if abs(row @ column) < 0.5:
            return np.column_stack([np.cross(row, column), column, row])
    return AXIAL_DIRECTION.copy()


def _meta(frames: Sequence[Frame]) -> dict[str, Any]:
    """Volume metadata: units, modality, per-slice rescale, padding, source facts."""
    first = frames[0]
    slopes = [f.slope for f in frames]
    intercepts = [f.intercept for f in frames]
    meta: dict[str, Any] = {"units": UNITS_RAW, "modality": first.modality or None}
    if any(f.has_rescale for f in frames):
        meta["rescale"] = {
            "slope": slopes[0] if len(set(slopes)) == 1 else slopes,
            "intercept": intercepts[0] if len(set(intercepts)) == 1 else intercepts,
        }
    if first.padding is not None:
        meta["padding"] = {"value": first.padding[0], "range_limit": first.padding[1]}
    source = {k: v for k, v in first.facts.items()}
    source["files"] = len({f.path for f in frames})
    if first.frame_count > 1:
        source["frames_per_file"] = first.frame_count
    if first.image_type:
        source["image_type"] = list(first.image_type)
    meta["dicom"] = source
    return meta


# -- 3. assembling --------------------------------------------------------------------------

def _stored_layout(stack: Stack) -> tuple[tuple[int, int, int], np.dtype]:
    """Shape and dtype of the stored values as read, before untilting or regridding."""
    frames = stack.frames
    dtype = np.result_type(*{np.dtype(f.dtype).newbyteorder("=") for f in frames})
    return (len(frames), *frames[0].shape), dtype


def planned_volume(stack: Stack) -> Volume | None:
    """The volume :func:`assemble` will return, its array a stand-in of the right shape and
    dtype (no memory, values not meaningful), when the pixels are returned as read (no
    untilting or regridding, a 3D stack), so that :func:`read_slabs` can give them to the
    writer a few slices at a time; else ``None``."""
    if stack.shifts is not None or stack.grid is not None or stack.is_2d:
        return None
    shape, dtype = _stored_layout(stack)
    stand_in = np.broadcast_to(np.zeros((), dtype), shape)
    return Volume(stand_in, stack.spacing, stack.origin, stack.direction, stack.meta)


def read_slabs(stack: Stack, *, slices: int = SLAB_SLICES) -> Iterator[np.ndarray]:
    """The stored values of a stack that :func:`planned_volume` plans, as consecutive slabs
    of up to ``slices`` slices read into one reused buffer (each valid until the next is asked
    for). (A thread reading the next slab while the caller writes this one measured no
    faster: both are copies of the page cache.)"""
    if planned_volume(stack) is None:
        raise ValueError("the stack is untilted or regridded: assemble it whole")
    shape, dtype = _stored_layout(stack)
    buffer = np.empty((min(slices, shape[0]), *shape[1:]), dtype=dtype)
    for start in range(0, shape[0], slices):
        yield _read_slab(stack.frames[start:start + slices], buffer)


def _read_slab(frames: Sequence[Frame], buffer: np.ndarray) -> np.ndarray:
    """``frames`` read into the start of ``buffer`` (one read_pixels per run of one file)."""
    run = 0
    for end in range(1, len(frames) + 1):
        if end == len(frames) or frames[end].path != frames[run].path:
            read_pixels(frames[run:end], out=buffer[run:end])
            run = end
    return buffer[:len(frames)]


def assemble(stack: Stack, *, workers: int = 1, progress: bool = False) -> Volume:
    """Read the pixels of ``stack`` into a :class:`~medtool.volume.Volume` of stored values."""
    frames = stack.frames
    shape, dtype = _stored_layout(stack)
    array = np.empty(shape, dtype=dtype)
    by_file: dict[str, list[int]] = defaultdict(list)
    for index, frame in enumerate(frames):
        by_file[frame.path].append(index)
    tasks = [[(i, frames[i]) for i in indices] for indices in by_file.values()]
    fast = all(f.pixel_offset is not None for f in frames)
    if workers > 1 and not fast and len(frames) >= _PARALLEL_MIN_SLICES:
        from .batch import run_batch

        def put(index: int, pixels: np.ndarray) -> None:
            array[[i for i, _ in tasks[index]]] = pixels

        outcome = run_batch(_read_task, tasks, workers=workers, description="decoding",
                            progress=progress, on_result=put)
        if outcome.failures:
            raise outcome.failures[0][1]
    else:
        for task in tasks:
            indices = [i for i, _ in task]
            if indices == list(range(indices[0], indices[0] + len(indices))):
                read_pixels([frame for _, frame in task],             # straight into place
                            out=array[indices[0]:indices[0] + len(indices)])
            else:
                array[indices] = _read_task(task)

    meta = stack.meta
    rescale = meta.get("rescale", {})
    per_slice = isinstance(rescale.get("slope"), list) or isinstance(rescale.get("intercept"), list)
    if per_slice and (stack.shifts is not None or stack.grid is not None):
        array = _common_rescale(array, meta)
    if stack.shifts is not None:
        array = _untilt(array, stack.shifts, _fill_value(meta, array), stack.pad)
    if stack.grid is not None:
        array = _regrid(array, stack.positions, stack.grid)
    if stack.is_2d:
        array = array[0]
    return Volume(array, stack.spacing, stack.origin, stack.direction, meta)


def _read_task(task: list[tuple[int, Frame]]) -> np.ndarray:
    return read_pixels([frame for _, frame in task])


def _common_rescale(array: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Bring slices with their own slope/intercept to the first slice's (before resampling)."""
    count = array.shape[0]
    slope = np.broadcast_to(np.asarray(meta["rescale"]["slope"], np.float64), (count,))
    intercept = np.broadcast_to(np.asarray(meta["rescale"]["intercept"], np.float64), (count,))
    real = array * slope[:, None, None] + intercept[:, None, None]
    stored = (real - intercept[0]) / slope[0]
    meta["rescale"] = {"slope": float(slope[0]), "intercept": float(intercept[0])}
    meta["rescale_unified"] = True
    return _like(stored, array.dtype)


def _like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in ``dtype`` (rounded) when they fit, else float32."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        rounded = np.rint(values)
        if rounded.min() >= info.min and rounded.max() <= info.max:
            return rounded.astype(dtype)
        return values.astype(np.float32)
    return values.astype(dtype)


def _fill_value(meta: dict[str, Any], array: np.ndarray) -> float:
    """Value for pixels a resampling step brings in from outside the image."""
    padding = meta.get("padding")
    if padding is not None:
        return float(padding["value"])
    return float(array.min())


def _untilt(array: np.ndarray, shifts: np.ndarray, fill: float,
            pad: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))) -> np.ndarray:
    """Move each slice in plane by ``shifts`` pixels (onto a grid widened by ``pad`` rows and
    columns before and after) so that the stack stands straight; outside is ``fill``."""
    from scipy import ndimage

    rows, columns = array.shape[1] + sum(pad[0]), array.shape[2] + sum(pad[1])
    out = np.empty((array.shape[0], rows, columns), dtype=np.float32)
    for k in range(array.shape[0]):
        wide = np.full((rows, columns), fill, dtype=np.float32)
        wide[:array.shape[1], :array.shape[2]] = array[k]
        ndimage.shift(wide, shifts[k], output=out[k], order=UNTILT_ORDER, mode="constant",
                      cval=fill)
    return _like(out, array.dtype)


def _regrid(array: np.ndarray, positions: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation between neighbouring slices onto the uniform ``grid`` positions."""
    upper = np.clip(np.searchsorted(positions, grid, side="left"), 1, len(positions) - 1)
    lower = upper - 1
    weight = (grid - positions[lower]) / (positions[upper] - positions[lower])
    weight = np.clip(weight, 0.0, 1.0)
    out = np.empty((len(grid),) + array.shape[1:], dtype=array.dtype)
    for k, (a, b, w) in enumerate(zip(lower, upper, weight)):
        if w < 1e-6:
            out[k] = array[a]
        elif w > 1 - 1e-6:
            out[k] = array[b]
        else:
            out[k] = _like((1 - w) * array[a].astype(np.float32) + w * array[b], array.dtype)
    return out
