import pytest

from medtool.batch import run_batch
from medtool.errors import InputError


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


def test_bugs_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        run_batch(lambda v: 1 / v, [1, 0], progress=False)
