"""``medtool hu``: stored scanner values to Hounsfield units, windowed or normalised."""

from __future__ import annotations

from typing import Annotated

import typer

from . import common

_HELP = """Convert raw CT values to int16 Hounsfield units.

Input: volumes from medtool dicom2npy (any format) or DICOM folders. Each slice's own
RescaleSlope/Intercept is applied; padding (PixelPaddingValue / PixelPaddingRangeLimit,
compared in stored values, stored -2000, and anything at or below -2000 HU) becomes air
(-1000 HU); values are clipped to [-1024, 32767]. A volume that is HU already (its metadata
says so) is not converted twice; one whose values cannot be HU (all >= 0 and no rescale) is
an error.

[bold]--window LOW HIGH[/bold] or [bold]--preset[/bold] (lung -1350..150, mediastinum
-160..240, bone -500..1300) clips; [bold]--normalize[/bold] scales the window (default
-1000..400) to float32 [0, 1].

Example: [bold]medtool hu volumes/ hu/ --workers 2[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "hu", shared=common.FILE_COMMAND, help=_HELP)
    def hu(
        inputs: common.paths_argument("Volumes or DICOM folders."),
        out: common.Output,
        *,
        window: Annotated[tuple[float, float] | None, typer.Option("--window", metavar="LOW HIGH",
                                                                   help="Clip to this HU range.")] = None,
        preset: Annotated[str | None, typer.Option("--preset", help="lung, mediastinum or bone window.")] = None,
        normalize: Annotated[bool, typer.Option("--normalize", help="Scale the window to float32 [0, 1].")] = False,
        rescale: Annotated[tuple[float, float] | None, typer.Option(
            "--rescale", metavar="SLOPE INTERCEPT",
            help="Rescale for volumes without one in their metadata (files from other tools).")] = None,
        fmt: Annotated[str | None, typer.Option("--format", help="Output format [default: the input's; npy for DICOM].")] = None,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..ingest import convert_hu

        report = convert_hu(inputs, out, window=window, preset=preset, normalize=normalize,
                            rescale=rescale, fmt=fmt, workers=opts.workers, force=opts.force,
                            shard=opts.shard, step=opts.step(), progress=opts.show_progress,
                            on_error=opts.report,
                            on_notice=None if opts.quiet else common.report_notice)
        from .dicom2npy import report_conversion

        return report_conversion(report, json=json, opts=opts)
