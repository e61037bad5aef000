"""De-identifying DICOM files with the PS3.15 Basic Application Level Confidentiality Profile.

Each data set is walked, nested sequences and the file meta information included, and every
attribute gets the action Table E.1-1 (:mod:`medtool.deid_table`) gives it for the options in
use. On top of the table:

* UIDs: every UI value except SOP Class, Transfer Syntax and other well-known UIDs of the
  standard is replaced by ``2.25.<HMAC-SHA256(salt, uid) as a 128-bit integer>``, so all files
  of a series keep one new SeriesInstanceUID, references between files stay consistent, and two
  runs with the same salt give the same UIDs.
* Patient: PatientID and PatientName become one pseudonym, from ``--pseudonym-map`` or
  ``ANON`` + 10 hex digits of HMAC(salt, PatientID).
* Dates: with the Modified Dates option every DA and DT value (dates of birth excepted, the
  table removes them) moves by a per-patient whole number of days derived from HMAC(salt,
  PatientID), so intervals between dates stay exact; times of day are kept. Dates the table
  does not list are shifted too, kept with Full Dates, and removed in the Basic Profile.
* Private attributes are removed unless named in the safe list; overlay groups (60xx) and
  curves (50xx) are removed whole.
* PatientIdentityRemoved = YES, DeidentificationMethod and its Code Sequence (CID 7050),
  LongitudinalTemporalInformationModified are set.

Pixel data is never decoded or rewritten: its bytes are copied as read.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import hmac
import io
import os
import re
import secrets
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Sequence

from . import __version__, deidfast, dicomdict
from .deid_table import BASIC_PROFILE, EDITION, OPTIONS, Row, Table, load_table, resolve
from .dicomfast import is_dicom
from .errors import InputError, MedtoolError, OutputExistsError, UsageError, reason
from .files import (atomic_output, check_inside, find_files, mirror_path, publish,
                    open_temporary, remove_stale_temps, take_shard)

#: Root of the UUID-derived UIDs of PS3.5 B.2: ``2.25.<128-bit integer>`` (at most 44 chars).
UUID_ROOT = "2.25."
#: Bytes of the HMAC digest that make the 128-bit integer of a new UID.
UID_BYTES = 16
#: Prefix of generated patient pseudonyms, and how many hex digits follow it.
PSEUDONYM_PREFIX, PSEUDONYM_DIGITS = "ANON", 10
#: Date shifts move dates back by 1 .. this many days (about ten years), per patient.
MAX_DATE_SHIFT_DAYS = 3652
#: Tags handled outside the table.
PIXEL_DATA = 0x7FE00010
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
#: File meta elements that name the sending systems (AE titles, private information).
META_SYSTEM_TAGS = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
#: Group of overlays and of curves (each repeats over 60xx / 50xx).
OVERLAY_GROUP, CURVE_GROUP = 0x6000, 0x5000
#: UI attributes whose values name a class or a syntax, never an instance (kept as they are).
CLASS_UID_KEYWORDS = frozenset({"TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile",
                                "CodingSchemeUID", "ContextUID", "MappingResourceUID",
                                "ImplementationClassUID", "PrivateInformationCreatorUID"})
#: SOP classes of secondary capture (screen shots, scanned documents): burned-in text unless the
#: file says BurnedInAnnotation NO.
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: SOP Class of a DICOMDIR (an index of patient names; skipped).
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: Dummy value (action D) per VR; numbers get 0, binary values zero length.
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y",
               "DS": "0", "IS": "0", "UR": "", "UI": None}
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: Free-text VRs: inside a sequence the table replaces with a dummy (action D, e.g. the SR
#: Content Sequence), values of these VRs that the table does not list (Text Value, ...) get the
#: dummy too; codes (SH, LO, UC code values and meanings) and numbers are kept.
FREE_TEXT_VRS = frozenset({"LT", "PN", "ST", "UT"})
NUMBER_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Value of PatientIdentityRemoved after de-identification.
IDENTITY_REMOVED = "YES"
#: Private creator elements sit at (gggg,0010) .. (gggg,00FF).
PRIVATE_CREATOR_RANGE = range(0x10, 0x100)
#: Permissions of the identifying --write-map file: owner only.
MAP_FILE_MODE = 0o600
#: Length a value has when it is undefined (sequences, encapsulated pixel data).
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Longest element header (explicit VR with a 4-byte length: tag 4, VR 2, reserved 2, length 4).
ELEMENT_HEADER_MAX = 12
#: Length of the Part 10 preamble; medtool writes it as zeros (a preamble is free text).
PREAMBLE_BYTES = 128
#: How outputs are named unless ``--keep-names``: ``<study>`` and ``<series>`` are the first
#: hex digits of SHA-256 of the new (salted) Study and Series Instance UIDs, ``<number>`` the
#: SeriesNumber, ``<instance>`` the InstanceNumber (with the SOP Instance UID's digits added
#: when two images of a series share it, or instead of it when there is none).
LAYOUT = "<pseudonym>/ST-<study>/SE<number>-<modality>-<series>/IM-<instance>.dcm"
#: What a file named by :data:`LAYOUT` is called while it waits for its name (its temporary
#: files are ``.IM.dcm.~<host>~<pid>~<random>.tmp.dcm``).
_PENDING_NAME = "IM.dcm"
#: Hex digits of the hashes in :data:`LAYOUT`.
NAME_HASH_DIGITS = 8
#: Characters kept in a name taken from a value (the rest become ``_``).
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")
#: A value counts as identifying in a file or folder name when it has at least this many
#: characters and appears there as whole words (``MULLER_AHMED_19500101.dcm`` holds the family
#: name MULLER and the birth date 19500101).
NAME_VALUE_MIN_CHARS = 3


class BurnedInError(InputError):
    """The pixels may show identity (burned-in annotation); refused without --allow-burned-in."""


@dataclass(frozen=True)
class SafePrivate:
    """One entry of the safe private list: a creator's block element (``None`` = whole block)."""

    creator: str
    group: int
    element: int | None

    @classmethod
    def parse(cls, spec: str) -> "SafePrivate":
        """Parse ``CREATOR:gggg,ee`` (``ee`` = the element within the block, or ``xx``)."""
        creator, _, tag = spec.rpartition(":")
        try:
            group_text, element_text = tag.split(",")
            group = int(group_text, 16)
            element = None if element_text.lower() == "xx" else int(element_text, 16)
        except ValueError:
            raise UsageError(f"--keep-private {spec!r} is not CREATOR:gggg,ee",
                             hint='e.g. --keep-private "GEMS_PARM_01:0043,27"') from None
        if not creator or not group & 1 or (element is not None and not 0 <= element <= 0xFF):
            raise UsageError(f"--keep-private {spec!r}: need a creator, an odd group and an "
                             "element 00..ff within the block", hint='e.g. "GEMS_PARM_01:0043,27"')
        return cls(creator.strip(), group, element)


@dataclass(frozen=True)
class Settings:
    """What to do, the same in every worker process.

    Parameters
    ----------
    salt
        The secret every replacement (UIDs, pseudonyms, date shifts) is derived from.
    options
        Table E.1-1 option columns in force (``modified_dates``, ``full_dates``, ``patient``,
        ``device``, ``institution``, ``safe_private``).
    pseudonyms
        Original PatientID -> pseudonym; when given, every patient must be in it.
    safe_private
        Private attributes kept (only with the ``safe_private`` option).
    allow_burned_in
        Write files whose pixels may show identity instead of refusing them.
    fast
        Rewrite Explicit VR Little Endian files from their raw elements
        (:mod:`medtool.deidfast`: the bytes pydicom would write, several times faster); other
        files, and with ``False`` every file, go through pydicom.
    """

    salt: bytes
    options: frozenset[str] = frozenset()
    pseudonyms: dict[str, str] | None = None
    safe_private: tuple[SafePrivate, ...] = ()
    allow_burned_in: bool = False
    fast: bool = True

    def __post_init__(self) -> None:
        unknown = self.options - OPTIONS.keys()
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        if {"modified_dates", "full_dates"} <= self.options:
            raise UsageError("--date-shift and --keep-dates exclude each other", hint="choose one")

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.salt, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, value: str) -> str:
        """The new UID for ``value`` (same salt, same UID)."""
        return _cached_uid(self.salt, value)

    def pseudonym(self, patient_id: str) -> str:
        """The pseudonym replacing PatientID and PatientName."""
        if self.pseudonyms is not None:
            try:
                return self.pseudonyms[patient_id]
            except KeyError:
                raise InputError("patient not in the --pseudonym-map",
                                 hint="add a row for this patient's ID") from None
        digest = self._digest("patient", patient_id).hex().upper()
        return PSEUDONYM_PREFIX + digest[:PSEUDONYM_DIGITS]

    def date_shift(self, patient_id: str) -> int:
        """Days added to every date of this patient (negative: dates move back)."""
        number = int.from_bytes(self._digest("date-shift", patient_id)[:8], "big")
        return -(1 + number % MAX_DATE_SHIFT_DAYS)


_UID_CACHE: dict[tuple[bytes, str], str] = {}


def _cached_uid(salt: bytes, value: str) -> str:
    key = (salt, value)
    found = _UID_CACHE.get(key)
    if found is None:
        digest = hmac.new(salt, b"uid\0" + value.encode(), hashlib.sha256).digest()[:UID_BYTES]
        found = _UID_CACHE[key] = UUID_ROOT + str(int.from_bytes(digest, "big"))
    return found


def random_salt() -> bytes:
    """A fresh random salt (runs with different salts do not agree)."""
    return secrets.token_bytes(32)


def read_pseudonym_map(path: str | os.PathLike) -> dict[str, str]:
    """``patient_id,pseudonym`` rows (more columns are ignored) as a dict."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise UsageError(f"cannot read the pseudonym map ({exc.strerror})", path=path) from None
    if not rows:
        raise UsageError("the pseudonym map has no patients", path=path,
                         hint="add one row patient_id,pseudonym per patient")
    if not {"patient_id", "pseudonym"} <= set(rows[0]):
        raise UsageError("pseudonym map needs the columns patient_id,pseudonym", path=path,
                         hint="write one with --write-map and edit it")
    mapping = {row["patient_id"]: row["pseudonym"] for row in rows}
    if len(set(mapping.values())) != len(mapping):
        raise UsageError("two patients share one pseudonym", path=path, hint="make them unique")
    return mapping


# --------------------------------------------------------------------------------------------
# one data set


@dataclass
class Outcome:
    """What de-identifying one data set did (the patient facts stay in this process)."""

    patient_id: str
    pseudonym: str
    date_shift: int | None
    removed: int = 0
    replaced: int = 0
    unknown: int = 0


class _Walker:
    """Applies the table to one data set and everything nested in it."""

    def __init__(self, settings: Settings, patient_id: str):
        self.settings = settings
        self.table: Table = load_table()
        self.options = settings.options
        self.pseudonym = settings.pseudonym(patient_id)
        self.shift = (settings.date_shift(patient_id) if "modified_dates" in self.options
                      else None)
        self.removed = self.replaced = self.unknown = 0
        self.in_dummy = 0                               # depth inside sequences with action D

    def walk(self, ds) -> None:
        creators = _private_creators(ds)
        decisions = _decisions(self.options)
        for tag in list(ds.keys()):
            tag = int(tag)
            decision = decisions.get(tag)
            if decision is None:
                decision = decisions[tag] = _decide(self.table, tag, self.options)
            if decision is _KEEP_PIXELS:
                continue
            if decision is _DROP:                       # group lengths (retired)
                del ds[tag]
            elif decision is _PRIVATE:
                self._private(ds, tag, creators)
            elif decision is _REMOVE or decision is _UNKNOWN:
                del ds[tag]                             # overlays, curves, command elements;
                self.removed += 1                       # not in the dictionary: nobody can
                self.unknown += decision is _UNKNOWN    # vouch for its content
            else:
                self._apply(ds, tag, *decision)

    def _apply(self, ds, tag: int, row: Row | None, action: str | None) -> None:
        elem = ds[tag]
        vr = elem.VR
        if tag in (PATIENT_ID, PATIENT_NAME) and action != "K":
            elem.value = self.pseudonym
            self.replaced += 1
            return
        if action is None:
            self._unlisted(ds, tag, elem)
            return
        if action == "C":
            if vr in ("DA", "DT", "TM") and self.shift is not None:
                self._shift(ds, tag, elem, row)
                return
            action = resolve(row.basic)
        if action == "K":
            if vr == "SQ":
                self._items(elem)
            return
        if action == "X":
            del ds[tag]
            self.removed += 1
            return
        if action == "Z":
            _empty(elem)
            self.replaced += 1
            return
        if vr == "SQ":                                  # D or U: keep it, de-identify inside
            self._items(elem, dummy=action == "D")
            return
        if vr == "UI":
            self._remap(elem)
            return
        if action == "U":                               # a UID stored in another VR (UN)
            _empty(elem)
            self.replaced += 1
            return
        _dummy(elem)                                    # D
        self.replaced += 1

    def _unlisted(self, ds, tag: int, elem) -> None:
        vr = elem.VR
        if vr == "SQ":
            self._items(elem)
        elif vr == "UI":
            if not _is_class_uid(elem):
                self._remap(elem)
        elif vr in ("DA", "DT"):
            if self.shift is not None:
                self._shift(ds, tag, elem, None)
            elif "full_dates" not in self.options:
                del ds[tag]
                self.removed += 1
        elif vr in FREE_TEXT_VRS and self.in_dummy and elem.VM and elem.value not in (None, ""):
            _dummy(elem)
            self.replaced += 1

    def _items(self, elem, *, dummy: bool = False) -> None:
        self.in_dummy += dummy
        try:
            for item in elem.value or ():
                self.walk(item)
        finally:
            self.in_dummy -= dummy

    def _remap(self, elem) -> None:
        if elem.VM == 0 or elem.value in (None, ""):
            return
        uid = self.settings.uid
        if elem.VM > 1:
            elem.value = [uid(str(v).strip("\0 ")) if not _well_known(str(v)) else v
                          for v in elem.value]
        elif not _well_known(str(elem.value)):
            elem.value = uid(str(elem.value).strip("\0 "))
        self.replaced += 1

    def _shift(self, ds, tag: int, elem, row: Row | None) -> None:
        """Move a DA/DT value by the patient's shift; TM stays (whole days only)."""
        if elem.VR == "TM" or elem.VM == 0 or elem.value in (None, ""):
            return
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        shifted = [_shift_value(str(v), self.shift, elem.VR) for v in values]
        if any(v is None for v in shifted):             # unparseable: the basic action instead
            self._apply(ds, tag, row, resolve(row.basic) if row else "X")
            return
        elem.value = shifted if len(shifted) > 1 else shifted[0]
        self.replaced += 1

    def _private(self, ds, tag: int, creators: dict[tuple[int, int], str]) -> None:
        if "safe_private" in self.options and _is_safe_private(tag, creators,
                                                               self.settings.safe_private):
            elem = ds[tag]
            if elem.VR == "UI":
                self._remap(elem)
            return
        del ds[tag]
        self.removed += 1


#: What the walker does with a tag before the table's action (see :func:`_decide`).
_KEEP_PIXELS, _DROP, _PRIVATE, _REMOVE, _UNKNOWN = (object() for _ in range(5))


@functools.cache
def _decisions(options: frozenset[str]) -> dict[int, Any]:
    """The tags decided so far with ``options`` (the decision depends only on the tag)."""
    return {}


def _decide(table: Table, tag: int, options: frozenset[str]):
    """What the walker does with ``tag``: one of the markers above, or (row, action) of the
    table (row ``None`` for a public attribute the table does not list)."""
    group, element = tag >> 16, tag & 0xFFFF
    if tag == PIXEL_DATA:
        return _KEEP_PIXELS
    if element == 0 and group != 0x0002:
        return _DROP
    if group & 1:
        return _PRIVATE
    if group & 0xFF00 in (OVERLAY_GROUP, CURVE_GROUP) or group == 0:
        return _REMOVE
    row = table.row(tag)
    if row is None and not in_dictionary(tag):
        return _UNKNOWN
    return row, row.action(options) if row else None


def _private_creators(ds) -> dict[tuple[int, int], str]:
    """(group, block) -> creator name of the private blocks of ``ds``."""
    found = {}
    for tag in ds.keys():
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1 and element in PRIVATE_CREATOR_RANGE:
            value = ds[tag].value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            found[(group, element)] = str(value or "").strip()
    return found


def _is_safe_private(tag: int, creators, safe: Sequence[SafePrivate]) -> bool:
    group, element = tag >> 16, tag & 0xFFFF
    if element in PRIVATE_CREATOR_RANGE:                # a creator: kept when its block is
        creator = creators.get((group, element))
        return any(s.creator == creator and s.group == group for s in safe)
    creator = creators.get((group, element >> 8))
    return any(s.creator == creator and s.group == group
               and (s.element is None or s.element == element & 0xFF) for s in safe)


def in_dictionary(tag: int) -> bool:
    """True when the public ``tag`` is in the DICOM data dictionary (repeating groups included)."""
    return dicomdict.entry(tag) is not None


def _well_known(uid: str) -> bool:
    return dicomdict.is_known_uid(uid)


def _is_class_uid(elem) -> bool:
    keyword = elem.keyword or ""
    return keyword.endswith("ClassUID") or keyword in CLASS_UID_KEYWORDS


def _empty(elem) -> None:
    if elem.VR == "SQ":
        elem.value = []                                 # pydicom makes it an empty Sequence
    elif elem.VR in BINARY_VRS:
        elem.value = b""
    elif elem.VR in NUMBER_VRS:
        elem.value = None
    else:
        elem.value = ""


def _dummy(elem) -> None:
    vr = elem.VR
    if vr in DUMMY_BY_VR:
        elem.value = DUMMY_BY_VR[vr]
    elif vr in TEXT_VRS:
        elem.value = DUMMY_TEXT
    elif vr in NUMBER_VRS:
        elem.value = 0
    else:
        _empty(elem)


@functools.lru_cache(maxsize=4096)
def _shift_value(value: str, days: int, vr: str) -> str | None:
    """``value`` (DA ``YYYYMMDD`` or DT ``YYYYMMDD...``) moved by ``days``; ``None`` if unparseable."""
    value = value.strip()
    if not value:
        return value
    try:
        date = dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None
    if vr == "DA" and len(value) != 8:
        return None
    return (date + dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]


def deidentify(ds, settings: Settings) -> Outcome:
    """De-identify the data set ``ds`` (a pydicom Dataset, file meta included) in place."""
    patient_id = str(ds.get("PatientID", "") or "")
    walker = _Walker(settings, patient_id)
    walker.walk(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in META_SYSTEM_TAGS:
            if tag in meta:
                del meta[tag]
        walker.walk(meta)
    _declare(ds, settings)
    return Outcome(patient_id, walker.pseudonym, walker.shift, walker.removed, walker.replaced,
                   walker.unknown)


def _declare(ds, settings: Settings) -> None:
    """Record what was done: PatientIdentityRemoved, method, CID 7050 codes, date handling."""
    if isinstance(ds, deidfast.RawDataset):
        Dataset = deidfast.RawDataset
    else:
        from pydicom.dataset import Dataset

    codes = [BASIC_PROFILE] + [OPTIONS[o] for o in OPTIONS if o in settings.options]
    ds.PatientIdentityRemoved = IDENTITY_REMOVED
    ds.DeidentificationMethod = [f"medtool {__version__} PS3.15 E.1-1 {EDITION}"[:64]] + [
        meaning[:64] for _, meaning in codes]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items  # pydicom makes it a Sequence
    ds.LongitudinalTemporalInformationModified = (
        "MODIFIED" if "modified_dates" in settings.options
        else "UNMODIFIED" if "full_dates" in settings.options else "REMOVED")


# --------------------------------------------------------------------------------------------
# files


def read_dicom(path: Path):
    """Read the whole DICOM file at ``path``; raise :class:`InputError` if it is not complete."""
    import pydicom

    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    if not is_dicom(path):
        raise InputError("not a DICOM file", path=path, hint="give DICOM files or folders")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # from memory: a damaged length makes pydicom read() that many bytes, and a file
            # object allocates them all first (4 GB for a 10 KB file); a buffer gives what is there
            ds = pydicom.dcmread(io.BytesIO(path.read_bytes()), force=True)
            _check_complete(ds, path)
            for _ in ds.iterall():                      # decode every value now: an unknown
                pass                                    # VR or a bad value is this file's error
    except MedtoolError:
        raise
    except Exception as exc:                            # pydicom raises many types
        raise InputError(f"cannot read the DICOM file ({reason(exc, limit=200)})",
                         path=path, hint="the file is damaged or truncated; copy it again") from None
    return ds


def _check_complete(ds, path: Path) -> None:
    """Every value read as long as its header said (pydicom reads short values at the end)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    if not ds._dict:
        raise InputError("damaged or truncated: no data set after the file meta header", path=path,
                         hint="copy the file again from the source")
    last = next(reversed(ds._dict.values()))
    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    if isinstance(last, RawDataElement) and last.length != UNDEFINED_LENGTH and \
            last.value_tell is not None and syntax != DeflatedExplicitVRLittleEndian:
        left = path.stat().st_size - (last.value_tell + last.length)
        if 0 < left < ELEMENT_HEADER_MAX:               # pydicom drops a cut-off element header
            raise InputError(f"truncated: the file ends inside an element header ({left} bytes "
                             "after the last whole element)", path=path,
                             hint="copy the file again from the source")
    for raw in ds._dict.values():
        if isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH \
                and raw.value is not None and len(raw.value) < raw.length:
            raise InputError(f"truncated: ({raw.tag.group:04X},{raw.tag.element:04X}) has "
                             f"{len(raw.value)} of {raw.length} bytes", path=path,
                             hint="copy the file again from the source")
    if PIXEL_DATA in ds._dict and "Rows" in ds and ds.file_meta.get("TransferSyntaxUID") and \
            not ds.file_meta.TransferSyntaxUID.is_compressed:
        from pydicom.pixels.utils import get_expected_length

        expected = get_expected_length(ds, "bytes")     # knows YBR_FULL_422, bit-packed, ...
        have = ds._dict[PIXEL_DATA].length
        if have < expected:
            raise InputError(f"truncated: pixel data has {have} of {expected} bytes", path=path,
                             hint="copy the file again from the source")


def burned_in_reason(ds) -> str | None:
    """Why the pixels may show identity, or ``None``."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not flag and sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture without BurnedInAnnotation"
    return None


@dataclass
class _Job:
    """One file to de-identify. ``target`` is its output path, or ``None`` when the output is
    named by :data:`LAYOUT` under ``out`` (the name is given once every file is done)."""

    source: Path
    target: Path | None
    settings: Settings
    force: bool
    named: bool
    out: Path | None = None
    in_place: bool = False


def _anonymize_file(job: _Job) -> dict[str, Any]:
    """De-identify one file; the result says what was written (or why it was skipped)."""
    with warnings.catch_warnings():                     # pydicom warns on odd values while
        warnings.simplefilter("ignore")                 # they are converted lazily
        return _anonymize_file_quietly(job)


def _anonymize_file_quietly(job: _Job) -> dict[str, Any]:
    if job.in_place:
        _check_rewritable(job.source)
    if job.settings.fast:
        try:
            return _anonymize_dataset(job, deidfast.read(job.source))
        except deidfast.Fallback:                       # pydicom's path writes this one
            pass
    if not job.named and not is_dicom(job.source):
        return {"source": str(job.source), "skipped": "not DICOM"}
    return _anonymize_dataset(job, read_dicom(job.source))


def _anonymize_dataset(job: _Job, ds) -> dict[str, Any]:
    """De-identify ``ds`` (read from ``job.source``) and write it where ``job`` says."""
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if not sop_class:
        raise InputError("cannot read a DICOM object (no SOP Class UID)", path=job.source,
                         hint="the file is damaged or not a DICOM object; copy it again")
    if sop_class == DICOMDIR_CLASS:
        if job.named:
            raise InputError("DICOMDIR index, not an image", path=job.source,
                             hint="anonymize the files it lists and build a new DICOMDIR")
        return {"source": str(job.source), "skipped": "DICOMDIR"}
    burned = burned_in_reason(ds)
    if burned and not job.settings.allow_burned_in:
        raise BurnedInError(f"refused: pixels may show identity ({burned})", path=job.source,
                            hint="check the pixels and pass --allow-burned-in to write it anyway")
    _give_file_meta(ds, sop_class)
    outcome = deidentify(ds, job.settings)
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationVersionName = f"MEDTOOL_{__version__}"[:16]
    ds.preamble = b"\0" * PREAMBLE_BYTES               # the source's preamble is free text
    if isinstance(ds, deidfast.RawFile):
        ds.prepare()                                    # may fall back: before any output
    result = {"source": str(job.source), "patient_id": outcome.patient_id,
              "pseudonym": outcome.pseudonym, "date_shift_days": outcome.date_shift,
              "removed": outcome.removed, "replaced": outcome.replaced, "unknown": outcome.unknown}
    if job.target is not None:
        if job.out is not None:                         # --keep-names: never outside out
            check_inside(job.target, job.out)
        with atomic_output(job.target, force=job.force) as temp:
            _save(ds, temp, job.source)
        return {**result, "output": str(job.target)}
    folder = job.out / layout_folder(ds, outcome.pseudonym)
    temp, handle = _open_pending(folder, job.out)
    try:
        with open(handle, "wb") as stream:
            _save(ds, stream, job.source)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return {**result, "temp": str(temp), "folder": str(folder),
            "instance": _instance_number(ds), "key": _short_hash(ds.get("SOPInstanceUID") or
                                                                 str(job.source))}


#: Output folders this process has made and checked (folder, output root): the checks of a
#: series' first file serve its other files.
_READY_FOLDERS: set[tuple[str, str]] = set()


def _open_pending(folder: Path, root: Path) -> tuple[Path, int]:
    """A new temporary file in ``folder`` (made inside ``root``, never through a link out of
    it): its path and an open descriptor."""
    key = (str(folder), str(root))
    placeholder = folder / _PENDING_NAME
    if key in _READY_FOLDERS:
        try:
            return open_temporary(placeholder)
        except FileNotFoundError:                       # removed since: make it again
            _READY_FOLDERS.discard(key)
    check_inside(placeholder, root)
    folder.mkdir(parents=True, exist_ok=True)
    check_inside(placeholder, root)                     # a link made while we were at it
    _READY_FOLDERS.add(key)
    return open_temporary(placeholder)


def _check_rewritable(path: Path) -> None:
    """Refuse ``--in-place`` where rewriting ``path`` would leave an identifiable copy."""
    if path.is_symlink():
        raise InputError("is a symbolic link: --in-place would replace the link and leave the "
                         "file it points to identifiable", path=path,
                         hint=f"anonymize {os.path.realpath(path)} itself, or write to an "
                              "output folder")
    try:
        links = os.lstat(path).st_nlink
    except OSError:
        return                                          # read_dicom says what is wrong
    if links > 1:
        raise InputError(f"has {links} hard links: --in-place would rewrite this name only and "
                         "leave the other links identifiable", path=path,
                         hint="write to an output folder, or remove the other links first")


def _give_file_meta(ds, sop_class: str) -> None:
    """File meta for a bare data set; the media storage UIDs of the data set."""
    if "TransferSyntaxUID" not in ds.file_meta:         # a bare data set: give it file meta
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = ds.original_encoding        # (pydicom cannot swap the byte order)
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit
                                          else ExplicitVRLittleEndian if little
                                          else ExplicitVRBigEndian)
    ds.file_meta.MediaStorageSOPClassUID = ds.file_meta.get("MediaStorageSOPClassUID", sop_class)
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _save(ds, temp: Path | BinaryIO, source: Path) -> None:
    """Write ``ds`` to the path or open file ``temp`` (``source``: the file it was read from)."""
    try:
        ds.save_as(temp, enforce_file_format=True)
    except Exception as exc:                            # a value pydicom cannot encode
        raise InputError(f"cannot write the de-identified file ({reason(exc, limit=200)})",
                         path=source,
                         hint="the file holds a value that cannot be encoded; fix or leave it out") from None


def _short_hash(value) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:NAME_HASH_DIGITS]


def _instance_number(ds) -> int | None:
    try:
        return int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        return None


def layout_folder(ds, pseudonym: str) -> PurePosixPath:
    """``<pseudonym>/ST-<study>/SE<number>-<modality>-<series>`` of :data:`LAYOUT` for the
    de-identified data set ``ds`` (its UIDs are the new ones)."""
    patient = _UNSAFE_NAME.sub("_", pseudonym).strip("_") or PSEUDONYM_PREFIX
    study = _short_hash(ds.get("StudyInstanceUID") or "")
    try:
        number = f"{int(ds.get('SeriesNumber')):04d}"
    except (TypeError, ValueError):
        number = ""
    modality = _UNSAFE_NAME.sub("", str(ds.get("Modality", "") or "")).upper()[:16] or "OT"
    series = _short_hash(ds.get("SeriesInstanceUID") or "")
    return PurePosixPath(patient, f"ST-{study}", f"SE{number}-{modality}-{series}")


def _leaf_names(results: list[dict[str, Any]]) -> None:
    """Give each written file of one series folder its ``IM-<instance>.dcm`` name (in the order
    of instance number, SOP Instance UID and source path, so the names are reproducible)."""
    taken: set[str] = set()
    order = sorted(results, key=lambda r: (r["instance"] is None, r["instance"] or 0, r["key"],
                                           r["source"]))
    for result in order:
        number, key = result["instance"], result["key"]
        stem = f"IM-{number:04d}" if number is not None else f"IM-{key}"
        candidates = [stem, f"{stem}-{key}"] if number is not None else [stem]
        name = next((c for c in candidates if c not in taken), None)
        copy = 2
        while name is None:                             # the same image twice
            name = f"{candidates[-1]}-{copy}" if f"{candidates[-1]}-{copy}" not in taken else None
            copy += 1
        taken.add(name)
        result["name"] = f"{name}.dcm"


@dataclass
class Report:
    """What :func:`anonymize` did."""

    written: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, MedtoolError]] = field(default_factory=list)
    files: int = 0
    #: Worker processes used (see ``workers`` of :func:`anonymize`).
    workers: int = 1

    @property
    def refused(self) -> list[str]:
        """Files refused for burned-in annotation."""
        return [name for name, error in self.failures if isinstance(error, BurnedInError)]

    @property
    def unknown(self) -> int:
        """Public attributes removed because the data dictionary does not know them."""
        return sum(w.get("unknown", 0) for w in self.written)

    def patients(self) -> list[dict[str, Any]]:
        """One row per patient: original ID, pseudonym, date shift (identifying!)."""
        rows = {}
        for w in self.written:
            rows.setdefault(w["patient_id"], {"patient_id": w["patient_id"],
                                              "pseudonym": w["pseudonym"],
                                              "date_shift_days": w["date_shift_days"]})
        return sorted(rows.values(), key=lambda r: r["pseudonym"])


def plan_outputs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike | None, *,
                 in_place: bool = False, keep_names: bool = False
                 ) -> list[tuple[Path, Path | None, bool]]:
    """(source, target, named directly) for every file under ``inputs``.

    ``out`` is a folder; the outputs are named by :data:`LAYOUT` (target ``None``: named once
    de-identified) or, with ``keep_names``, mirror the inputs (a file named directly lands at
    its top). ``out`` is the output file when the only input is one file and ``out`` has a
    suffix and is no folder.
    """
    roots = [Path(p) for p in inputs]
    files = find_files(roots, suffixes=None)
    named = {Path(p) for p in roots if not Path(p).is_dir()}
    if in_place:
        return [(f, f, f in named) for f in files]
    if out is None:
        raise UsageError("give an output folder, or --in-place to rewrite the inputs")
    out = Path(out)
    for root in roots:
        if root.is_dir() and out.resolve().is_relative_to(root.resolve()):
            raise UsageError(f"the output {out} lies inside the input folder {root}",
                             hint="choose another output folder, or pass --in-place")
    if len(roots) == 1 and roots[0] in named and out.suffix and not out.is_dir():
        planned = [(roots[0], out, True)]
    elif not keep_names:
        return [(f, None, f in named) for f in files]
    else:
        planned = [(f, mirror_path(f, roots, out, suffix=None), f in named) for f in files]
    sources = {source.resolve() for source, _, _ in planned}
    for _, target, _ in planned:
        if target.resolve() in sources:
            raise UsageError(f"the output {target} would overwrite an input",
                             hint="choose another output, or pass --in-place")
    return planned


def anonymize(inputs: Sequence[str | os.PathLike], out: str | os.PathLike | None, *,
              settings: Settings, in_place: bool = False, keep_names: bool = False,
              workers: int | None = 1, force: bool = False, shard: tuple[int, int] | None = None,
              progress: bool = False,
              on_error: Callable[[MedtoolError], None] | None = None) -> Report:
    """De-identify every DICOM file under ``inputs`` into ``out`` (or in place).

    Outputs are named by :data:`LAYOUT` unless ``keep_names`` (or ``in_place``). Non-DICOM
    files and DICOMDIRs found in folders are skipped and counted; a bad file gets one error
    and the others go on. An existing output is that file's error unless ``force``. Nothing
    is written outside ``out``, symbolic links inside it included. ``workers``: processes, or
    ``None`` to let the batch choose (one per core for many files, see
    :func:`medtool.batch.auto_workers`; the choice is ``Report.workers``).
    """
    planned = take_shard(plan_outputs(inputs, out, in_place=in_place, keep_names=keep_names),
                         shard)
    targets = [target for _, target, _ in planned if target is not None]
    if len(set(targets)) != len(targets):
        raise UsageError("two inputs would be written to the same output file",
                         hint="anonymize the folders separately, or leave out --keep-names")
    root = None if in_place else Path(out)
    _READY_FOLDERS.clear()                              # folders are checked again each run
    single = root is not None and len(planned) == 1 and planned[0][1] == root
    jobs = [_Job(source, target, settings, force or in_place, named,
                 out=None if single else root, in_place=in_place)
            for source, target, named in planned]
    from .batch import run_batch

    report = Report(files=len(jobs))
    temps: list[Path] = []

    def failed(error: MedtoolError, source: str) -> None:
        report.failures.append((source, error))
        if on_error is not None:
            on_error(error)

    def arrived(index: int, result: dict[str, Any]) -> None:
        if "temp" in result:
            temps.append(Path(result["temp"]))
        results[index] = result

    results: list[dict[str, Any] | None] = [None] * len(jobs)
    try:
        if root is not None and root.is_dir():
            for stale in {p.parent for p in root.rglob(".*.tmp*")}:
                remove_stale_temps(stale / _PENDING_NAME)
        outcome = run_batch(_anonymize_file, jobs, workers=workers, description="anonymizing",
                            progress=progress, on_error=on_error, on_result=arrived,
                            name=lambda job: str(job.source), small=True)
        report.failures.extend(outcome.failures)
        report.workers = outcome.workers
        _place([r for r in results if r is not None and "temp" in r], force=force,
               failed=failed)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    for result in results:
        if result is None:
            continue
        if "skipped" in result:
            report.skipped.append((result["source"], result["skipped"]))
        elif "output" in result:
            report.written.append(result)
    report.failures.sort(key=lambda failure: failure[0])
    return report


def _place(results: list[dict[str, Any]], *, force: bool,
           failed: Callable[[MedtoolError, str], None]) -> None:
    """Rename the temporary outputs named by :data:`LAYOUT` into place."""
    by_folder: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_folder[result["folder"]].append(result)
    for folder, members in by_folder.items():
        _leaf_names(members)
        for result in members:
            target = Path(folder) / result["name"]
            if target.exists() and not force:
                failed(OutputExistsError("output exists already", path=target,
                                         hint="pass --force to overwrite it"), result["source"])
                continue
            publish(result["temp"], target)
            result["output"] = str(target)


def write_map(path: str | os.PathLike, report: Report, *, force: bool = False) -> int:
    """Write ``patient_id,pseudonym,date_shift_days`` for every patient written; returns rows."""
    rows = report.patients()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["patient_id", "pseudonym", "date_shift_days"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(path, force=force) as temp:
        os.chmod(temp, MAP_FILE_MODE)                   # private before a byte is written
        temp.write_text(buffer.getvalue(), encoding="utf-8")
    return len(rows)


# --------------------------------------------------------------------------------------------
# checking


def _declared_options(ds) -> frozenset[str]:
    codes = {str(item.get("CodeValue", "")) for item in
             ds.get("DeidentificationMethodCodeSequence", None) or ()}
    return frozenset(name for name, (code, _) in OPTIONS.items() if code in codes)


def check_dataset(ds) -> list[dict[str, str]]:
    """Every attribute of ``ds`` the profile would still act on: tag, name, action.

    The options the file declares in its DeidentificationMethodCodeSequence are honoured.
    Values that were replaced (dummies, pseudonyms, new UIDs, shifted dates) cannot be told
    from originals, so D, U and C attributes count as done only when the file says
    PatientIdentityRemoved YES; removals (X) and empties (Z) are always checked.
    """
    options = _declared_options(ds)
    removed = str(ds.get("PatientIdentityRemoved", "")).upper() == IDENTITY_REMOVED
    table = load_table()
    findings: list[dict[str, str]] = []

    def report(tag: int, name: str, action: str, path: str) -> None:
        findings.append({"tag": f"({tag >> 16:04X},{tag & 0xFFFF:04X})", "name": name,
                         "action": action, "where": path})

    def visit(data, path: str, in_dummy: bool = False) -> None:
        for tag in data.keys():
            tag = int(tag)
            group, element = tag >> 16, tag & 0xFFFF
            if tag == PIXEL_DATA or element == 0:
                continue
            elem = data[tag]
            name = elem.name
            if group & 1:
                if "safe_private" not in options:
                    report(tag, "Private Attribute", "X", path)
                continue
            row = table.row(tag)
            action = row.action(options) if row else None
            empty = elem.VM == 0 or elem.value in (None, "", b"")
            if row is None and (group == 0 or not in_dictionary(tag)):
                report(tag, "Unknown public attribute" if group else "Command element", "X",
                       path)
                continue
            if row is None:
                if elem.VR == "UI" and not removed and not empty and not _is_class_uid(elem) \
                        and not _well_known(str(elem.value)):
                    report(tag, name, "U", path)
                elif elem.VR in ("DA", "DT") and not empty and not removed:
                    report(tag, name, "X", path)
                elif elem.VR in FREE_TEXT_VRS and in_dummy and not empty and not removed:
                    report(tag, name, "D", path)
            elif action == "C" and elem.VR in ("DA", "DT", "TM") and \
                    options & {"modified_dates", "full_dates"}:
                action = "K"
            elif action == "C":
                action = resolve(row.basic)
            if row is not None:
                if action == "X":
                    report(tag, row.name, "X", path)
                    continue
                if action == "Z" and not empty and elem.VR != "SQ" and not (
                        removed and tag in (PATIENT_ID, PATIENT_NAME)):
                    report(tag, row.name, "Z", path)
                elif action in ("D", "U") and not empty and not removed and elem.VR != "SQ":
                    report(tag, row.name, action, path)
            if elem.VR == "SQ":
                for index, item in enumerate(elem.value or ()):
                    visit(item, f"{path}{elem.keyword or hex(tag)}[{index}]/",
                          in_dummy or action == "D")

    visit(ds, "")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not removed:
        visit(meta, "")
    return findings


def _check_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError("no such file or folder", path=path, hint="check the path")
    if not is_dicom(path):
        return {"source": str(path), "skipped": "not DICOM"}
    ds = read_dicom(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        findings = check_preamble(path) + check_dataset(ds) + check_names(ds, path)
    return {"source": str(path), "findings": findings}


def check_preamble(path: Path) -> list[dict[str, str]]:
    """A finding when the 128-byte preamble of the Part 10 file ``path`` is not all zeros."""
    with open(path, "rb") as handle:
        head = handle.read(PREAMBLE_BYTES + 4)
    if head[PREAMBLE_BYTES:] != b"DICM" or not head[:PREAMBLE_BYTES].strip(b"\0"):
        return []
    return [{"tag": "(preamble)", "name": "File Preamble (128 bytes of free text, not all zero)",
             "action": "Z", "where": ""}]


def identifying_values(ds) -> dict[str, str]:
    """Values of ``ds`` that the profile would still act on (value -> attribute name), for
    comparing with file and folder names. Pseudonyms and new UIDs of a de-identified file, and
    dates it declares as shifted or retained, are not identifying."""
    options = _declared_options(ds)
    removed = str(ds.get("PatientIdentityRemoved", "")).upper() == IDENTITY_REMOVED
    dated = bool(options & {"modified_dates", "full_dates"})
    table = load_table()
    dummies = {DUMMY_TEXT, *(v for v in DUMMY_BY_VR.values() if v)}
    found: dict[str, str] = {}

    def visit(data) -> None:
        for elem in data:
            tag = int(elem.tag)
            if elem.VR == "SQ":
                for item in elem.value or ():
                    visit(item)
                continue
            if tag == PIXEL_DATA or elem.VR in BINARY_VRS or elem.VR in NUMBER_VRS:
                continue
            if removed and (tag in (PATIENT_ID, PATIENT_NAME) or elem.VR == "UI"
                            or (dated and elem.VR in ("DA", "DT", "TM"))):
                continue
            row = table.row(tag)
            if row is None or row.action(options) == "K":
                continue
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            for value in values:
                text = str(value or "").strip("\0 ")
                parts = [text] + (text.split("^") if elem.VR == "PN" else [])
                for part in parts:
                    part = part.strip()
                    if len(part) >= NAME_VALUE_MIN_CHARS and part not in dummies:
                        found.setdefault(part, row.name)

    visit(ds)
    return found


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^0-9A-Za-z]+", text.upper()) if w]


def check_names(ds, path: Path) -> list[dict[str, str]]:
    """Findings for each file or folder name of ``path`` that holds an identifying value of
    ``ds`` as whole words (``MRN4845069_MULLER^AHMED`` holds PatientID and the family name)."""
    values = [(_words(value), name) for value, name in identifying_values(ds).items()]
    values = [(words, name) for words, name in values if words]
    findings = []
    for part in Path(path).parts:
        words = _words(part)
        holds = sorted({name for needle, name in values if _contains(words, needle)})
        if holds:
            findings.append({"tag": "(path)", "name": f"File or folder name holds the "
                                                      f"{', '.join(holds)}",
                             "action": "X", "where": f"{part}: "})
    return findings


def _contains(words: list[str], needle: list[str]) -> bool:
    size = len(needle)
    return any(words[i:i + size] == needle for i in range(len(words) - size + 1))


@dataclass
class CheckReport:
    """What :func:`check` found: per file, the attributes the profile would still act on."""

    findings: list[dict[str, str]] = field(default_factory=list)
    checked: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, MedtoolError]] = field(default_factory=list)
    workers: int = 1

    @property
    def dirty_files(self) -> list[str]:
        return sorted({f["file"] for f in self.findings})


def check(inputs: Sequence[str | os.PathLike], *, workers: int | None = 1,
          shard: tuple[int, int] | None = None, progress: bool = False,
          on_error: Callable[[MedtoolError], None] | None = None) -> CheckReport:
    """Scan every DICOM file under ``inputs`` with :func:`check_dataset`."""
    files = take_shard(find_files(inputs, suffixes=None), shard)
    from .batch import run_batch

    outcome = run_batch(_check_file, files, workers=workers, description="checking",
                        progress=progress, on_error=on_error, small=True)
    report = CheckReport(failures=outcome.failures, workers=outcome.workers)
    for result in outcome.results:
        if result is None:
            continue
        if "skipped" in result:
            report.skipped.append((result["source"], result["skipped"]))
            continue
        report.checked += 1
        report.findings.extend({"file": result["source"], **f} for f in result["findings"])
    if not report.checked and not report.failures:
        raise InputError(f"no DICOM file to check ({len(files)} file(s) found, "
                         f"{len(report.skipped)} not DICOM)", path=" ".join(map(str, inputs)),
                         hint="check the path: checking nothing is not a clean result")
    return report
