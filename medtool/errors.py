"""Exceptions that the command line turns into one line on stderr.

Library code raises these for anything a user can fix (a missing file, a file that is not an
image, an option that makes no sense); the CLI prints ``error: <file>: <what>, <what to do>``
and exits with the class's exit code. Programming errors stay ordinary exceptions and show a
traceback.
"""

from __future__ import annotations

from os import PathLike
from typing import Any, Iterable

#: Exit status when every input was processed.
EXIT_OK = 0
#: Exit status when at least one input failed (the others were still processed).
EXIT_INPUT = 1
#: Exit status for usage errors: bad options, impossible requests, a device that is not there.
EXIT_USAGE = 2


#: Longest text of a library's exception quoted inside an error line.
REASON_LIMIT = 400


def reason(exc: BaseException, *, limit: int = REASON_LIMIT, typed: bool = True) -> str:
    """``exc`` as one short line for an error message: ``Type: text``.

    Libraries put several lines into a message (pydicom lists each decoder plugin's failure on
    its own line, and appends a formatted traceback to write errors): lines are joined with
    ``; `` and anything from ``Traceback`` on is dropped, so an error stays one line.
    """
    text = str(exc).split("Traceback (most recent call last)")[0]
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    text = text.replace(":;", ":").rstrip(".;: ")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if not typed:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MedtoolError(Exception):
    """Base class of every error a user can act on.

    Parameters
    ----------
    what
        What was wrong, in a few words ("not a volume file").
    path
        The file the error is about, if any.
    hint
        What to do about it ("run medtool hu first").
    """

    exit_code = EXIT_INPUT

    def __init__(self, what: str, *, path: str | PathLike | None = None, hint: str | None = None):
        super().__init__(what)
        self.what = what
        self.path = None if path is None else str(path)
        self.hint = hint

    def __str__(self) -> str:
        text = self.what if self.path is None else f"{self.path}: {self.what}"
        return text if not self.hint else f"{text}, {self.hint}"

    def __reduce__(self):  # keep path/hint when sent back from a worker process
        return (_rebuild, (type(self), self.what, self.path, self.hint))


def _rebuild(cls, what, path, hint):
    return cls(what, path=path, hint=hint)


class InputError(MedtoolError):
    """An input file is missing, unreadable, or not what the command needs."""


class OutputExistsError(MedtoolError):
    """An output file exists already and ``--force`` was not given."""


class UsageError(MedtoolError):
    """The options do not make sense together, or ask for something impossible."""

    exit_code = EXIT_USAGE


class DeviceError(UsageError):
    """The requested compute device does not exist on this machine."""


class InternalError(MedtoolError):
    """A bug met while processing one input: reported for that input while a batch goes on.

    ``traceback`` keeps the formatted traceback (it survives the trip back from a worker
    process), printed under ``--debug``.
    """

    def __init__(self, what: str, *, path: str | PathLike | None = None, hint: str | None = None,
                 traceback: str | None = None):
        super().__init__(what, path=path, hint=hint)
        self.traceback = traceback

    @classmethod
    def from_exception(cls, exc: BaseException, *, path: str | PathLike | None = None) -> "InternalError":
        """The error for an unexpected exception ``exc`` (a bug, or a library's panic)."""
        import traceback

        text = "".join(traceback.format_exception(exc))
        return cls(f"internal error: {reason(exc)}", path=path,
                   hint="run again with --debug and report the traceback", traceback=text)

    def __reduce__(self):
        return (_rebuild_internal, (self.what, self.path, self.hint, self.traceback))


def _rebuild_internal(what, path, hint, traceback):
    return InternalError(what, path=path, hint=hint, traceback=traceback)


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise :class:`UsageError` ``"OPTION VALUE: choose one of A, B"`` unless ``value`` is one
    of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise UsageError(f"{option} {value}: choose one of {', '.join(map(str, choices))}")
