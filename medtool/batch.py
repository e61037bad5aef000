"""Run one function over many inputs, in parallel processes, with a progress bar.

Failures of one input (any :class:`~medtool.errors.MedtoolError`) are collected and the batch
goes on; the command reports them at the end and exits 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from .errors import InternalError, MedtoolError

#: Small items (``run_batch(..., small=True)``) go to the workers in chunks: about this many
#: chunks per worker (for balance), of at most :data:`MAX_CHUNK` items.
CHUNKS_PER_WORKER = 8
MAX_CHUNK = 64
#: From this many small items on, a batch left to choose runs one process per core (starting
#: the processes costs about as much as this many files).
AUTO_PARALLEL_ITEMS = 64


def auto_workers(items: int) -> int:
    """Worker processes for a batch of ``items`` small items whose size was not chosen: one
    per core from :data:`AUTO_PARALLEL_ITEMS` on, else 1."""
    return max(1, os.cpu_count() or 1) if items >= AUTO_PARALLEL_ITEMS else 1


@dataclass
class BatchResult:
    """What a batch produced: results in input order, and the inputs that failed."""

    results: list[Any] = field(default_factory=list)
    failures: list[tuple[str, MedtoolError]] = field(default_factory=list)
    #: The worker processes it ran on (1: this process).
    workers: int = 1

    @property
    def ok(self) -> bool:
        return not self.failures


def run_batch(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int | None = 1,
    description: str = "working",
    progress: bool = True,
    on_error: Callable[[MedtoolError], None] | None = None,
    name: Callable[[Any], str] = str,
    on_result: Callable[[int, Any], None] | None = None,
    small: bool = False,
) -> BatchResult:
    """Apply ``function`` to every item; collect results and per-item user errors.

    Parameters
    ----------
    function
        A module-level function (it is sent to worker processes when ``workers > 1``).
    items
        The inputs, one call each.
    workers
        Number of processes; 1 runs in this process; ``None``: :func:`auto_workers` for small
        items, else 1. Never more than the items or the cores.
    description
        Label of the progress bar (shown on stderr unless ``progress`` is false).
    on_error
        Called with each :class:`MedtoolError` as it happens (the CLI prints it at once).
    name
        How an item is named in the list of failures.
    on_result
        Called with ``(index, result)`` as each result arrives; the result is then not kept
        (``results`` holds ``None``), so a stream of large results stays bounded in memory.
    small
        The items take about a millisecond each (one DICOM file): they are sent to the
        workers in chunks, as one message per item would cost as much as the work. Errors and
        results then arrive a chunk at a time.

    Any other exception is a bug: it is reported as an
    :class:`~medtool.errors.InternalError` of that item (its traceback kept for ``--debug``)
    and the batch goes on. Ctrl-C and SIGTERM stop the batch.
    """
    if workers is None:
        workers = auto_workers(len(items)) if small else 1
    workers = max(1, min(workers, len(items), os.cpu_count() or 1))
    outcome = BatchResult(results=[None] * len(items), workers=workers)
    with ProgressBar(description, len(items), progress) as advance:
        for index, result in _results(function, items, workers, small=small):
            if isinstance(result, MedtoolError):
                if result.path is None:
                    result.path = name(items[index])
                outcome.failures.append((name(items[index]), result))
                if on_error is not None:
                    on_error(result)
            elif on_result is not None:
                on_result(index, result)
            else:
                outcome.results[index] = result
            advance()
    outcome.failures.sort(key=lambda failure: failure[0])
    return outcome


def _call(function: Callable[[Any], Any], item: Any) -> Any:
    try:
        return function(item)
    except MedtoolError as exc:
        return exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:    # a bug, or a decoder's panic (pyo3 PanicException)
        return InternalError.from_exception(exc)


def _call_chunk(function: Callable[[Any], Any], chunk: Sequence[Any]) -> list[Any]:
    return [_call(function, item) for item in chunk]


def _results(function, items, workers: int, *, small: bool = False) -> Iterator[tuple[int, Any]]:
    if workers == 1:
        for index, item in enumerate(items):
            yield index, _call(function, item)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    size = (max(1, min(MAX_CHUNK, len(items) // (workers * CHUNKS_PER_WORKER))) if small
            else 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_call_chunk, function, items[start:start + size]): start
                   for start in range(0, len(items), size)}
        for future in as_completed(futures):
            for offset, result in enumerate(future.result()):
                yield futures[future] + offset, result


class ProgressBar:
    """Context manager yielding an ``advance()`` callable; a no-op when disabled."""

    def __init__(self, description: str, total: int, enabled: bool):
        self.description, self.total, self.enabled = description, total, enabled and total > 1
        self._progress = None

    def __enter__(self) -> Callable[[], None]:
        from .console import stderr

        if not self.enabled or not stderr.is_terminal:   # no bar in logs and pipes
            return lambda: None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=stderr.console, transient=True)
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()
