"""``medtool resample``: volumes onto a new spacing or onto another volume's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Resample volumes onto a new grid with exact geometry.

Voxel-centre convention: the origin is the centre of the first voxel (as DICOM and ITK). A
new [bold]--spacing Z Y X[/bold] keeps the physical extent (n x spacing) up to rounding of the
voxel count and keeps the grid centred on the same point. [bold]--like REF[/bold] takes REF's
grid exactly (shape, spacing, origin, direction; oblique too), so resampling back with --like
ORIGINAL lands on the original voxels. [bold]--shape ROWS COLS[/bold] gives a fixed in-plane
size (spacing = extent / size); [bold]--crop-z N[/bold] keeps the N centre slices (padding when
there are fewer).

Images are interpolated linearly ([bold]--order 3[/bold]: cubic B-spline) and smoothed with a
Gaussian (sigma = (factor - 1) / 2 voxels) along axes that become coarser; masks (boolean,
uint8/int8 labels, units 'label', or [bold]--mask[/bold]) use nearest neighbour and keep their
values. Voxels outside the input get [bold]--pad[/bold]: -1000 (air) for HU images, 0 for
masks, the input's minimum otherwise. Same values as SimpleITK's ResampleImageFilter on the
same grid.

Example: [bold]medtool resample hu/ iso/ --spacing 1 1 1 --workers 2[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "resample", shared=("device", *common.FILE_COMMAND), help=_HELP)
    def resample(
        inputs: common.paths_argument("Volume files or folders."),
        out: common.Output,
        *,
        spacing: Annotated[tuple[float, float, float] | None, typer.Option(
            "--spacing", metavar="Z Y X", help="New voxel size in mm.")] = None,
        like: Annotated[Path | None, typer.Option("--like", metavar="REF",
                                                  help="Take this volume's grid exactly.")] = None,
        shape: Annotated[tuple[int, int] | None, typer.Option(
            "--shape", metavar="ROWS COLS", help="Fixed in-plane size (e.g. 224 224).")] = None,
        crop_z: Annotated[int | None, typer.Option("--crop-z", metavar="N", min=1,
                                                   help="Keep the N centre slices.")] = None,
        order: Annotated[int | None, typer.Option(
            "--order", help="0 nearest, 1 linear, 3 cubic [default: 1 images, 0 masks].")] = None,
        mask: Annotated[bool | None, typer.Option(
            "--mask/--image", help="Treat inputs as label masks / images [default: detected].")] = None,
        pad: Annotated[float | None, typer.Option("--pad", help="Value outside the input.")] = None,
        antialias: Annotated[bool, typer.Option(
            "--antialias/--no-antialias", help="Smooth images along axes made coarser.")] = True,
        fmt: common.OutputFormat = None,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..errors import UsageError
        from ..ingest import map_volumes
        from ..resample import Resampler

        if like is None and spacing is None and shape is None and crop_z is None:
            raise UsageError("say what grid to resample to: --spacing Z Y X, --like REF, "
                             "--shape ROWS COLS or --crop-z N")
        transform = Resampler(spacing=spacing, like=like, shape=shape, crop_z=crop_z, order=order,
                              mask=mask, pad=pad, antialias=antialias, device=str(opts.torch_device()),
                              threads=common.threads_per_worker(opts.workers))
        transform.check()
        report = map_volumes(inputs, out, transform, fmt=fmt, workers=opts.workers,
                             force=opts.force, shard=opts.shard, step=opts.step(),
                             progress=opts.show_progress, on_error=opts.report,
                             description="resampling")
        return common.report_written(report, json=json, opts=opts)
