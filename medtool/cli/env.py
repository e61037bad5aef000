"""``medtool env``: versions, decoders and devices, for bug reports and set-up checks."""

from __future__ import annotations

from typing import Annotated

import typer

from . import common


def register(app: typer.Typer) -> None:
    @common.command(app, "env", shared=("device",))
    def env(
        *,
        json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
        opts: common.Options,
    ) -> None:
        """Show the versions medtool runs with, which compressed-DICOM decoders and peer tools
        are installed, and the device [bold]--device[/bold] resolves to (an error if it does
        not exist here).

        Example: [bold]medtool env --device cuda[/bold]
        """
        from ..environment import report

        facts = report(opts.torch_device())
        if json:
            common.print_json(facts)
            return
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="cyan")
        table.add_column()
        for key, value in facts.items():
            table.add_row(key, "-" if value is None else str(value))
        common.stdout.print(table)
