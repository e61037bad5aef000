"""Leakage-free cross-validation folds: stratified, grouped, both, with a held-out test split.

Groups (patients) are assigned whole, so no group is in two folds. The assignment is greedy
and deterministic for a seed: groups are shuffled by the seed, then taken largest first, each
into the fold where it brings the per-class counts closest to their targets (sum of squared
deviations; ties go to the fold with fewest cases, then the lowest fold). Without grouping
every case is its own group, and the per-class counts of the folds then differ by at most one
(what StratifiedKFold gives). A test split is taken first the same way, with targets
``FRAC`` and ``1 - FRAC``, so it is grouped and stratified too; the folds split the rest.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, UsageError
from .files import VOLUME_SUFFIXES, find_files, strip_suffix
from .tables import CASE_ID, join_cases, read_table

#: Fold name of the held-out test cases.
TEST = "test"
#: nnU-Net v2's split file (it reads it from its preprocessed folder).
NNUNET_SPLITS = "splits_final.json"
#: Name of the single class when nothing is stratified.
ALL = "all"


#: File-name endings of files medtool derives from a case's image (lungmask --apply): in a
#: folder they belong to that case, not to a case of their own.
DERIVED_SUFFIXES = ("_masked",)


@dataclass
class Cases:
    """Case ids with their optional stratification label and group, in input order;
    ``merged``: how many rows (or files) were taken into a case listed before them."""

    ids: list[str]
    labels: list[str] | None = None
    groups: list[str] | None = None
    source: str = ""
    merged: int = 0


@dataclass
class Split:
    """The fold of every case: ``folds[case_id]`` is ``0..k-1`` or ``"test"``."""

    cases: Cases
    k: int
    folds: dict[str, int | str] = field(default_factory=dict)

    def fold_names(self) -> list[int | str]:
        names: list[int | str] = list(range(self.k))
        return names + [TEST] if TEST in self.folds.values() else names

    def members(self, fold: int | str) -> list[str]:
        return [case for case in self.cases.ids if self.folds[case] == fold]

    def nnunet(self) -> list[dict[str, list[str]]]:
        """nnU-Net's ``splits_final.json`` (:func:`nnunet_splits`)."""
        return nnunet_splits(self.folds, self.cases.ids)

    def balance(self) -> list[dict]:
        """Per fold: number of cases, of groups, and of cases per class."""
        classes = sorted(set(self.cases.labels)) if self.cases.labels else []
        label = dict(zip(self.cases.ids, self.cases.labels or [ALL] * len(self.cases.ids)))
        group = dict(zip(self.cases.ids, self.cases.groups or self.cases.ids))
        rows = []
        for fold in self.fold_names():
            members = self.members(fold)
            counts = Counter(label[c] for c in members)
            rows.append({"fold": fold, "cases": len(members),
                         "groups": len({group[c] for c in members}),
                         "classes": {c: counts.get(c, 0) for c in classes}})
        return rows


def read_cases(source: str | os.PathLike, *, stratify: str | None = None,
               group: str | None = None, bins: int | None = None,
               id_column: str | None = None, cases: str | os.PathLike | None = None,
               image_suffix: str | None = None) -> Cases:
    """Read the cases from a CSV (case id first, a ``case_id`` column, or ``id_column``) or a
    folder.

    A table may hold several rows per case (the RSNA box table: one row per box): they are one
    case, whose ``stratify`` label is the rows' label when they agree and, for 0/1 labels, 1
    when any row is 1 (a case with a box is positive); other disagreements, and rows of a case
    in two groups, are errors naming the lines.

    A folder gives one case per volume file (the id is the file name without its suffix, and
    without :data:`DERIVED_SUFFIXES` or ``image_suffix``: ``case_masked.npy`` is case ``case``)
    or, when it holds no volume files, one case per sub-folder (DICOM series). A numeric
    ``stratify`` column is cut into ``bins`` quantile bins when ``bins`` is given. With
    ``cases`` (a ``cases.csv`` index of dicom2npy) the CSV is keyed by ``id_column`` (e.g.
    PatientID): each row stands for every case with that value, and the cases are grouped by
    it unless ``group`` names another column.
    """
    path = Path(source)
    if path.is_dir():
        if stratify or group:
            raise UsageError(f"{path} is a folder, which has no {stratify or group!r} column",
                             hint="give a CSV table of the cases to stratify or group by a column")
        ids, merged = _folder_cases(path, image_suffix=image_suffix)
        return Cases(ids, source=str(path), merged=merged)
    table = read_table(path)
    if cases is not None:
        if id_column is None:
            raise UsageError("--cases needs --id-column COL: the column of the labels that "
                             "cases.csv also has", hint="e.g. --id-column PatientID")
        table = join_cases(table, id_column=id_column, cases=cases)
        group = group or id_column
        id_column = CASE_ID
    elif id_column is None:
        id_column = CASE_ID if CASE_ID in table.columns else table.columns[0]
    ids = table.column(id_column, purpose="the case id; see --id-column")
    rows: dict[str, list[int]] = {}
    for i, case in enumerate(ids):
        if not case:
            raise table.error(i, "empty case id", "every row needs a case id")
        rows.setdefault(case, []).append(i)
    first = [index[0] for index in rows.values()]
    labels = groups = None
    if stratify:
        labels = _per_case(table, _required(table, stratify, "to stratify by"), rows, stratify, any_positive=True)
        if bins:
            labels = _quantile_bins(table, labels, bins, stratify)
    elif bins:
        raise UsageError("--bins needs --stratify COLUMN", hint="name the numeric column to bin")
    if group:
        groups = _per_case(table, _required(table, group, "to group by"), rows, group, any_positive=False)
    return Cases([ids[i] for i in first], labels, groups, source=str(path), merged=len(ids) - len(first))


def _per_case(table, values: list[str], rows: dict[str, list[int]], column: str, *,
              any_positive: bool) -> list[str]:
    """One value of ``column`` per case from its rows: the rows agree, or (``any_positive``,
    0/1 values) the case is 1 when any row is."""
    out = []
    for case, index in rows.items():
        seen = {values[i] for i in index}
        if len(seen) == 1:
            out.append(values[index[0]])
        elif any_positive and seen <= {"0", "1"}:
            out.append("1")
        else:
            lines = ", ".join(str(table.lines[i]) for i in index[:4])
            raise table.error(index[-1], f"case {case} has {len(seen)} values in column {column!r} "
                              f"({', '.join(sorted(seen)[:4])}; lines {lines})",
                              "give each case one value (0/1 labels: any 1 makes the case 1)")
    return out


def _required(table, column: str, purpose: str) -> list[str]:
    values = table.column(column, purpose=purpose)
    for i, value in enumerate(values):
        if value == "":
            raise table.error(i, f"no value in column {column!r}", "fill it in or leave the case out")
    return values


def _quantile_bins(table, values: list[str], bins: int, column: str) -> list[str]:
    try:
        numbers = np.array(values, dtype=float)
    except ValueError:
        raise InputError(f"column {column!r} is not numeric", path=table.path,
                         hint="--bins cuts a numeric column into quantile bins; drop --bins for classes") from None
    edges = np.unique(np.quantile(numbers, np.linspace(0, 1, bins + 1)[1:-1]))
    index = np.searchsorted(edges, numbers, side="right")
    bounds = np.r_[-np.inf, edges, np.inf]
    return [f"[{bounds[i]:.4g}, {bounds[i + 1]:.4g})" for i in index]


def case_of_file(stem: str, *, image_suffix: str | None = None) -> str:
    """The case a volume file belongs to: its name without ``image_suffix`` or one of
    :data:`DERIVED_SUFFIXES` at its end."""
    for suffix in ((image_suffix,) if image_suffix else ()) + DERIVED_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _case_of_path(path: Path, root: Path, *, image_suffix: str | None = None) -> str:
    """The case of a volume file under ``root``: in a case folder (BraTS: ``<case>/<case>_flair``,
    ``<case>_seg``, ...) the folder, whose name its files start with; else :func:`case_of_file`."""
    stem = strip_suffix(path)
    parent = path.parent
    if parent != root and stem.startswith(parent.name + "_"):
        return parent.name
    return case_of_file(stem, image_suffix=image_suffix)


def _folder_cases(folder: Path, *, image_suffix: str | None = None) -> tuple[list[str], int]:
    from .layouts import DATASET_JSON, read_layout

    if (folder / DATASET_JSON).is_file():           # a Decathlon or nnU-Net dataset: its training cases
        return [case.case_id for case in read_layout(folder).cases], 0
    volumes = find_files([folder], suffixes=VOLUME_SUFFIXES)
    if volumes:
        stems = [strip_suffix(p) for p in volumes]
        repeated = sorted(k for k, n in Counter(stems).items() if n > 1)
        if repeated:
            raise InputError(f"case ids {', '.join(repeated[:5])} name several files", path=folder,
                             hint="keep one volume per case in the folder, or give a CSV")
        ids = list(dict.fromkeys(_case_of_path(path, folder, image_suffix=image_suffix) for path in volumes))
        return ids, len(stems) - len(ids)
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise InputError("no volume files and no case sub-folders", path=folder,
                         hint="give a folder of volumes, of DICOM case folders, or a CSV")
    return subfolders, 0


def make_folds(cases: Cases, *, k: int = 5, seed: int = 42, test: float = 0.0) -> Split:
    """Assign every case to one of ``k`` folds or to the test split.

    Raises
    ------
    UsageError
        ``k`` < 2, ``test`` outside [0, 1), more folds than groups, a class with fewer members
        than it needs under stratification, or a test split that comes out empty.
    """
    if k < 2:
        raise UsageError(f"--k {k}: cross-validation needs at least 2 folds", hint="use --k 2 or more")
    if not 0 <= test < 1:
        raise UsageError(f"--test {test}: the test fraction must be in [0, 1)", hint="e.g. --test 0.2")
    n = len(cases.ids)
    labels = np.array(cases.labels if cases.labels is not None else [ALL] * n)
    groups = np.array(cases.groups if cases.groups is not None else cases.ids)
    rng = np.random.default_rng(seed)
    order = np.argsort(np.array(cases.ids), kind="stable")     # independent of the row order
    labels, groups, ids = labels[order], groups[order], [cases.ids[i] for i in order]
    grouped = cases.groups is not None
    stratified = cases.labels is not None
    _check_feasible(labels, groups, k + (test > 0), stratified=stratified, grouped=grouped,
                    what=f"{k} folds" + (" and a test split" if test > 0 else ""),
                    hint="lower --k" + (" or drop --test" if test > 0 else ""), extra=int(test > 0))
    folds: dict[str, int | str] = {}
    rest = np.arange(n)
    if test > 0:
        part = assign(labels, groups, np.array([test, 1 - test]), rng)
        chosen = part == 0
        if not chosen.any():
            raise UsageError(f"--test {test} selects no case of {n}", hint="raise --test")
        folds.update({ids[i]: TEST for i in np.flatnonzero(chosen)})
        rest = np.flatnonzero(~chosen)
        _check_feasible(labels[rest], groups[rest], k, stratified=stratified, grouped=grouped,
                        what=f"{k} folds of the cases left after the test split",
                        hint="lower --k or --test")
    part = assign(labels[rest], groups[rest], np.full(k, 1.0 / k), rng)
    folds.update({ids[i]: int(f) for i, f in zip(rest, part)})
    return Split(cases, k, {case: folds[case] for case in cases.ids})


def _check_feasible(labels, groups, parts: int, *, stratified: bool, grouped: bool,
                    what: str, hint: str, extra: int = 0) -> None:
    n_groups = len(set(groups.tolist()))
    unit = "groups" if grouped else "cases"
    if n_groups < parts:
        raise UsageError(f"{what} need at least {parts} {unit}, there are {n_groups}",
                         hint=f"{hint} (--k {n_groups - extra} at most)" if n_groups - extra >= 2
                         else f"there are too few {unit} to cross-validate")
    if stratified:
        counts = Counter(labels.tolist())
        rare = sorted((n, c) for c, n in counts.items() if n < parts)
        if rare:
            n, name = rare[0]
            raise UsageError(
                f"class {name!r} has {n} case{'s' * (n != 1)}, fewer than the {parts} parts of "
                f"{what} it must be stratified over",
                hint=(f"{hint}, " if n - extra >= 2 else "")
                + "merge rare classes (or --bins fewer), or drop --stratify")


def assign(labels: np.ndarray, groups: np.ndarray, weights: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
    """Assign whole groups to parts of relative size ``weights``, balancing classes.

    Returns the part index of every case.
    """
    classes, label_index = np.unique(labels, return_inverse=True)
    names, group_index = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (group_index, label_index), 1)
    targets = weights[:, None] / weights.sum() * counts.sum(axis=0)[None, :]   # (parts, classes)
    shuffled = rng.permutation(len(names))
    sizes = counts.sum(axis=1)
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]            # largest first
    have = np.zeros_like(targets)
    part_of_group = np.empty(len(names), dtype=np.intp)
    for g in order:
        # change of the squared deviation from the targets if group g joins each part
        cost = np.sum((have + counts[g] - targets) ** 2 - (have - targets) ** 2, axis=1)
        fill = have.sum(axis=1) / weights            # cases per unit of weight
        best = np.lexsort((np.arange(len(weights)), fill, np.round(cost, 9)))[0]
        part_of_group[g] = best
        have[best] += counts[g]
    return part_of_group[group_index]


def nnunet_splits(folds: dict[str, int | str], case_ids: Sequence[str]) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` from a medtool folds table: for each numbered fold K,
    ``{"train": the other numbered folds' cases, "val": fold K's}``; the ``test`` fold is in
    neither (nnU-Net's test images belong in imagesTs).

    Raises
    ------
    InputError
        A case is not in the folds table.
    """
    missing = [c for c in case_ids if c not in folds]
    if missing:
        raise InputError(f"{len(missing)} cases are not in the folds table ({', '.join(missing[:3])})",
                         hint="make the folds from the same images: medtool folds")
    chosen = [c for c in case_ids if isinstance(folds[c], int)]
    numbers = sorted({folds[c] for c in chosen})
    return [{"train": sorted(c for c in chosen if folds[c] != k), "val": sorted(c for c in chosen if folds[c] == k)}
            for k in numbers]
