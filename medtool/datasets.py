"""Training data for segmentation: cases matched by id, a preprocessed cache, patch sampling.

Cases come from an image folder and a mask folder matched by case id (any volume format), or
from a CSV ``case_id,image,mask``; a folds CSV ``case_id,fold`` picks the validation fold.
:func:`preprocess_case` brings each case into the model's space once (resampled to the
recipe's spacing, intensities normalised, masks merged into one label map) and writes it to the
run's cache as ``.npy`` volumes, which training then memory-maps (:func:`~medtool.formats.load_volume`
with ``mmap=True``), so the data set never has to fit in memory. Each cached case also stores up
to :data:`MAX_LOCATIONS` voxel positions per foreground class, so foreground patches are drawn
without scanning the mask.

:class:`PatchDataset` draws one random patch per item: 3D patches ``(pz, py, px)`` or 2D slices
(patch ``(1, py, px)``); with probability ``pos_ratio`` the patch is centred (with jitter) on a
voxel of a foreground class chosen uniformly among those present, otherwise anywhere. The draw
depends only on ``(seed, epoch, index)``, so a run is reproducible whatever the number of
loader workers or processes.

Lesion copy-paste (TumorCP, Yang et al. 2021; :class:`Paste`): each cached case also lists its
foreground objects (:func:`objects`: the bounding box of each connected component of each
class). With probability ``Paste.probability`` a patch receives one object, chosen uniformly
among the objects of all training cases, zoomed and flipped at random, at a random place where
it overwrites no other foreground and where at least half of it lands on intensities in
``Paste.into``; only those voxels take the object's intensities and label.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import InputError, UsageError
from .files import find_files, strip_suffix
from .tables import repeated

if TYPE_CHECKING:
    from .channels import InputChannels

#: Foreground positions kept per class and case for foreground sampling.
MAX_LOCATIONS = 10_000
#: Objects smaller than this (voxels) are not pasted.
MIN_PASTE_VOXELS = 8
#: Places tried for a pasted object before the patch is left as it is.
PASTE_TRIES = 10
#: Share of a pasted object that must land on intensities in ``Paste.into``.
PASTE_INSIDE = 0.5


@dataclass
class Case:
    """One training case: its id, image file, mask file(s) (merged in order) and the files of
    its other input channels (:mod:`medtool.channels`; ``image`` is the first channel's)."""

    case_id: str
    image: Path
    masks: list[Path] = field(default_factory=list)
    extra: list[Path] = field(default_factory=list)

    @property
    def inputs(self) -> list[Path]:
        """Every input file of the case, the first channel's first."""
        return [self.image, *self.extra]


def match_cases(images: str | os.PathLike, masks: str | os.PathLike,
                mask_suffixes: Sequence[str] = ("",), *, image_suffix: str = "",
                channels: "InputChannels | None" = None) -> list[Case]:
    """Pair the volumes under ``images`` with masks under ``masks`` by case id.

    The case id of an image is its file name without the volume suffix (and without
    ``image_suffix``: with ``_flair``, ``BraTS_001_flair.nii.gz`` is case ``BraTS_001`` and files
    not named so, the other channels and the masks of the same folder, are not images). For every suffix in
    ``mask_suffixes`` the mask ``<case_id><suffix>.<any volume format>`` must exist; several
    suffixes (``_lungs``, ``_tumour``) are merged into one label map, later ones on top with
    their labels shifted past the earlier ones. With ``channels`` (several input channels, one
    file each) the images are the first channel's files and every case's other channels are
    found beside them (:meth:`~medtool.channels.InputChannels.files`).

    Raises
    ------
    InputError
        No images, or an image without one of its masks.
    """
    from .files import case_of_image

    if channels is not None and channels.suffixes:
        image_suffix = channels.suffixes[0]
    image_files = [p for p in find_files([images]) if p.exists() and case_of_image(p, image_suffix)]
    if not image_files:
        raise InputError("no volume files" + (f" named <case>{image_suffix}" if image_suffix else ""),
                         path=images, hint="give the folder of training images (or check --image-suffix)")
    mask_files = {strip_suffix(p): p for p in find_files([masks]) if p.exists()}
    cases = []
    for image in image_files:
        case_id = case_of_image(image, image_suffix)
        found = [mask_files.get(case_id + suffix) for suffix in mask_suffixes]
        if any(f is None for f in found):
            missing = [case_id + s for s, f in zip(mask_suffixes, found) if f is None]
            raise InputError(f"no mask {', '.join(missing)} for this image", path=image,
                             hint=f"put it in {masks} (or check --mask-suffix)")
        extra = channels.files(image)[1:] if channels is not None and channels.suffixes else []
        cases.append(Case(case_id, image, list(found), extra))
    ids = [c.case_id for c in cases]
    duplicates = repeated(ids)
    if duplicates:
        raise InputError(f"case ids found twice: {', '.join(duplicates[:5])}", path=images,
                         hint="keep one volume per case")
    return cases


def read_cases_csv(path: str | os.PathLike) -> list[Case]:
    """Cases from a CSV with columns ``case_id,image,mask`` (paths relative to the CSV;
    several masks separated by ``;``)."""
    path = Path(path)
    rows = _read_csv(path, ("case_id", "image", "mask"))
    return [Case(row["case_id"], path.parent / row["image"],
                 [path.parent / m for m in row["mask"].split(";") if m]) for row in rows]


def read_folds(path: str | os.PathLike) -> dict[str, int | str]:
    """``case_id -> fold`` from a folds CSV (``case_id,fold``, as ``medtool folds`` writes):
    a fold number, or :data:`~medtool.folds.TEST` for the held-out test cases."""
    from .folds import TEST

    path = Path(path)
    folds: dict[str, int | str] = {}
    for row in _read_csv(path, ("case_id", "fold")):
        value = row["fold"].strip()
        try:
            folds[row["case_id"]] = TEST if value == TEST else int(value)
        except ValueError:
            raise InputError(f"fold {row['fold']!r} of {row['case_id']} is neither a number nor {TEST!r}",
                             path=path, hint=f"folds are integers, or {TEST} for held-out cases") from None
    return folds


def numbered_folds(folds: dict[str, int | str]) -> list[int]:
    """The cross-validation folds of ``folds`` (the test cases are in none)."""
    return sorted({f for f in folds.values() if isinstance(f, int)})


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"no column {', '.join(missing)}", path=path,
                             hint=f"the CSV needs the columns {','.join(columns)}")
        return list(reader)


class SharedEpoch:
    """The epoch number of a training set, in shared memory: ``DataLoader`` worker processes
    (persistent ones too) hold copies of the data set, and an attribute set in the main process
    after they started would never reach them, so every epoch would draw epoch 0's samples."""

    def __init__(self, epoch: int = 0):
        import torch

        self._value = torch.full((1,), int(epoch), dtype=torch.int64).share_memory_()

    def get(self) -> int:
        return int(self._value[0])

    def set(self, epoch: int) -> None:
        self._value[0] = int(epoch)


class EpochSet:
    """A training set of ``length`` items per epoch whose draws depend on the epoch, which
    :meth:`set_epoch` keeps in a :class:`SharedEpoch` (set ``self._epoch`` and
    ``self.length``)."""

    _epoch: SharedEpoch
    length: int

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class Selection:
    """The cases a command is restricted to (``--folds F --fold K|test`` or ``--cases FILE``)."""

    ids: frozenset[str]
    what: str

    def describe(self, count: int | None = None) -> str:
        return f"{self.what}: {len(self.ids) if count is None else count} cases"


def read_selection(*, folds: str | os.PathLike | None = None, fold: str | int | None = None,
                   cases: str | os.PathLike | None = None) -> Selection | None:
    """The cases of fold ``fold`` (a number or ``test``) of a folds CSV, or the case ids of a
    table ``cases`` (its ``case_id`` column, else its first); ``None`` without either.

    Raises
    ------
    UsageError
        ``--fold`` without ``--folds`` (or the other way round), both ways at once, or a fold
        the CSV does not have.
    """
    from .folds import TEST
    from .tables import CASE_ID, read_table

    if folds is None and fold is None and cases is None:
        return None
    if cases is not None:
        if folds is not None or fold is not None:
            raise UsageError("give --cases FILE or --folds F --fold K, not both")
        table = read_table(cases)
        ids = table.column(CASE_ID if CASE_ID in table.columns else table.columns[0])
        return Selection(frozenset(i for i in ids if i), f"the cases of {cases}")
    if folds is None or fold is None:
        raise UsageError("--folds F and --fold K|test go together", hint="e.g. --folds folds.csv --fold test")
    table = read_folds(folds)
    wanted: int | str = TEST if str(fold).strip() == TEST else _fold_number(fold)
    ids = frozenset(c for c, f in table.items() if f == wanted)
    if not ids:
        names = [*numbered_folds(table)] + ([TEST] if TEST in table.values() else [])
        raise UsageError(f"--fold {fold}: {folds} has folds {', '.join(map(str, names))}")
    return Selection(ids, f"fold {wanted} of {folds}")


def _fold_number(fold) -> int:
    try:
        return int(fold)
    except ValueError:
        raise UsageError(f"--fold {fold!r} is neither a fold number nor test") from None


def select_files(inputs: Sequence[str | os.PathLike], selection: Selection | None, *,
                 suffixes: Sequence[str] | None, strip: str = "") -> list[Path]:
    """The input files (folders expanded, ``suffixes`` as :func:`~medtool.files.find_files`;
    with ``strip``, only those named ``<case><strip>``) whose case id (the name without its
    format suffix and ``strip``) is in ``selection``; all of them without one.

    Raises
    ------
    InputError
        No input file is one of the selected cases.
    """
    from .files import case_of_image, find_files

    files = [p for p in find_files(inputs, suffixes=suffixes) if p.suffix != ".json" and case_of_image(p, strip)]
    if selection is None:
        return files
    chosen = [p for p in files if case_of_image(p, strip) in selection.ids]
    if not chosen:
        raise InputError(f"none of the {len(files)} inputs is one of the {len(selection.ids)} "
                         f"selected cases ({selection.what})",
                         path=str(inputs[0]) if inputs else None,
                         hint="check that the case ids of the folds match the file names")
    return chosen


def split_cases(cases: list[Case], *, folds: dict[str, int | str] | None = None, fold: int | None = None,
                val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Training and validation cases: fold ``fold`` of ``folds`` validates, the other numbered
    folds train, the test cases (:data:`~medtool.folds.TEST`) do neither; without folds a
    seeded random ``val_fraction`` of the cases (none when there is one case).

    Raises
    ------
    UsageError
        ``fold`` without folds or not in them; cases missing from the folds CSV.
    """
    if folds is not None:
        if fold is None:
            raise UsageError("--folds needs --fold K (the fold to validate on)")
        missing = [c.case_id for c in cases if c.case_id not in folds]
        if missing:
            raise UsageError(f"{len(missing)} cases are not in the folds CSV ({', '.join(missing[:3])})",
                             hint="make the folds from the same cases")
        numbered = numbered_folds(folds)
        if fold not in numbered:
            raise UsageError(f"--fold {fold}: the folds CSV has folds {numbered}"
                             + (" (and held-out test cases, which are never trained on)"
                                if len(numbered) < len(set(folds.values())) else ""))
        train = [c for c in cases if folds[c.case_id] != fold and not isinstance(folds[c.case_id], str)]
        return train, [c for c in cases if folds[c.case_id] == fold]
    if fold is not None:
        raise UsageError("--fold needs --folds folds.csv")
    if len(cases) < 2 or val_fraction <= 0:
        return list(cases), []
    order = np.random.default_rng(seed).permutation(len(cases))
    count = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    val = {int(i) for i in order[:count]}
    return [c for i, c in enumerate(cases) if i not in val], [c for i, c in enumerate(cases) if i in val]


def merge_masks(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """One uint8 label map from several masks; each mask's labels are shifted past the ones
    before it and painted on top. Returns the map and the number of labels each mask brought."""
    merged = np.zeros(arrays[0].shape, dtype=np.uint8)
    offset, counts = 0, []
    for array in arrays:
        array = np.asarray(array)
        top = int(array.max()) if array.size else 0
        if array.min() < 0 or top > 255:
            raise ValueError(f"mask labels must be 0..255, got {int(array.min())}..{top}")
        where = array > 0
        merged[where] = (array[where] + offset).astype(np.uint8)
        counts.append(top)
        offset += top
    return merged, counts


def locations(labels: np.ndarray, classes: int, *, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Up to :data:`MAX_LOCATIONS` random voxel indices ``(n, ndim)`` of each class 1..classes-1."""
    found = {}
    flat = np.asarray(labels).ravel()
    for value in range(1, classes):
        index = np.flatnonzero(flat == value)
        if index.size == 0:
            continue
        if index.size > MAX_LOCATIONS:
            index = rng.choice(index, MAX_LOCATIONS, replace=False)
        found[value] = np.stack(np.unravel_index(index, labels.shape), axis=1).astype(np.int32)
    return found


def objects(labels: np.ndarray, classes: int) -> list[list[int]]:
    """The connected components (face-connected) of each class 1..classes-1, as
    ``[class, voxels, z0, y0, x0, z1, y1, x1]`` (bounding box, ends exclusive)."""
    from scipy import ndimage

    found = []
    labels = np.asarray(labels)
    for value in range(1, classes):
        components, count = ndimage.label(labels == value)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
        for size, box in zip(sizes, ndimage.find_objects(components)):
            found.append([value, int(size), *(s.start for s in box), *(s.stop for s in box)])
    return found


@dataclass(frozen=True)
class Paste:
    """Lesion copy-paste settings (see the module docstring).

    Attributes
    ----------
    probability
        Chance that a patch receives an object.
    scale
        Range of the object's zoom factor (one factor for all in-plane axes, and z in 3D).
    into
        Intensity range, in the cached (normalised) image's units, of the voxels an object may
        land on; ``None`` for anywhere.
    """

    probability: float
    scale: tuple[float, float] = (0.5, 1.0)
    into: tuple[float, float] | None = None


def crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], *, pad: float) -> np.ndarray:
    """``array[..., start:start+size]`` over the last ``len(size)`` axes, padded with ``pad``
    where the window leaves the array (start may be negative)."""
    lead = array.ndim - len(size)
    src, dst = [], []
    for axis, (s, n) in enumerate(zip(start, size)):
        length = array.shape[lead + axis]
        lo, hi = max(s, 0), min(s + n, length)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - s, lo - s + max(0, hi - lo)))
    out = np.full(array.shape[:lead] + tuple(size), pad, dtype=array.dtype)
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


def save_cached_image(path: str | os.PathLike, grid, array: np.ndarray) -> None:
    """Write a model-space image ``(C, z, y, x)`` to the cache as :func:`cached_image` reads it:
    one channel as a volume on ``grid`` (a :class:`~medtool.volume.Volume`), several as one 4D
    ``.npy`` array."""
    from .files import atomic_output
    from .formats import save_volume

    if len(array) == 1:
        save_volume(grid.with_array(array[0]), path, force=True)
        return
    with atomic_output(path, force=True) as temp:
        with open(temp, "wb") as handle:
            np.save(handle, array)


def cached_image(path: str | os.PathLike) -> np.ndarray:
    """A cached model-space image as ``(C, z, y, x)``, memory-mapped: one channel is kept as a
    3D volume file, several as one 4D ``.npy`` array."""
    array = np.load(path, mmap_mode="r")
    return array[None] if array.ndim == 3 else array


class PatchDataset(EpochSet):
    """Random patches from cached cases (a map-style torch dataset; see the module docstring).

    Parameters
    ----------
    cases
        Cached cases: dicts with ``image`` and ``mask`` (``.npy`` paths) and ``locations``
        (``.npz`` path).
    patch
        ``(pz, py, px)``; ``pz == 1`` with ``two_d`` gives ``(C, py, px)`` slices.
    length
        Items per epoch.
    paste
        Lesion copy-paste (objects come from the cases' ``objects`` entries); ``None`` for none.
    """

    def __init__(self, cases: list[dict[str, Any]], *, patch: Sequence[int], length: int,
                 pos_ratio: float = 0.33, seed: int = 0, two_d: bool = False, pad_value: float = 0.0,
                 paste: Paste | None = None):
        self.cases, self.patch, self.length = cases, tuple(int(p) for p in patch), int(length)
        self.pos_ratio, self.seed, self.two_d, self.pad_value = pos_ratio, seed, two_d, pad_value
        self.paste = paste if paste is not None and paste.probability > 0 else None
        self._epoch = SharedEpoch()
        self._open: dict[int, tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]] = {}
        self._bank = [(index, obj) for index, case in enumerate(cases)
                      for obj in case.get("objects", []) if obj[1] >= MIN_PASTE_VOXELS]

    def _case(self, index: int):
        if index not in self._open:
            from .formats import load_volume

            case = self.cases[index]
            image = cached_image(case["image"])
            mask = load_volume(case["mask"], mmap=True).array
            with np.load(case["locations"]) as data:
                where = {int(k.split("_")[1]): data[k] for k in data.files}
            self._open[index] = (image, mask, where)
        return self._open[index]

    def __getitem__(self, item: int):
        import torch

        rng = np.random.default_rng([self.seed, self.epoch, int(item)])
        index = int(item) % len(self.cases)
        image, mask, where = self._case(index)
        shape = mask.shape
        if where and rng.random() < self.pos_ratio:
            points = where[list(where)[rng.integers(len(where))]]
            centre = points[rng.integers(len(points))]
            jitter = [int(rng.integers(-(p // 2) + 1, p // 2 + 1)) if p > 1 else 0 for p in self.patch]
            start = [int(c) - p // 2 + j for c, p, j in zip(centre, self.patch, jitter)]
            # keep the window inside the volume where it fits
            start = [min(max(s, 0), max(n - p, 0)) if n >= p else s for s, n, p in zip(start, shape, self.patch)]
        else:
            start = [int(rng.integers(0, n - p + 1)) if n >= p else -int(rng.integers(0, p - n + 1))
                     for n, p in zip(shape, self.patch)]
        x = crop(image, start, self.patch, pad=self.pad_value)
        y = crop(mask, start, self.patch, pad=0)
        if self.paste is not None and self._bank and rng.random() < self.paste.probability:
            self._paste(x, y, rng)
        if self.two_d:
            x, y = x[:, 0], y[0]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))

    def _paste(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        """Paste one random object into the patch ``x`` (C, z, y, x) and its labels ``y``, in place."""
        from scipy import ndimage

        index, (value, _, *box) = self._bank[int(rng.integers(len(self._bank)))]
        image, mask, _ = self._case(index)
        low, high = box[:3], box[3:]
        if self.patch[0] == 1:      # a 2D patch takes one slice of the object
            z = int(rng.integers(low[0], high[0]))
            low, high = [z, *low[1:]], [z + 1, *high[1:]]
        region = tuple(slice(a, b) for a, b in zip(low, high))
        shape = (np.asarray(mask[region]) == value).astype(np.float32)
        values = np.asarray(image[(slice(None), *region)], dtype=np.float32)
        factor = rng.uniform(*self.paste.scale)
        zoom = [max(1, round(n * factor)) / n if p > 1 else 1.0 for n, p in zip(shape.shape, self.patch)]
        if any(z != 1 for z in zoom):
            shape = ndimage.zoom(shape, zoom, order=1)
            values = ndimage.zoom(values, [1.0, *zoom], order=1)
        flips = tuple(axis for axis, p in enumerate(self.patch) if p > 1 and rng.random() < 0.5)
        inside = np.flip(shape, flips) >= 0.5
        values = np.flip(values, tuple(a + 1 for a in flips))
        count = int(inside.sum())
        if count == 0 or any(n > p for n, p in zip(inside.shape, self.patch)):
            return
        room = [p - n + 1 for p, n in zip(self.patch, inside.shape)]
        for _ in range(PASTE_TRIES):
            start = [int(rng.integers(0, r)) for r in room]
            target = tuple(slice(s, s + n) for s, n in zip(start, inside.shape))
            labels, under = y[target], x[(slice(None), *target)]
            if labels[inside].any():
                continue        # never over other foreground
            land = inside
            if self.paste.into is not None:
                land = inside & (under[0] >= self.paste.into[0]) & (under[0] <= self.paste.into[1])
                if land.sum() < PASTE_INSIDE * count:
                    continue
            under[:, land] = values[:, land]
            labels[land] = value
            return
