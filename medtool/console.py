"""The two rich consoles: results on stdout, logs, progress and errors on stderr."""

from rich.console import Console

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)
