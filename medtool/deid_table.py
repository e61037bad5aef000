"""The DICOM PS3.15 Annex E attribute table (Table E.1-1) and what it asks for each tag.

The table ships as data (``medtool/data/ps3.15_table_e1-1.csv``, its edition and source in the
file's header) and is read once per process. :class:`Profile` answers, for a tag and the
options in use, which action applies: ``D`` (dummy), ``Z`` (zero length), ``X`` (remove),
``K`` (keep), ``C`` (clean) or ``U`` (new UID), with the standard's compound actions resolved.

Resolving compound actions
--------------------------
The standard leaves ``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D`` and ``X/Z/U*`` to the implementation,
which must pick the alternative the attribute's type needs in the IOD at hand (Z for Type 2, D
for Type 1, X otherwise). medtool does not carry every IOD's module tables, so it takes the
alternative that keeps the file valid whatever the type: ``X/Z`` -> ``Z`` (never Type 1, so
empty is always allowed), ``X/D``, ``X/Z/D`` and ``Z/D`` -> ``D`` (a dummy value of the right
VR), ``X/Z/U*`` -> ``U`` (the sequence stays, its UIDs are replaced and its content is
de-identified like the rest). No alternative keeps any of the original value.

Options
-------
An option's column overrides the Basic Profile action where it has one. Where several options
name a tag, ``K`` (keep) wins over ``C`` (clean). ``C`` is carried out for dates and times
(shifted by the per-patient offset, see :mod:`medtool.anonymize`); for anything else (free
text, sequences) medtool cannot clean safely, so the Basic Profile action applies instead.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

#: Package data file with Table E.1-1.
TABLE_FILE = "ps3.15_table_e1-1.csv"
#: Option columns of the table -> (CID 7050 code value, code meaning).
OPTIONS: dict[str, tuple[str, str]] = {
    "safe_private": ("113111", "Retain Safe Private Option"),
    "uids": ("113110", "Retain UIDs Option"),
    "device": ("113109", "Retain Device Identity Option"),
    "institution": ("113112", "Retain Institution Identity Option"),
    "patient": ("113108", "Retain Patient Characteristics Option"),
    "full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean_desc": ("113105", "Clean Descriptors Option"),
    "clean_struct": ("113104", "Clean Structured Content Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
}
#: CID 7050 code of the profile itself.
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
#: Actions in the table.
SIMPLE_ACTIONS = ("D", "Z", "X", "K", "C", "U")
#: How medtool resolves each compound action (see the module docstring).
COMPOUND_RESOLUTION = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U"}
#: Mask of the group number of a repeating group (50xx, 60xx): the low byte varies.
REPEATING_GROUP_MASK = 0xFF00
#: The table's edition in short (the data file's header says where each part comes from).
EDITION = "2024c, Basic Profile rows up to 2026c"
#: Tag text of the table's "Private Attributes" row.
PRIVATE_ROW = "(gggg,eeee)"


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1: a tag (or tag pattern), its name, and its action per column."""

    tag: str
    name: str
    basic: str
    options: dict[str, str]

    def action(self, options: frozenset[str] = frozenset()) -> str:
        """The simple action for this row with ``options`` on (compound actions resolved)."""
        named = {self.options[o] for o in options if self.options.get(o)}
        if "K" in named:
            return "K"
        if "C" in named:
            return "C"
        return resolve(self.basic)

    @property
    def is_private(self) -> bool:
        return self.tag == PRIVATE_ROW


def resolve(action: str) -> str:
    """A simple action for the table's ``action`` (compound ones as :data:`COMPOUND_RESOLUTION`)."""
    if action in SIMPLE_ACTIONS:
        return action
    try:
        return COMPOUND_RESOLUTION[action]
    except KeyError:
        raise ValueError(f"unknown action {action!r} in Table E.1-1") from None


class Table:
    """Table E.1-1 indexed for lookup: exact tags, repeating groups, and the private row."""

    def __init__(self, rows: list[Row]):
        self.rows = rows
        self.exact: dict[int, Row] = {}
        self.repeating: dict[int, list[tuple[int | None, Row]]] = {}
        self.private: Row | None = None
        for row in rows:
            if row.is_private:
                self.private = row
                continue
            group, element = row.tag[1:5], row.tag[6:10]
            if "x" in group.lower():
                base = int(group.lower().replace("x", "0"), 16)
                elem = None if "x" in element.lower() else int(element, 16)
                self.repeating.setdefault(base, []).append((elem, row))
            else:
                self.exact[int(group + element, 16)] = row

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, tag: int) -> Row | None:
        """The row that covers ``tag`` (an int ``0xggggeeee``), or ``None``."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        group = tag >> 16
        if group & 1:
            return self.private
        for element, row in self.repeating.get(group & REPEATING_GROUP_MASK, ()):
            if element is None or element == tag & 0xFFFF:
                return row
        return None

    def by_name(self, name: str) -> Row:
        """The row whose attribute name is ``name`` (for tests and messages)."""
        return next(row for row in self.rows if row.name == name)


@functools.lru_cache(maxsize=1)
def load_table() -> Table:
    """Table E.1-1 from the package data (read once per process)."""
    text = resources.files("medtool").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rows = []
    for record in csv.DictReader(lines):
        tag, name, basic = record.pop("tag"), record.pop("name"), record.pop("basic")
        resolve(basic)                                      # fail early on a bad data file
        unknown = set(record) - OPTIONS.keys()
        if unknown:
            raise ValueError(f"unknown option columns {sorted(unknown)} in {TABLE_FILE}")
        rows.append(Row(tag, name, basic, {k: v for k, v in record.items() if v}))
    return Table(rows)

