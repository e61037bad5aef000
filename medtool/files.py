"""Input discovery and safe output writing.

Every command writes through :func:`atomic_output`: the data goes to a temporary file in the
destination folder and is renamed into place only when complete, so an interrupted run never
leaves a half-written file, and an existing output is only replaced with ``force=True``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

from .errors import InputError, OutputExistsError, UsageError

#: Volume file suffixes medtool reads and writes, longest first.
VOLUME_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npy", ".npz")
#: Temporary outputs are named ``.<output name>.~<host>~<pid>~<random>.tmp<suffix>`` (a folder:
#: ``.tmp``), so that a later run can tell a stale one (its process is gone) from one that a
#: running process is still writing, and remove it.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.~(?P<host>[^~/]*)~(?P<pid>\d+)~[^~/.]+\.(?:tmp|old)")

T = TypeVar("T")


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The volume format suffix of ``path`` (``".nii.gz"``, ...), or ``None``."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def strip_suffix(path: str | os.PathLike) -> str:
    """File name without its volume suffix: ``case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def case_of_image(path: str | os.PathLike, image_suffix: str = "") -> str | None:
    """The case id of an image file named ``<case><image_suffix>.<ext>``; ``None`` when its name
    does not end in ``image_suffix`` (another channel or the label map of the same folder)."""
    stem = strip_suffix(path)
    if not image_suffix:
        return stem
    return stem[: -len(image_suffix)] if stem.endswith(image_suffix) and len(stem) > len(image_suffix) else None


def volume_cases(path: str | os.PathLike, suffix: str = "", *, required: bool = False) -> dict[str, Path]:
    """Volumes under ``path`` by case id: the file name without its format suffix and without
    ``suffix`` (``_lungs`` in ``case_001_lungs.nii.gz``); with ``required``, names that do not
    end in ``suffix`` are not cases (other masks of the same folder)."""
    path = Path(path)
    files = [p for p in find_files([path]) if not (p.suffix == ".json")]
    if path.is_dir():
        files = [p for p in files if any(p.name.lower().endswith(s) for s in VOLUME_SUFFIXES)]
    found: dict[str, Path] = {}
    for file in files:
        case = strip_suffix(file)
        if suffix and case.endswith(suffix):
            case = case[: -len(suffix)]
        elif suffix and required and path.is_dir():
            continue
        if case in found:
            raise InputError(f"case {case} has two volumes ({found[case].name}, {file.name})", path=path,
                             hint="keep one volume per case")
        found[case] = file
    return found


def companion_paths(path: str | os.PathLike) -> list[Path]:
    """Every file that makes up the volume at ``path`` (``.npy`` has its ``.json`` sidecar)."""
    path = Path(path)
    if volume_suffix(path) == ".npy":
        return [path, sidecar_path(path)]
    if volume_suffix(path) == ".mhd":
        return [path, raw_path(path)]
    return [path]


def raw_path(path: str | os.PathLike) -> Path:
    """The ``.raw`` pixel file of a ``.mhd`` MetaImage header that medtool writes."""
    path = Path(path)
    return path.with_name(strip_suffix(path) + ".raw")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The ``.json`` sidecar of an ``.npy`` volume."""
    path = Path(path)
    return path.with_name(strip_suffix(path) + ".json")


def find_files(
    paths: Sequence[str | os.PathLike], *, suffixes: Sequence[str] | None = VOLUME_SUFFIXES
) -> list[Path]:
    """Expand folders (recursively) into the files whose names end in ``suffixes``.

    ``suffixes=None`` takes every file (DICOM files have any name). Hidden files are left out.

    Files named directly are kept whatever their suffix, and so are paths that do not exist, so
    that the command reports what is wrong with each while it goes on with the others. Symbolic
    links to folders are followed (``find -L``), each real folder once, so a loop ends. The
    result is sorted within each folder and free of duplicates.
    """
    found: list[Path] = []
    ends = None if suffixes is None else tuple(s.lower() for s in suffixes)
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(_walk(path, ends, set()))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def _walk(folder: Path, ends: tuple[str, ...] | None, seen: set[str]) -> list[Path]:
    """Files under ``folder`` (sorted, hidden ones left out), following folder links once."""
    real = os.path.realpath(folder)
    if real in seen:
        return []
    seen.add(real)
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return []
    files, folders = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():                      # follows links
                folders.append(Path(entry.path))
            elif entry.is_file() and (ends is None or entry.name.lower().endswith(ends)):
                files.append(Path(entry.path))
        except OSError:
            continue
    result = files
    for sub in folders:
        result.extend(_walk(sub, ends, seen))
    return sorted(result)


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """Parse ``--shard i/n`` (1-based ``i``) into ``(i, n)``; ``None`` passes through."""
    if spec is None:
        return None
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard {spec!r} is not of the form i/n, e.g. --shard 2/8") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard {spec}: i must be between 1 and n")
    return index, count


def take_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The deterministic share of ``items`` for ``shard = (i, n)``: every n-th item from i."""
    if shard is None:
        return list(items)
    index, count = shard
    return list(items[index - 1 :: count])


def check_writable(path: str | os.PathLike, *, force: bool) -> None:
    """Raise :class:`OutputExistsError` if any file of the output exists and not ``force``."""
    for part in companion_paths(path):
        if part.exists() and not force:
            raise OutputExistsError(
                "output exists already", path=part, hint="pass --force to overwrite it"
            )


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> None:
    """Raise :class:`InputError` when ``path`` would land outside the folder ``root``.

    Symbolic links among the folders between ``root`` and ``path`` are resolved: a link inside
    the output folder that points elsewhere must not carry outputs out of it.
    """
    path, root = Path(path), Path(root)
    real_root = root.resolve()
    folder = path.parent.resolve()
    if not folder.is_relative_to(real_root):
        raise InputError(f"the output would be written outside {root} (through a symbolic link "
                         f"to {folder})", path=path,
                         hint="remove the link or choose another output folder")


@functools.cache
def _host() -> str:
    """This machine's name as it appears in temporary file names (``gethostname``; read from
    ``uname`` where there is one, which spares importing socket)."""
    if hasattr(os, "uname"):
        name = os.uname().nodename
    else:
        import socket

        name = socket.gethostname()
    return re.sub(r"[^A-Za-z0-9-]", "-", name) or "host"


def _temp_prefix(path: Path) -> str:
    """``.<name>.~<host>~<pid>~`` of this process's temporary files for ``path``."""
    return f".{path.name}.~{_host()}~{os.getpid()}~"


def remove_stale_temps(path: str | os.PathLike) -> int:
    """Remove temporary files and folders of ``path`` left by killed runs on this machine.

    A temporary output whose process is still running (another medtool writing the same
    output) is left alone. Returns how many were removed.
    """
    path = Path(path)
    host = _host()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if (match is None or match["name"] != path.name or match["host"] != host
                or _alive(int(match["pid"]))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


#: Serial numbers of this process's temporary files (with the pid, their names are unique
#: among live processes; a name taken by a file of a dead process is skipped).
_TEMP_SERIAL = itertools.count()
#: How the temporary files are created: new (never an existing file or link), write only.
_TEMP_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
#: Their permissions before the umask: those of a file that ``open(path, "w")`` creates, so
#: that the finished file needs no chmod.
_FILE_MODE = 0o666


#: ... and of a folder that ``mkdir`` creates.
_FOLDER_MODE = 0o777


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_file(path: str | os.PathLike) -> Path:
    """Create an empty hidden temporary file beside ``path`` (same folder, suffix kept)."""
    temp, handle = open_temporary(path)
    os.close(handle)
    return temp


def open_temporary(path: str | os.PathLike) -> tuple[Path, int]:
    """Create a hidden temporary file beside ``path``; its path and an open descriptor to
    write it (the caller closes it).

    The name is ``.<name>.~<host>~<pid>~<serial>.tmp<suffix>``: unique while this process
    lives, and recognised by :func:`remove_stale_temps` once it is gone.
    """
    path = Path(path)
    suffix = volume_suffix(path) or path.suffix
    prefix = os.path.join(path.parent, _temp_prefix(path))
    while True:
        temp = f"{prefix}{next(_TEMP_SERIAL):x}.tmp{suffix}"
        try:
            return Path(temp), os.open(temp, _TEMP_FLAGS, _FILE_MODE)
        except FileExistsError:                         # left by a dead process of this pid
            continue


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the suffix of ``path`` (libraries choose formats by it). On any
    error the temporary file is removed and ``path`` is left as it was; temporary files of
    ``path`` left by a killed run are removed first.
    """
    path = Path(path)
    check_writable(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    temp_path = temporary_file(path)
    try:
        yield temp_path
        publish(temp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` when the block succeeds.

    An existing ``path`` is replaced only with ``force=True`` (and only once the new content is
    complete). On any error the temporary folder is removed.
    """
    path = Path(path)
    check_writable(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    temp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(temp, _FOLDER_MODE & ~_umask())            # mkdtemp's 0700 would stay the folder's
    try:
        yield temp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, trash / path.name)
            os.replace(temp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(temp, path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path, force=force) as temp:
        temp.write_text(text, encoding="utf-8")


def publish(temp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the complete temporary file ``temp`` to ``path`` (it was created with the
    usual permissions: :data:`_FILE_MODE` less the umask)."""
    os.replace(temp, path)


def mirror_path(source: Path, roots: Iterable[Path], out_dir: Path, suffix: str | None, *,
                image_suffix: str = "") -> Path:
    """Output path for ``source`` inside ``out_dir``, mirroring its place under its input root.

    ``roots`` are the folders the user named; a file named directly lands at the top level.
    The name gets ``suffix`` instead of its volume suffix (and loses ``image_suffix`` after
    the case id, see :func:`case_of_image`); ``suffix=None`` keeps the name as it
    is (DICOM files, whose names may hold dots: ``1.2.840.113619.2.55.3.dcm``).
    """
    def renamed(path: Path) -> str:
        if suffix is None:
            return path.name
        return (case_of_image(path, image_suffix) or strip_suffix(path)) + suffix

    for root in roots:
        if root.is_dir() and source.is_relative_to(root):
            relative = source.relative_to(root)
            return out_dir / relative.parent / renamed(relative)
    return out_dir / renamed(source)
