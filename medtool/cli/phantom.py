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
        labels_as: Annotated[str | None, typer.Option(
            "--labels-as", metavar="rtstruct|seg", help="Also write the lung truth into each CT "
            "series folder as an RT Structure Set (RS-lungs.dcm) or a DICOM SEG "
            "(SEG-lungs.dcm), ROIs Lung_R 1 and Lung_L 2 as in LCTSC.", show_default=False)] = None,
        # -- the anatomy of the CT cases (medtool.phantom.ct.Anatomy) -------------------------
        scan_range: Annotated[str, typer.Option(
            "--range", help="Scan range: chest (lung bases to the neck base), cap "
            "(chest-abdomen-pelvis), abdomen (no lung), bases (an abdominal scan whose top "
            "slices hold the lung bases), apices (the lung apices only).")] = "chest",
        bowel: Annotated[bool | None, typer.Option(
            "--bowel/--no-bowel", help="Stomach (gas/fluid level), colon (haustra, gas, stool) "
            "and small-bowel loops under the diaphragm [default: with --range cap, abdomen, "
            "bases].", show_default=False)] = None,
        effusion: Annotated[bool, typer.Option(
            "--effusion", help="A dependent pleural effusion (not lung) at one or both bases.")] = False,
        emphysema: Annotated[bool, typer.Option(
            "--emphysema", help="Emphysema (bullae, low-attenuation areas; lung), upper lobes most.")] = False,
        one_lung: Annotated[str | None, typer.Option(
            "--one-lung", metavar="right|left|either", help="Only this lung (the other side is a "
            "fluid-filled pneumonectomy space); either: drawn per case.", show_default=False)] = None,
        juxtapleural: Annotated[bool, typer.Option(
            "--juxtapleural", help="Tumours are 30-60 mm masses on the pleura of the chest wall "
            "(inside the lung truth); with --tumour-fraction 1 every case has one.")] = False,
        follow_up: Annotated[str, typer.Option(
            "--follow-up", metavar="independent|grown", help="A follow-up scan has its own "
            "anatomy (independent) or the baseline's body and lungs with the tumour grown "
            "over the interval (grown).")] = "independent",
        cxr_size: Annotated[int | None, typer.Option(
            "--cxr-size", min=32, max=4096, help="Size of the chest X-rays in pixels "
            "[default: 2 x --shape, 128 to 1024].", show_default=False)] = None,
        # ---------------------------------------------------------------------------------
        json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        """Write a synthetic but realistic data set with exact ground truth.

        Layout: OUT/ct/<case>/*.dcm (one CT series per case; --layout tcia writes TCIA's
        download tree instead), OUT/truth/<case>_lungs.nii.gz (1 right, 2 left lung),
        OUT/truth/<case>_tumour.nii.gz, OUT/labels.csv (case_id, patient_id, label, tumour
        volume and diameter, the DICOM PatientID), OUT/cxr/<patientId>.dcm and
        OUT/cxr_boxes.csv (RSNA form). --labels-as rtstruct|seg also puts the lung truth into
        each CT series folder as DICOM (RS-lungs.dcm / SEG-lungs.dcm), so that dicom2npy turns
        it into <case>_rtstruct / <case>_seg label volumes.

        Anatomy: --range, --bowel, --effusion, --emphysema, --one-lung and --juxtapleural
        add what real scans have; then OUT/truth/<case>_anatomy.nii.gz holds the truth of
        what is not lung (1 trachea and main bronchi, 2 gas in the stomach and bowel, 3 bowel
        content, 4 pleural effusion, 5 emphysema, which is lung, 6 pneumonectomy space). The
        lung truth stays exact: effusion and the pneumonectomy space are not lung; emphysema
        and tumours are. Same seed, same patient: switching an option on leaves the rest as it
        was (another --range changes the grid). The chest X-rays are --cxr-size pixels square.

        Example: [bold]medtool phantom data --cases 5 --seed 1 --shape 128[/bold]
        Example: [bold]medtool phantom abd --cases 10 --range bases --shape 512[/bold]
        """
        from ..phantom import write_dataset
        from ..phantom.ct import Anatomy

        anatomy = Anatomy(scan_range=scan_range, bowel=bowel, effusion=effusion, emphysema=emphysema,
                          one_lung=one_lung, juxtapleural=juxtapleural)

        summary = write_dataset(out, cases=cases, seed=seed, shape=shape,
                                cxr=cases if cxr is None else cxr, workers=opts.workers,
                                force=opts.force, step=opts.step(), progress=opts.show_progress,
                                tumour_fraction=tumour_fraction, layout=layout,
                                clutter=clutter, labels_as=labels_as,
                                anatomy=anatomy, follow_up=follow_up, cxr_size=cxr_size)
        if not anatomy.is_default:
            summary["anatomy"] = anatomy.describe()
        if json:
            common.print_json({"out": str(out), **summary})
        elif not opts.quiet:
            common.stderr.print(
                f"wrote {_count(summary['cases'], 'CT case')} ({summary['ct_files']} DICOM files), "
                f"{_count(summary['cxr'], 'chest X-ray')} to {out}"
                + (f" (anatomy {summary['anatomy']})" if "anatomy" in summary else ""))
        return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
