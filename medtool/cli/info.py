"""``medtool info``: what is in a volume file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from . import common


def register(app: typer.Typer) -> None:
    @common.command(app, "info", shared=("workers",), short_help="Show shape, geometry, value range and history of volumes.")
    def info(
        files: Annotated[list[Path], typer.Argument(help="Volume files or folders (walked recursively).")],
        *,
        json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of tables.")] = False,
        opts: common.Options,
    ) -> int:
        """Show shape, dtype, spacing, origin, orientation, value range, units and history.

        Example: [bold]medtool info phantom/truth/case_001_lungs.nii.gz[/bold]
        """
        from ..batch import run_batch
        from ..files import find_files
        from ..info import describe_file

        paths = find_files(files)
        if not paths:
            raise InputError("no volume files found", path=" ".join(map(str, files)),
                             hint="medtool info reads .nii.gz, .nii, .npy and .npz files")
        outcome = run_batch(describe_file, paths, workers=opts.workers, description="reading",
                            progress=opts.show_progress, on_error=opts.report)
        rows = [row for row in outcome.results if row is not None]
        if json:
            common.print_json(rows)
        elif rows:
            _print_tables(rows)
        return common.report_failures(outcome.failures, len(paths))


def _fmt(values, digits: int = 4) -> str:
    return " x ".join(f"{v:.{digits}g}" for v in values)


def _print_tables(rows: list[dict]) -> None:
    from rich.table import Table

    if len(rows) > 1:
        table = Table(header_style="bold", box=None, pad_edge=False)
        table.add_column("file", overflow="fold")
        for name in ("shape", "dtype", "spacing (mm)", "orient.", "range", "units"):
            table.add_column(name, no_wrap=True)
        for row in rows:
            table.add_row(row["file"], _fmt(row["shape"]), row["dtype"], _fmt(row["spacing"]),
                          row["orientation"], f"{row['min']} .. {row['max']}", row["units"])
        common.stdout.print(table)
        return
    row = rows[0]
    table = Table(show_header=False, box=None, pad_edge=False, title=row["file"],
                  title_justify="left", title_style="bold")
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("shape", f"{_fmt(row['shape'])}  ({row['axes']})")
    table.add_row("dtype", row["dtype"])
    table.add_row("spacing", f"{_fmt(row['spacing'], 6)} mm  ({row['axes']})")
    table.add_row("origin", f"{_fmt(row['origin'], 6)} mm  (x y z, LPS)")
    table.add_row("orientation", row["orientation"])
    table.add_row("range", f"{row['min']} .. {row['max']}")
    table.add_row("units", row["units"])
    if row["modality"]:
        table.add_row("modality", str(row["modality"]))
    for i, entry in enumerate(row["history"], 1):
        table.add_row("history" if i == 1 else "", f"{entry.get('time', '?')}  {entry.get('command', '?')}")
    if not row["history"]:
        table.add_row("history", "(none)")
    common.stdout.print(table)
