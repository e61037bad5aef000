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
