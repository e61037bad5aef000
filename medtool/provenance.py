"""The ``history`` entries every medtool step appends to the volumes it writes."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from typing import Any, Sequence

from . import __version__


def step(argv: Sequence[str] | None = None, **details: Any) -> dict[str, Any]:
    """One history entry: the command line, medtool version and UTC time (plus ``details``).

    The command line is the one the user typed (``medtool`` plus ``sys.argv[1:]``), so a step
    can be repeated by copying it.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    entry: dict[str, Any] = {
        "command": shlex.join(["medtool", *args]),
        "version": __version__,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    entry.update(details)
    return entry
