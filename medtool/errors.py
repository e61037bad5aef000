"""Exceptions that the command line turns into one line on stderr.

Library code raises these for anything a user can fix (a missing file, a file that is not an
image, an option that makes no sense); the CLI prints ``error: <file>: <what>, <what to do>``
and exits with the class's exit code. Programming errors stay ordinary exceptions and show a
traceback.
"""

from __future__ import annotations

from os import PathLike

#: Exit status when every input was processed.
EXIT_OK = 0
#: Exit status when at least one input failed (the others were still processed).
EXIT_INPUT = 1
#: Exit status for usage errors: bad options, impossible requests, a device that is not there.
EXIT_USAGE = 2


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
