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

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, UsageError
from .files import VOLUME_SUFFIXES, find_files, strip_suffix
from .tables import CASE_ID, join_cases, read_table

#: Fold name of the held-out test cases.
TEST = "test"
#: Name of the single class when nothing is stratified.
ALL = "all"


@dataclass
class Cases:
    """Case ids with their optional stratification label and group, in input order."""

    ids: list[str]
    labels: list[str] | None = None
    groups: list[str] | None = None
    source: str = ""


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
        """nnU-Net's ``splits_final.json``: per fold the training and validation case ids.

        Test cases are in neither (nnU-Net keeps them out of training, in imagesTs).
        """
        folds = [self.members(k) for k in range(self.k)]
        return [{"train": sorted(c for j, f in enumerate(folds) if j != k for c in f),
                 "val": sorted(folds[k])} for k in range(self.k)]

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
               id_column: str | None = None, cases: str | os.PathLike | None = None) -> Cases:
    """Read the cases from a CSV (case id first, a ``case_id`` column, or ``id_column``) or a
    folder.

    A folder gives one case per volume file (the id is the file name without its suffix) or,
    when it holds no volume files, one case per sub-folder (DICOM series). A numeric
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
        return Cases(_folder_cases(path), source=str(path))
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
    seen: dict[str, int] = {}
    for i, case in enumerate(ids):
        if not case:
            raise table.error(i, "empty case id", "every row needs a case id")
        if case in seen:
            raise table.error(i, f"case {case} appears again (first at line {table.lines[seen[case]]})",
                              "give each case once")
        seen[case] = i
    labels = groups = None
    if stratify:
        labels = _required(table, stratify, "to stratify by")
        if bins:
            labels = _quantile_bins(table, labels, bins, stratify)
    elif bins:
        raise UsageError("--bins needs --stratify COLUMN", hint="name the numeric column to bin")
    if group:
        groups = _required(table, group, "to group by")
    return Cases(ids, labels, groups, source=str(path))


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


def _folder_cases(folder: Path) -> list[str]:
    volumes = find_files([folder], suffixes=VOLUME_SUFFIXES)
    if volumes:
        ids = [strip_suffix(p) for p in volumes]
        repeated = sorted(k for k, n in Counter(ids).items() if n > 1)
        if repeated:
            raise InputError(f"case ids {', '.join(repeated[:5])} name several files", path=folder,
                             hint="keep one volume per case in the folder, or give a CSV")
        return ids
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise InputError("no volume files and no case sub-folders", path=folder,
                         hint="give a folder of volumes, of DICOM case folders, or a CSV")
    return subfolders


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
