"""``medtool view``: PNG pictures of volumes with mask outlines or heat maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Draw volumes as PNG: a montage of slices, or three orthogonal planes through a point.

Windowed ([bold]--window LOW HIGH[/bold] or [bold]--preset[/bold] lung/mediastinum/bone;
default the lung window for HU, 1st-99th percentile otherwise), scaled by the true voxel
spacing, radiological orientation (patient's right on the left, superior up) whatever the
array direction. [bold]--overlay[/bold] (repeatable) draws a mask as coloured outlines with a
legend, or a float map as a heat map with a colour bar; an overlay on another grid is
resampled onto the image. With several inputs OUT is a folder (OUT/<name>.png) and an overlay
folder is matched by name. Slices: evenly over the masks' extent, where a heat map is
strongest, or evenly over the volume.

Example: [bold]medtool view hu/case_001.npy case_001.png --overlay masks/case_001.npy --slices 6[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "view", shared=common.FILE_COMMAND, help=_HELP)
    def view(
        inputs: common.paths_argument("Volume files or folders."),
        out: Annotated[Path, typer.Argument(help="OUT.png for one input, else a folder.", show_default=False)],
        *,
        overlay: Annotated[list[Path] | None, typer.Option("--overlay", help="Mask or map (file or folder).")] = None,
        plane: Annotated[str, typer.Option("--plane", help="axial, coronal, sagittal or ortho.")] = "axial",
        slices: Annotated[int, typer.Option("--slices", "-n", min=1, help="Slices in the montage.")] = 6,
        point: Annotated[tuple[int, int, int] | None, typer.Option(
            "--point", metavar="Z Y X", help="Voxel the ortho planes cross [default: mask centre].")] = None,
        window: Annotated[tuple[float, float] | None, typer.Option("--window", metavar="LOW HIGH",
                                                                   help="Display window.")] = None,
        preset: Annotated[str | None, typer.Option("--preset", help="lung, mediastinum or bone window.")] = None,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..batch import run_batch
        from ..errors import UsageError, check_choice
        from ..ingest import plan_outputs
        from ..view import PLANES, ViewJob, draw, overlay_for

        if window is not None and preset is not None:
            raise UsageError("give --window or --preset, not both")
        check_choice("--plane", plane, PLANES)
        pairs = plan_outputs(inputs, out, suffix=lambda source: ".png", shard=opts.shard,
                             single_suffixes=(".png",))
        roots = [Path(p) for p in inputs]
        jobs, failures = [], []
        for source, path in pairs:
            try:
                layers = [overlay_for(source, Path(o), roots) for o in overlay or []]
            except Exception as exc:  # noqa: BLE001 - MedtoolError only, reported per input
                from ..errors import MedtoolError

                if not isinstance(exc, MedtoolError):
                    raise
                exc.path = exc.path or str(source)
                opts.report(exc)
                failures.append((str(source), exc))
                continue
            jobs.append(ViewJob(source, path, layers, plane, slices, point,
                                preset if preset is not None else window, opts.force))
        outcome = run_batch(draw, jobs, workers=opts.workers, description="drawing",
                            progress=opts.show_progress, on_error=opts.report,
                            name=lambda job: str(job.source))
        written = [r for r in outcome.results if r is not None]
        failures += outcome.failures
        if json:
            common.print_json({"written": written, "failed": [n for n, _ in failures]})
        elif not opts.quiet:
            for row in written:
                common.stdout.print(row["output"], highlight=False)
        if not pairs:
            from ..errors import InputError

            raise InputError("no volume files found", path=" ".join(map(str, inputs)),
                             hint="give .npy, .npz, .nii or .nii.gz files or folders")
        return common.report_failures(failures, len(pairs))
