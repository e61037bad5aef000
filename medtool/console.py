"""The two rich consoles: results on stdout, logs, progress and errors on stderr."""

import sys

from rich.console import Console

#: Width of tables written to a pipe or file (a terminal uses its own width).
PIPE_WIDTH = 200

stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH)
stderr = Console(stderr=True, soft_wrap=True)
