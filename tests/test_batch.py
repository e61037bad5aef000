import pytest

from medtool.batch import run_batch
from medtool.errors import InputError, InternalError


def half(value):
    if value == 3:
        raise InputError("three is bad", hint="avoid it")
    if value == 5:
        raise InputError("five is bad", path="file5.nii")
    return value / 2


@pytest.mark.parametrize("workers", [1, 2])
def test_failures_are_collected_and_the_rest_runs(workers):
    seen = []
    outcome = run_batch(half, list(range(7)), workers=workers, progress=False, on_error=seen.append,
                        name=lambda v: f"item{v}")
    assert outcome.results == [0.0, 0.5, 1.0, None, 2.0, None, 3.0]
    assert [name for name, _ in outcome.failures] == ["item3", "item5"]
    assert str(outcome.failures[0][1]) == "item3: three is bad, avoid it"   # named by the item
    assert str(outcome.failures[1][1]) == "file5.nii: five is bad"
    assert len(seen) == 2 and not outcome.ok


def inverse(value):
    return 1 / value


class Panic(BaseException):
    """Like pyo3's PanicException: not an Exception."""


def panics(value):
    if value == 0:
        raise Panic("index out of bounds")
    return value


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bug_is_that_items_error_and_the_batch_goes_on(workers):
    outcome = run_batch(inverse, [1, 0, 4], workers=workers, progress=False,
                        name=lambda v: f"item{v}")
    assert outcome.results == [1.0, None, 0.25]
    (name, error), = outcome.failures
    assert name == "item0" and isinstance(error, InternalError)
    assert str(error).startswith("item0: internal error: ZeroDivisionError: division by zero")
    assert "--debug" in str(error) and "1 / value" in error.traceback   # kept for --debug
    panicked = run_batch(panics, [0, 2], workers=workers, progress=False)
    assert panicked.results == [None, 2]
    assert "internal error: Panic: index out of bounds" in str(panicked.failures[0][1])


def test_ctrl_c_stops_the_batch():
    def interrupt(value):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(interrupt, [1, 2], progress=False)


def pid_and_half(value):
    import os

    if value == 100:
        raise InputError("a hundred is bad")
    return os.getpid(), value / 2


def test_small_items_go_in_chunks_and_keep_their_order_and_errors(monkeypatch):
    """Small items are sent in chunks (fewer messages than items); each result still lands at
    its index, and one bad item in a chunk fails alone."""
    from concurrent.futures import ProcessPoolExecutor

    from medtool import batch

    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)  # two workers on any machine
    sent = []
    submit = ProcessPoolExecutor.submit
    monkeypatch.setattr(ProcessPoolExecutor, "submit",
                        lambda self, fn, *args: sent.append(args) or submit(self, fn, *args))
    items = list(range(300))
    outcome = run_batch(pid_and_half, items, workers=2, progress=False, small=True,
                        name=lambda v: f"item{v}")
    size = 300 // (2 * batch.CHUNKS_PER_WORKER)              # 18 items a chunk
    assert len(sent) == -(-300 // size) and all(len(chunk) <= size for _, chunk in sent)
    assert [r[1] if r else None for r in outcome.results] == [
        None if v == 100 else v / 2 for v in items]
    assert [name for name, _ in outcome.failures] == ["item100"]
    assert outcome.workers == 2 and len({r[0] for r in outcome.results if r}) <= 2


def test_a_batch_left_to_choose_runs_on_every_core_only_for_many_small_items(monkeypatch):
    from medtool import batch

    monkeypatch.setattr(batch.os, "cpu_count", lambda: 4)
    assert batch.auto_workers(batch.AUTO_PARALLEL_ITEMS - 1) == 1
    assert batch.auto_workers(batch.AUTO_PARALLEL_ITEMS) == 4
    few = run_batch(half, [0, 1, 2], workers=None, progress=False, small=True)
    assert few.workers == 1 and few.results == [0.0, 0.5, 1.0]
    heavy = run_batch(half, list(range(6)) * 20, workers=None, progress=False)
    assert heavy.workers == 1                           # not small: one process unless asked
