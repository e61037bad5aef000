"""Input discovery and safe output writing.

Every command writes through :func:`atomic_output`: the data goes to a temporary file in the
destination folder and is renamed into place only when complete, so an interrupted run never
leaves a half-written file, and an existing output is only replaced with ``force=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

from .errors import OutputExistsError, UsageError

#: Volume file suffixes medtool reads and writes, longest first.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz")

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


def companion_paths(path: str | os.PathLike) -> list[Path]:
    """Every file that makes up the volume at ``path`` (``.npy`` has its ``.json`` sidecar)."""
    path = Path(path)
    if volume_suffix(path) == ".npy":
        return [path, sidecar_path(path)]
    return [path]


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
    that the command reports what is wrong with each while it goes on with the others. The
    result is sorted within each folder and free of duplicates.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not p.name.startswith(".")
                and (suffixes is None or p.name.lower().endswith(tuple(suffixes)))
            )
            found.extend(inside)
        else:
            found.append(path)
    return list(dict.fromkeys(found))


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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the suffix of ``path`` (libraries choose formats by it). On any
    error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_writable(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = volume_suffix(path) or path.suffix
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    temp_path = Path(temp)
    try:
        yield temp_path
        os.chmod(temp_path, 0o666 & ~_umask())
        os.replace(temp_path, path)
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
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def mirror_path(source: Path, roots: Iterable[Path], out_dir: Path, suffix: str | None) -> Path:
    """Output path for ``source`` inside ``out_dir``, mirroring its place under its input root.

    ``roots`` are the folders the user named; a file named directly lands at the top level.
    The name gets ``suffix`` instead of its volume suffix; ``suffix=None`` keeps the name as it
    is (DICOM files, whose names may hold dots: ``1.2.840.113619.2.55.3.dcm``).
    """
    def renamed(path: Path) -> str:
        return path.name if suffix is None else strip_suffix(path) + suffix

    for root in roots:
        if root.is_dir() and source.is_relative_to(root):
            relative = source.relative_to(root)
            return out_dir / relative.parent / renamed(relative)
    return out_dir / renamed(source)
