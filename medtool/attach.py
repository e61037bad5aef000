"""Arrays without geometry get their image's: coursework and Kaggle masks (an ``.npz`` under
any key, a bare ``.npy``), or a NIfTI whose header is known to be wrong.

Each source is matched to its image by case id (the file name without its format suffix),
brought into medtool's ``(z, y, x)`` order (``axes``: the order the source's axes are in) and
flipped as asked (``flips``), checked against the image's shape and written with the image's
spacing, origin and direction. Integer arrays become ``uint8`` label volumes.

The orientation audit (:func:`audit`) compares how well the mask fits its image as attached
and flipped or transposed: a label that follows anatomy covers a homogeneous region of the
image, and the image changes sharply across its border. When another orientation fits
markedly better (:data:`AUDIT_RATIO`), that is a ``warning:`` line naming it, because a
flipped mask passes every other check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError, UsageError, check_choice
from .volume import Volume

#: medtool's axis order.
AXES = "zyx"
#: A differently oriented mask whose fit is at least this many times the attached one's is
#: reported.
AUDIT_RATIO = 1.5
#: The audit works on at most about this many voxels (the volumes are strided down).
AUDIT_VOXELS = 8_000_000
#: Labels with fewer voxels than this (after striding) are not judged.
AUDIT_MIN_VOXELS = 50


def read_array(path: str | os.PathLike, *, key: str | None = None) -> np.ndarray:
    """The array of ``path``: an ``.npz`` entry (``key``, or its only entry), an ``.npy``, or
    the data of a NIfTI in medtool's axis order with its header ignored.

    Raises
    ------
    InputError
        Unreadable, no such key, several keys and none named.
    """
    from .errors import reason
    from .files import volume_suffix

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    suffix = volume_suffix(path)
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.files)
                if key is None and len(keys) != 1:
                    raise InputError(f"the .npz holds {len(keys)} arrays ({', '.join(keys[:8])})", path=path,
                                     hint="name the one to attach with --key")
                if key is not None and key not in keys:
                    raise InputError(f"no entry {key!r} in the .npz; it holds {', '.join(keys[:8])}",
                                     path=path, hint="name one of them with --key")
                return np.asarray(data[key or keys[0]])
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            return np.asarray(nib.load(path).dataobj).T       # (x, y, z) -> (z, y, x)
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read it ({reason(exc, typed=False)})", path=path,
                         hint="the file is truncated or not in this format") from exc
    raise InputError("not an array file", path=path, hint="attach reads .npz, .npy, .nii and .nii.gz")


def orient(array: np.ndarray, *, axes: str = AXES, flips: Sequence[str] = ()) -> np.ndarray:
    """``array`` (its axes in the order ``axes``, e.g. ``xyz``; 2D: ``yx``) in medtool's order,
    then flipped along each axis named in ``flips``.

    Raises
    ------
    UsageError
        ``axes`` is not an order of the array's axes, or a flip names an axis it does not have.
    """
    names = AXES[-array.ndim:]
    if sorted(axes) != sorted(names) or len(axes) != array.ndim:
        raise UsageError(f"--axes {axes}: give the order of the array's {array.ndim} axes as a "
                         f"permutation of {names}")
    oriented = np.transpose(array, [axes.index(a) for a in names])
    for axis in flips:
        if axis not in names:
            raise UsageError(f"--flip {axis}: the array's axes are {', '.join(names)}")
        oriented = np.flip(oriented, names.index(axis))
    return oriented


def fit(image: np.ndarray, labels: np.ndarray) -> float:
    """How well ``labels`` follow ``image``: per label, the contrast across its border (mean of
    the image on the label's inner shell minus that on the outer shell) over the spread of
    the image inside it and just outside; weighted by label size. 0 when nothing is judged."""
    from scipy import ndimage

    values = np.asarray(image, dtype=np.float32)
    scores, weights = [], []
    present = np.flatnonzero(np.bincount(labels.ravel().astype(np.int64)))
    for value in present[present > 0]:                 # labels: a handful per volume
        mask = labels == value
        count = int(mask.sum())
        if count < AUDIT_MIN_VOXELS:
            continue
        inner = mask & ~ndimage.binary_erosion(mask)
        outer = ndimage.binary_dilation(mask) & ~mask
        if inner.sum() < AUDIT_MIN_VOXELS // 5 or outer.sum() < AUDIT_MIN_VOXELS // 5:
            continue
        contrast = abs(float(values[inner].mean()) - float(values[outer].mean()))
        spread = float(values[mask].std()) + float(values[outer].std())
        scores.append(contrast / max(spread, 1e-6))
        weights.append(count)
    return float(np.average(scores, weights=weights)) if scores else 0.0


def _strided(array: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil((array.size / AUDIT_VOXELS) ** (1.0 / array.ndim))))
    return array[(slice(None, None, step),) * array.ndim]


def audit(image: np.ndarray, labels: np.ndarray) -> tuple[float, list[tuple[str, float]]]:
    """The fit of ``labels`` as attached and of each other orientation that fits at least
    :data:`AUDIT_RATIO` times better (flips along each axis, and for square slices the
    in-plane transpose), best first: ``(fit, [(what, fit), ...])``."""
    image, labels = _strided(np.asarray(image)), _strided(np.asarray(labels))
    names = AXES[-labels.ndim:]
    here = fit(image, labels)
    others: list[tuple[str, float]] = []
    for axis, name in enumerate(names):
        if labels.shape[axis] > 1:
            others.append((f"flipped along {name}", fit(image, np.flip(labels, axis))))
    if labels.shape[-1] == labels.shape[-2]:
        others.append(("with rows and columns swapped (y <-> x)", fit(image, np.swapaxes(labels, -1, -2))))
    better = sorted(((what, score) for what, score in others if score >= AUDIT_RATIO * max(here, 1e-6)
                     and score > 0), key=lambda item: -item[1])
    return here, better


def attach(array: np.ndarray, image: Volume, *, axes: str = AXES, flips: Sequence[str] = (),
           source: str = "") -> tuple[Volume, str | None]:
    """``array`` on ``image``'s grid, and the audit's warning (or ``None``).

    Raises
    ------
    InputError
        The shapes differ (the message says whether another axis order would fit).
    """
    oriented = orient(array, axes=axes, flips=flips)
    if oriented.shape != image.shape:
        hint = "give the array of this image's case"
        if sorted(oriented.shape) == sorted(image.shape):
            hint = "its axes are in another order: say which with --axes (e.g. --axes xyz)"
        raise InputError(f"shape {list(oriented.shape)} is not the image's {list(image.shape)}",
                         path=source or None, hint=hint)
    labels = oriented
    if oriented.dtype.kind in "iub" and oriented.size and 0 <= oriented.min() and oriented.max() <= 255:
        labels = oriented.astype(np.uint8)
    meta: dict[str, Any] = {"units": "label"} if labels.dtype == np.uint8 else {}
    meta["attached"] = {"source": str(source), "axes": axes, "flips": list(flips)}
    for key in ("case_id", "source_series"):
        if key in image.meta:
            meta[key] = image.meta[key]
    volume = Volume(np.ascontiguousarray(labels), image.spacing, image.origin, image.direction.copy(),
                    meta, [])
    warning = None
    if labels.dtype == np.uint8 and labels.any():
        here, better = audit(np.asarray(image.array), labels)
        if better:
            what, score = better[0]
            warning = (f"the mask fits the image better {what} (fit {score:.2f} against {here:.2f} as "
                       f"attached): check the orientation (--flip, --axes)")
    return volume, warning


@dataclass
class AttachJob:
    """One source array, its image and where the result goes."""

    source: Path
    image: Path
    output: Path
    key: str | None
    axes: str
    flips: tuple[str, ...]
    force: bool
    step: dict[str, Any] = field(default_factory=dict)


def attach_one(job: AttachJob) -> dict[str, Any]:
    """Run one :class:`AttachJob`; the written row (with the audit's warning, if any)."""
    from .files import check_writable
    from .formats import load_volume, save_volume
    from .ingest import written_row

    check_writable(job.output, force=job.force)
    image = load_volume(job.image, mmap=True)
    volume, warning = attach(read_array(job.source, key=job.key), image, axes=job.axes, flips=job.flips,
                             source=str(job.source))
    volume.history = [*image.history, {**job.step, "attached_to": str(job.image)}]
    save_volume(volume, job.output, force=job.force)
    row = written_row(volume, job.output, series=str(job.source), files=1)
    if warning:
        row["warning"] = warning
    return row


def plan(sources: Sequence[str | os.PathLike], like: str | os.PathLike, out: str | os.PathLike, *,
         fmt: str | None = None, suffix: str = "") -> list[tuple[Path, Path, Path]]:
    """``(source, image, output)`` for every source array: the image of the same case id in
    ``like`` (a folder of volumes, or one volume), the output ``OUT/<case><suffix>.<format>``
    (the image's format unless ``fmt``), or ``out`` itself when it names one file.

    Raises
    ------
    InputError
        A source without an image of its case, or no sources.
    """
    from .files import VOLUME_SUFFIXES, find_files, strip_suffix, volume_suffix
    from .ingest import FORMATS

    if fmt is not None:
        check_choice("--format", fmt, FORMATS)
    arrays = [p for p in find_files(sources, suffixes=VOLUME_SUFFIXES) if p.suffix != ".json"]
    if not arrays:
        raise InputError("no array files", path=" ".join(map(str, sources)),
                         hint="give .npz, .npy, .nii or .nii.gz files or folders holding them")
    like = Path(like)
    images = {strip_suffix(p): p for p in find_files([like])} if like.is_dir() else {None: like}
    out = Path(out)
    single = out.name.lower().endswith(tuple(VOLUME_SUFFIXES))
    if single and len(arrays) > 1:
        raise UsageError(f"{out} names one file, but there are {len(arrays)} arrays", hint="give an output folder")
    planned = []
    for source in arrays:
        case = strip_suffix(source)
        image = images.get(None if None in images else case)
        if image is None:
            raise InputError(f"no image of case {case} in {like}", path=source,
                             hint="name the arrays as their images (case id = file name without suffix)")
        ending = f".{fmt}" if fmt else volume_suffix(image)
        planned.append((source, image, out if single else out / f"{case}{suffix}{ending}"))
    return planned


def attach_files(sources: Sequence[str | os.PathLike], like: str | os.PathLike, out: str | os.PathLike, *,
                 key: str | None = None, axes: str = AXES, flips: Sequence[str] = (), fmt: str | None = None,
                 suffix: str = "", force: bool = False, workers: int = 1, step: dict[str, Any] | None = None,
                 progress: bool = False, on_error: Callable | None = None):
    """Attach every source (see :func:`plan`); the batch outcome (rows, failures)."""
    from .batch import run_batch

    orient(np.zeros((1,) * len(axes)), axes=axes, flips=flips)     # options checked before any work
    jobs = [AttachJob(s, i, o, key, axes, tuple(flips), force, step or {})
            for s, i, o in plan(sources, like, out, fmt=fmt, suffix=suffix)]
    return run_batch(attach_one, jobs, workers=workers, description="attaching", progress=progress,
                     on_error=on_error, name=lambda job: str(job.source))
