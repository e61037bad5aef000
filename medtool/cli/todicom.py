"""``medtool todicom``: label volumes to DICOM SEG or RTSTRUCT for viewers, PACS and planning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Write label volumes (masks made by medtool or elsewhere) as DICOM Segmentations or RT Structure Sets of the image series they were made on, for 3D Slicer, OHIF, a PACS or a planning system.

Each MASK is matched to the series under [bold]--ref[/bold] whose grid it is on (shape, spacing, orientation and position, as dicom2npy wrote it; a mask on another grid is refused: resample it with [bold]medtool resample --like[/bold] first); [bold]--series UID[/bold] picks one of several series on the same grid. The object references the source study, series, frame of reference and every image (anonymized images give anonymized references) and copies the patient and study attributes of the images.

[bold]--format dcm-seg[/bold] (highdicom): a binary SEG, segment N = label N, named from the mask's labels table, with SNOMED CT codes where medtool knows the structure (lung, right/left lung, heart, esophagus, spinal cord, trachea, tumour ...) and medtool as the algorithm; empty frames are left out; reading it back gives the mask exactly ([bold]--seg-type labelmap[/bold]: a Label Map Segmentation instead, one 8-bit frame per image). [bold]--format rtstruct[/bold] (pydicom): one ROI per label, closed planar contours on every image (scikit-image find_contours, outer and inner boundaries, read by the even-odd rule) in patient millimetres.

OUT is a folder (OUT/<mask name>_seg.dcm or _rtstruct.dcm) or, for one mask, a .dcm file. Put it beside the images to import both.

Example: [bold]medtool todicom masks/case_001_lungs.nii.gz --ref phantom/ct/case_001 out/ --format dcm-seg[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "todicom", shared=common.FILE_COMMAND, help=_HELP)
    def todicom(
        paths: common.paths_argument("Label volumes or folders, then the output folder (or .dcm file).",
                                     metavar="MASK... OUT"),
        *,
        ref: Annotated[list[Path], typer.Option("--ref", metavar="DICOM_DIR", show_default=False,
                                                help="The DICOM series the masks were made on (a folder, walked recursively; repeat for several).")],
        fmt: Annotated[str, typer.Option("--format", help="dcm-seg (DICOM Segmentation) or rtstruct (RT Structure Set).")] = "dcm-seg",
        series: Annotated[str | None, typer.Option("--series", metavar="UID", help="The SeriesInstanceUID to reference when several series share the mask's grid.")] = None,
        seg_type: Annotated[str, typer.Option("--seg-type", help="dcm-seg encoding: binary (one bit per voxel and segment; read everywhere) or labelmap (Label Map Segmentation: 8-bit segment numbers; newer readers).")] = "binary",
        manual: Annotated[bool, typer.Option("--manual", help="The masks were drawn by hand: no algorithm identification, MANUAL generation.")] = False,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..dicomlabels import Algorithm, write_masks
        from ..errors import InputError, UsageError

        if len(paths) < 2:
            raise UsageError("give at least one MASK and the OUT folder")
        *masks, out = paths
        report = write_masks(masks, ref, out, fmt=fmt, series_uid=series,
                             algorithm=Algorithm(manual=manual), seg_type=seg_type, force=opts.force,
                             workers=opts.workers, shard=opts.shard,
                             progress=opts.show_progress, on_error=opts.report)
        if json:
            common.print_json({"written": report.written,
                               "failed": [name for name, _ in report.failures]})
        elif report.written and not opts.quiet:
            from rich.table import Table

            table = Table(header_style="bold", box=None, pad_edge=False)
            for column in ("output", "format", "series", "labels"):
                table.add_column(column, overflow="fold")
            for row in report.written:
                table.add_row(row["output"], row["format"], row["series"],
                              ", ".join(f"{k} {v}" for k, v in row["labels"].items()))
            common.stdout.print(table)
        if not report.written and not report.failures:
            raise InputError("no mask files found", path=" ".join(map(str, masks)),
                             hint="give label volumes (.nii.gz, .npy, ...) or folders holding them")
        return common.report_failures(report.failures, max(report.files, 1))
