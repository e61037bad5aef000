"""The two rich consoles: results on stdout, logs, progress and errors on stderr.

Each is made on its first use, so that a command's start-up does not import rich's console
(about 0.015 s) before its work begins.
"""

from __future__ import annotations

import sys
from typing import Any

#: Width of tables written to a pipe or file (a terminal uses its own width).
PIPE_WIDTH = 200


class _OnFirstUse:
    """Stands in for a ``rich.console.Console`` and makes it when first asked for anything."""

    def __init__(self, make) -> None:
        object.__setattr__(self, "_make", make)
        object.__setattr__(self, "_console", None)

    @property
    def console(self):
        """The real console (made now if it was not yet)."""
        if self._console is None:
            object.__setattr__(self, "_console", self._make())
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.console, name, value)

    def __enter__(self):
        return self.console.__enter__()

    def __exit__(self, *exc):
        return self.console.__exit__(*exc)


def _stdout():
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


stdout = _OnFirstUse(_stdout)
stderr = _OnFirstUse(_stderr)
