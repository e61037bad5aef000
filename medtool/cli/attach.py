"""``medtool attach``: arrays without geometry get the geometry of their images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Give arrays without geometry the geometry of their images: coursework and Kaggle masks (an .npz under any key, a bare .npy) or a NIfTI whose header is known to be wrong.

Each SRC is matched to the image of the same case id (file name without its suffix) in [bold]--like[/bold] (a folder of volumes, or one volume), put in medtool's (z, y, x) order ([bold]--axes ORDER[/bold]: the order the array's axes are in, e.g. xyz), flipped along each [bold]--flip AXIS[/bold] (z, y or x), checked against the image's shape and written to OUT/<case><--suffix> in the image's format (or [bold]--format[/bold]). Integer arrays become uint8 label volumes. The input is never modified.

An orientation audit compares the fit of the mask to its image (a homogeneous region inside each label, a sharp change across its border) as attached and flipped or transposed; when another orientation fits markedly better, a [bold]warning:[/bold] line names it: a flipped mask passes every other check.

Example: [bold]medtool attach Segmentations/ --like hu/ masks/ --key Masks --flip y[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "attach", shared=("workers", "force"), help=_HELP)
    def attach(
        paths: common.paths_argument("Array files or folders, then the output folder (or file).", metavar="SRC... OUT"),
        *,
        like: Annotated[Path, typer.Option("--like", metavar="IMAGES", show_default=False,
                                           help="The images: a folder of volumes (matched by case id) or one volume.")],
        key: Annotated[str | None, typer.Option("--key", help="The .npz entry [default: its only one].")] = None,
        axes: Annotated[str, typer.Option("--axes", metavar="ORDER", help="The order of the array's axes (zyx, xyz, ...).")] = "zyx",
        flip: Annotated[list[str] | None, typer.Option("--flip", metavar="AXIS", help="Flip along this axis (z, y, x); repeat for several.")] = None,
        suffix: Annotated[str, typer.Option("--suffix", help="Added to each output name after the case id (e.g. _lungs).")] = "",
        fmt: Annotated[str | None, typer.Option("--format", help="Output format [default: the image's].")] = None,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..attach import attach_files
        from ..errors import UsageError
        from ..ingest import Report

        if len(paths) < 2:
            raise UsageError("give at least one SRC and the OUT folder")
        *sources, out = paths
        outcome = attach_files(sources, like, out, key=key, axes=axes, flips=flip or [], fmt=fmt,
                               suffix=suffix, force=opts.force, workers=opts.workers, step=opts.step(),
                               progress=opts.show_progress, on_error=opts.report)
        rows = [row for row in outcome.results if row is not None]
        for row in rows:
            if row.get("warning") and not opts.quiet:
                common.stderr.print(f"[yellow]warning:[/yellow] {row['series']}: {row['warning']}", highlight=False)
        report = Report(written=rows, failures=list(outcome.failures), files=len(outcome.results),
                        inputs=[str(s) for s in sources])
        return common.report_written(report, json=json, opts=opts)
