"""``medtool dicom2npy``: DICOM series to volume files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Convert DICOM series into volume files, one per series, with exact geometry.

Folders are walked recursively, any file names. Files that are not image volumes are skipped
and counted in one note (listed with --verbose): non-DICOM files, DICOMDIRs, objects without
pixel data (SR dose reports, presentation states, RT plans, key objects, raw data) and colour
images (dose screens, exam summaries); an error is a damaged image.

Labels: each RT Structure Set (RTSTRUCT) and DICOM Segmentation (SEG: binary, fractional,
label map) becomes a uint8 label volume on the grid of the image series it references (matched
by its referenced images, series and FrameOfReferenceUID): OUT/<that series' case>_rtstruct
or _seg (_2, _3 for more objects of one series, in file-name order), one label per ROI or
segment, the names and colours in the metadata (labels, label_colours). RTSTRUCT contours are filled on their image
planes, holes by the even-odd rule; SEG frames are placed by their positions (any order, sparse
frames). A structure set whose series is not among the inputs, a contour off the image, an ROI
without contours ([bold]--allow-empty[/bold] keeps it as an empty label) or a damaged sequence
is one error line; [bold]--no-labels[/bold] skips these files instead.
[bold]--labels-out DIR[/bold] writes the label volumes there, so that OUT holds the images only.
See docs/dicom-labels.md.

Images are grouped by SeriesInstanceUID and split into stacks by orientation, image size and
pixel spacing; localizers (ImageType LOCALIZER/SCOUT/PROJECTION IMAGE, or up to 3 images in
another orientation) are dropped with a note. Slices are sorted by ImagePositionPatient
projected on the slice normal (InstanceNumber only when positions are missing, with a
warning); slice spacing comes from those positions, never from SliceThickness.

Checks: spacing between neighbouring slices may differ from the median by 5 %. A step of
two or more whole steps is missing slices (error, or [bold]--allow-gaps[/bold] to interpolate
linearly onto a uniform grid); other uneven spacing is interpolated onto a uniform grid with a
warning (as dcm2niix's equalised output), the true positions kept in the metadata. Images
closer than 0.01 mm are at the same position: exact duplicates are dropped, different images
are phases, split into separate volumes by the attribute that tells them apart
(TemporalPositionIdentifier, TriggerTime, EchoTime, AcquisitionNumber, ...) or refused.
Slices drifting sideways by more than a quarter pixel over the stack are a gantry tilt:
resampled onto a straight grid widened to hold every source pixel, with a warning, the tilt
and the added pixels recorded in the metadata ([bold]--no-untilt[/bold] refuses instead).

Output: OUT/<case>.<format>, the case being the series' folder relative to the input, plus a
_series<N> suffix when a case holds several series, or [bold]--name TEMPLATE[/bold] filled in
from DICOM keywords ('{PatientID}', '{PatientID}_{StudyDate}_{SeriesNumber}'; characters
unsafe in file names become _, two series given one name are an error unless --series
largest); OUT may also name one file. OUT/cases.csv (beside the file for one output) lists
every case written: case_id, output, source folder, PatientID, Study and Series Instance
UID, SeriesNumber, SeriesDescription, Modality, files; later runs into the same folder add
their rows. Values are the
stored values with each slice's RescaleSlope/Intercept in the metadata (units raw), or HU with
[bold]--hu[/bold] (as medtool hu). The metadata keeps non-identifying facts only.

Example: [bold]medtool dicom2npy phantom/ct volumes/ --workers 2[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "dicom2npy", shared=common.FILE_COMMAND, help=_HELP)
    def dicom2npy(
        inputs: common.paths_argument("DICOM files or folders (walked recursively)."),
        out: Annotated[Path, typer.Argument(help="Output folder, or one output file for one series.",
                                            show_default=False)],
        *,
        fmt: Annotated[str, typer.Option("--format", help="npy (+ .json sidecar), npz, nii.gz, nii, nrrd, mha or mhd (+ .raw).")] = "npy",
        series: Annotated[str, typer.Option("--series", help="all, largest (per case) or one SeriesInstanceUID.")] = "all",
        name: Annotated[str | None, typer.Option(
            "--name", metavar="TEMPLATE",
            help="Name cases from DICOM keywords, e.g. '{PatientID}', "
                 "'{PatientID}_{StudyDate}_{SeriesNumber}', '{AccessionNumber}' (default: the "
                 "series' folder).")] = None,
        hu: Annotated[bool, typer.Option("--hu", help="Write int16 Hounsfield units (as medtool hu) instead of stored values.")] = False,
        allow_gaps: Annotated[bool, typer.Option("--allow-gaps", help="Interpolate missing or unevenly spaced slices onto a uniform grid.")] = False,
        untilt: Annotated[bool, typer.Option("--untilt/--no-untilt", help="Resample gantry-tilted series onto a straight grid that holds every source pixel (with a warning), or refuse them.")] = True,
        labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Convert RTSTRUCT and SEG files into label volumes on their series' grid, or skip them.")] = True,
        labels_out: Annotated[Path | None, typer.Option("--labels-out", metavar="DIR", help="Write the label volumes into DIR instead of OUT (OUT then holds images only: train segment --images OUT --masks DIR --mask-suffix _rtstruct).")] = None,
        allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Keep an RTSTRUCT ROI without contours as an empty label instead of failing.")] = False,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..ingest import HuOptions, convert

        report = convert(inputs, out, fmt=fmt, series=series, allow_gaps=allow_gaps, untilt=untilt,
                         name=name, labels=labels, allow_empty=allow_empty, labels_out=labels_out,
                         hu=HuOptions() if hu else None, workers=opts.workers, force=opts.force,
                         shard=opts.shard, step=opts.step(), progress=opts.show_progress,
                         on_error=opts.report, on_notice=common.report_notice if not opts.quiet else None)
        return report_conversion(report, json=json, opts=opts)


def skipped_summary(skipped: list[tuple[str, str]], *, verbose: bool) -> str:
    """``note: skipped 9 file(s) that are not image volumes: 3 SR, 2 colour image, ...``."""
    from collections import Counter

    kinds = Counter(kind for _, kind in skipped)
    text = (f"note: skipped {len(skipped)} file(s) that are not image volumes: "
            + ", ".join(f"{count} {kind}" for kind, count in
                        sorted(kinds.items(), key=lambda item: (-item[1], item[0]))))
    if verbose:
        return text + "\n" + "\n".join(f"note: skipped {path} ({kind})" for path, kind in skipped)
    return text + " (--verbose lists them)"


def report_conversion(report, *, json: bool, opts: common.Options) -> int:
    """Print what a DICOM conversion wrote (table or JSON) and a summary; return the exit code."""
    from ..errors import InputError

    if json:
        common.print_json({"written": report.written, "skipped": [p for p, _ in report.skipped],
                           "failed": [name for name, _ in report.failures]})
    elif report.written and not opts.quiet:
        common.print_written(report.written, {"orient.": lambda row: row["orientation"],
                                              "files": lambda row: str(row["files"]), "units": lambda row: row["units"]})
    if report.skipped and not opts.quiet:
        common.stderr.print(skipped_summary(report.skipped, verbose=opts.verbose),
                            highlight=False, markup=False)
    if report.cases is not None and not opts.quiet:
        common.stderr.print(f"note: {report.cases} lists each case's source and DICOM identity"
                            + (" (it holds PatientIDs: identifying unless the data was "
                               "anonymized)" if report.identified else ""),
                            highlight=False, markup=False)
    if not report.written and not report.failures:
        raise InputError("no DICOM image series found", path=" ".join(report.inputs),
                         hint=f"{report.files} file(s) looked at; check the path")
    return common.report_failures(report.failures, len(report.written) + len(report.failures))
