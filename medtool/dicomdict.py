"""The DICOM data dictionary and UID dictionary, read without importing pydicom.

pydicom ships both as plain modules (``pydicom/_dicom_dict.py``, ``pydicom/_uid_dict.py``);
they are loaded here from their files, so that a command that needs a keyword or a VR does
not pay for importing pydicom itself (about 0.15 s). The answers are pydicom's: the same
tables, and repeating groups (``60xx``) matched with pydicom's masks.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import types
from pathlib import Path


@functools.cache
def _table(name: str) -> types.ModuleType:
    spec = importlib.util.find_spec("pydicom")
    if spec is None or spec.origin is None:         # pragma: no cover (pydicom is a dependency)
        raise ModuleNotFoundError("pydicom")
    loader = importlib.machinery.SourceFileLoader(f"medtool.dicomdict.{name}",
                                                  str(Path(spec.origin).with_name(f"{name}.py")))
    module = types.ModuleType(loader.name)
    loader.exec_module(module)
    return module


@functools.cache
def _masks() -> dict[str, tuple[int, int]]:
    """pydicom's repeating-group masks: ``"60xx0010"`` -> (bits that must match, their mask)."""
    return {mask: (int(mask.replace("x", "0"), 16),
                   int("".join("F0"[c == "x"] for c in mask), 16))
            for mask in _table("_dicom_dict").RepeatersDictionary}


@functools.lru_cache(maxsize=8192)
def entry(tag: int) -> tuple[str, str, str, str, str] | None:
    """(VR, VM, name, retired, keyword) of a public ``tag``, or ``None`` when not in the dictionary."""
    table = _table("_dicom_dict")
    found = table.DicomDictionary.get(tag)
    if found is not None:
        return found
    for mask, (bits, care) in _masks().items():
        if (tag ^ bits) & care == 0:
            return table.RepeatersDictionary[mask]
    return None


def keyword(tag: int) -> str:
    """The keyword of ``tag`` (``""`` for private and unknown tags), as pydicom gives it."""
    if tag >> 16 & 1:
        return ""
    found = _table("_dicom_dict").DicomDictionary.get(tag)
    return found[4] if found else ""


@functools.cache
def _tags() -> dict[str, int]:
    return {values[4]: tag for tag, values in _table("_dicom_dict").DicomDictionary.items()}


def tag_for(name: str) -> int:
    """The tag of the keyword ``name``; :class:`KeyError` when there is none."""
    return _tags()[name]


def is_known_uid(uid: str) -> bool:
    """True for a UID of the standard (SOP classes, transfer syntaxes, ...)."""
    return uid.strip("\0 ") in _table("_uid_dict").UID_dictionary
