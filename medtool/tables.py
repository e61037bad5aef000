"""CSV tables with the case id first: reading with row numbers for errors, writing atomically."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import InputError
from .files import atomic_write_text

#: Name of the case id column in medtool's own tables.
CASE_ID = "case_id"


@dataclass
class Table:
    """A CSV file read into memory.

    ``rows[i]`` maps column names to the stripped text of data row ``i``, which is line
    ``lines[i]`` of the file (for error messages).
    """

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    lines: list[int]

    def column(self, name: str, *, purpose: str = "") -> list[str]:
        """The values of column ``name``; a clear error when the file has no such column."""
        if name not in self.columns:
            raise InputError(
                f"no column {name!r}{f' ({purpose})' if purpose else ''}; the columns are "
                f"{', '.join(self.columns)}", path=self.path, hint="name one of them")
        return [row[name] for row in self.rows]

    def where(self, index: int) -> str:
        """``"<file>, line N"`` for data row ``index``."""
        return f"line {self.lines[index]}"

    def error(self, index: int, what: str, hint: str) -> InputError:
        """An :class:`InputError` about data row ``index``."""
        return InputError(f"{self.where(index)}: {what}", path=self.path, hint=hint)


def repeated(ids: Iterable[str]) -> list[str]:
    """The ids that occur more than once, sorted (one pass: RSNA's 26,684 image ids included)."""
    from collections import Counter

    return sorted(i for i, n in Counter(ids).items() if n > 1)


def read_table(path: str | os.PathLike, *, required: Sequence[str] = ()) -> Table:
    """Read a CSV file with a header row; ``required`` columns must be present.

    Raises
    ------
    InputError
        The file is missing, empty, not text, has rows longer than the header, or lacks a
        required column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the table ({exc})", path=path,
                         hint="give a UTF-8 CSV file") from exc
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("empty file", path=path, hint="a CSV table with a header row is needed") from None
    columns = [name.strip() for name in header]
    if len(set(columns)) != len(columns) or "" in columns:
        raise InputError(f"the header has empty or repeated column names ({', '.join(columns)})",
                         path=path, hint="give every column a unique name")
    rows, lines = [], []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(columns):
            raise InputError(f"line {reader.line_num}: {len(values)} values for {len(columns)} columns",
                             path=path, hint="quote values that contain commas")
        values = [v.strip() for v in values] + [""] * (len(columns) - len(values))
        rows.append(dict(zip(columns, values)))
        lines.append(reader.line_num)
    table = Table(path, columns, rows, lines)
    for name in required:
        table.column(name)
    return table


def format_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """CSV text with a header; missing values are empty, floats keep full precision."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[dict[str, Any]],
              *, force: bool = False) -> None:
    """Write a CSV table atomically (an existing file needs ``force``)."""
    atomic_write_text(path, format_csv(columns, rows), force=force)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if value == value else "nan"
    return value


def upsert_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[dict[str, Any]],
               *, key: str = CASE_ID) -> None:
    """Add ``rows`` to the CSV index at ``path``, replacing rows with the same ``key``.

    Several processes may update one index at once (``make -j`` converting case by case into
    one folder): an exclusive lock on the folder itself orders them (no lock file is left),
    and the file is rewritten atomically, unless it holds these rows already (a rerun: a
    rename over a file makes ext4 write it out at once). Rows are kept sorted by ``key``.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            kept: dict[str, dict[str, Any]] = {}
            if path.is_file():
                existing = read_table(path)
                if key in existing.columns:
                    kept = {row[key]: row for row in existing.rows}
            for row in rows:
                kept[str(row[key])] = row
            text = format_csv(columns, [kept[k] for k in sorted(kept)])
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                atomic_write_text(path, text, force=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        os.close(lock)


def join_cases(table: Table, *, id_column: str, cases: str | os.PathLike) -> Table:
    """``table`` keyed by ``id_column`` (e.g. PatientID) turned into one row per case of the
    ``cases.csv`` index that has that value (a patient with two scans gives two rows); the
    rows get a ``case_id`` column first and keep every other column.

    Raises
    ------
    InputError
        The index lacks the column, or a value of ``table`` matches no case (named).
    """
    index = read_table(cases, required=(CASE_ID,))
    keys = index.column(id_column, purpose=f"to join {table.path.name} by --id-column")
    wanted = table.column(id_column, purpose="the id to join by; see --id-column")
    by_key: dict[str, list[str]] = {}
    for case, key in zip(index.column(CASE_ID), keys):
        by_key.setdefault(key, []).append(case)
    unmatched = sorted({key for key in wanted if key not in by_key})
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise InputError(f"{len(unmatched)} {id_column} value(s) match no case of {index.path} "
                         f"({shown})", path=table.path,
                         hint="convert those series too, or leave their rows out")
    rows, lines = [], []
    for row, line in zip(table.rows, table.lines):
        for case in by_key[row[id_column]]:
            rows.append({CASE_ID: case, **{k: v for k, v in row.items() if k != CASE_ID}})
            lines.append(line)
    columns = [CASE_ID, *[c for c in table.columns if c != CASE_ID]]
    return Table(table.path, columns, rows, lines)
