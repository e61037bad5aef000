"""``medtool lungmask``: right and left lung masks from HU volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Segment the lungs of chest CT volumes in Hounsfield units: 1 = right, 2 = left.

In 3D: the body first (outside air, the scanner bed and anything outside the field of view
excluded), air-like voxels inside it (below [bold]--threshold[/bold]), the trachea and main
bronchi tracked from the top and removed. Lung is chosen by anatomy: air regions that are
pure gas (median below -960 HU: the stomach, small bowel and colon) are not lung; the largest
of the rest is a lung, a second one beside it along z the other. Lungs that touch at the
anterior junction are split; right and left come from patient coordinates (not array
direction). Vessels, airways and nodules inside the lungs are filled, and so are large and
juxtapleural tumours the lung wraps around (not the heart, the mediastinum or the dome of
the diaphragm); [bold]--no-fill[/bold] keeps the raw air regions.

Works on chest, chest-abdomen-pelvis, lung bases only and apices only, with one lung,
emphysema (lung), pleural effusion (not lung), no bed, a field of view that cuts the body,
thick slices. A scan with no lung (abdomen only) is that file's one-line error, "no lung in
this scan", and the exit status is 1 (other files go on). It cannot see lung that holds no
air (consolidation, collapse), and tumours that touch the mediastinum or sit on the
diaphragm stay out. Input must be HU (medtool hu). Output: uint8 masks on the input's grid,
named as the inputs.

[bold]--apply VALUE[/bold] also writes <name>_masked.<ext>: the image with everything outside
the lungs set to VALUE (e.g. -1000). [bold]--binary[/bold] writes 0/1.

[bold]--method model --checkpoint RUN/best.pt[/bold] runs a lung model from [bold]medtool train --task segment[/bold] instead (as [bold]medtool predict --keep-largest 1[/bold] does: the checkpoint's spacing and normalisation, sliding windows, labels back on the input grid; CUDA when present). Classes named with right and left become 1 and 2, other classes 0; otherwise the model's labels are kept (a model trained on lungmask or phantom masks already has 1 right, 2 left). --threshold and --fill belong to the threshold method.

Examples:
  [bold]medtool lungmask hu/ masks/ --workers 2[/bold]
  [bold]medtool lungmask hu/ masks/ --method model --checkpoint runs/lungs/best.pt[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "lungmask", shared=common.FILE_COMMAND, help=_HELP)
    def lungmask(
        inputs: common.paths_argument("HU volume files or folders."),
        out: common.Output,
        *,
        threshold: Annotated[float, typer.Option("--threshold", help="Air-like below this HU.")] = -400.0,
        fill: Annotated[bool, typer.Option("--fill/--no-fill", help="Fill vessels and nodules inside the lungs.")] = True,
        binary: Annotated[bool, typer.Option("--binary", help="Write 0/1 instead of 1 right, 2 left.")] = False,
        apply: Annotated[float | None, typer.Option("--apply", metavar="VALUE",
                                                    help="Also write the image with the outside set to VALUE.")] = None,
        method: Annotated[str, typer.Option("--method", help="threshold, or model (with --checkpoint).")] = "threshold",
        checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Segmentation model for --method model.")] = None,
        fmt: common.OutputFormat = None,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..errors import UsageError
        from ..ingest import map_volumes
        from ..lungmask import METHODS, LungMasker, ModelLungMasker

        if method not in METHODS:
            raise UsageError(f"--method {method}: choose threshold or model")
        if method == "model":
            if checkpoint is None:
                raise UsageError("--method model needs --checkpoint RUN/best.pt (from medtool train --task segment)")
            transform = ModelLungMasker(str(checkpoint), binary=binary, apply=apply)
            transform.load()                         # a bad checkpoint fails once, before any file
        elif checkpoint is not None:
            raise UsageError("--checkpoint goes with --method model")
        else:
            transform = LungMasker(threshold=threshold, fill=fill, binary=binary, apply=apply)
        report = map_volumes(inputs, out, transform, fmt=fmt, extra=transform.extra,
                             workers=opts.workers, force=opts.force, shard=opts.shard,
                             step=opts.step(), progress=opts.show_progress,
                             on_error=opts.report, description="lungmask")
        return common.report_written(report, json=json, opts=opts)
