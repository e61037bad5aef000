"""``medtool phantom``: synthetic chest CT and X-ray data with exact ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common


def register(app: typer.Typer) -> None:
    @common.command(app, "phantom", shared=("workers", "force"),
                    short_help="Write synthetic chest CT (DICOM) and X-rays with exact truth.")
    def phantom(
        out: Annotated[Path, typer.Argument(help="Output folder.")],
        *,
        cases: Annotated[int, typer.Option("--cases", "-n", min=1, help="Number of CT cases.")] = 5,
        seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed; same seed, same files.")] = 42,
        shape: Annotated[int, typer.Option("--shape", min=32, max=1024,
                                           help="In-plane size of the CT (64 or 128 for fast tests).")] = 512,
        cxr: Annotated[int | None, typer.Option("--cxr", min=0,
                                                help="Number of chest X-rays [default: same as --cases].")] = None,
        tumour_fraction: Annotated[float, typer.Option(
            "--tumour-fraction", min=0.0, max=1.0,
            help="Chance that a CT case has a lung tumour; 1 gives a tumour-segmentation cohort "
                 "in which every case has one.")] = 0.65,
        layout: Annotated[str, typer.Option(
            "--layout", help="flat: OUT/ct/<case>/; tcia: a TCIA download, "
            "OUT/ct/<PatientID>/<date>-NA-<study>-<NNNNN>/<series number>.000000-<series>-<NNNNN>/1-NNN.dcm.")] = "flat",
        clutter: Annotated[bool, typer.Option(
            "--clutter", help="Add what real exports hold to each study: a localizer, an RGB "
            "dose screen (secondary capture), a dose SR, a second kernel, a gantry-tilted "
            "series and one with uneven slice spacing.")] = False,
        json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        """Write a synthetic but realistic data set with exact ground truth.

        Layout: OUT/ct/<case>/*.dcm (one CT series per case; --layout tcia writes TCIA's
        download tree instead), OUT/truth/<case>_lungs.nii.gz (1 right, 2 left lung),
        OUT/truth/<case>_tumour.nii.gz, OUT/labels.csv (case_id, patient_id, label, tumour
        volume and diameter, the DICOM PatientID), OUT/cxr/<patientId>.dcm and
        OUT/cxr_boxes.csv (RSNA form).

        Example: [bold]medtool phantom data --cases 5 --seed 1 --shape 128[/bold]
        """
        from ..phantom import write_dataset

        summary = write_dataset(out, cases=cases, seed=seed, shape=shape,
                                cxr=cases if cxr is None else cxr, workers=opts.workers,
                                force=opts.force, step=opts.step(), progress=opts.show_progress,
                                tumour_fraction=tumour_fraction, layout=layout,
                                clutter=clutter)
        if json:
            common.print_json({"out": str(out), **summary})
        elif not opts.quiet:
            common.stderr.print(
                f"wrote {_count(summary['cases'], 'CT case')} ({summary['ct_files']} DICOM files), "
                f"{_count(summary['cxr'], 'chest X-ray')} to {out}")
        return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
