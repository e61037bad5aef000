"""``medtool phantom``: synthetic chest CT and X-rays, or brain MRI, with exact ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common


def register(app: typer.Typer) -> None:
    @common.command(app, "phantom", shared=("workers", "force"))
    def phantom(
        out: Annotated[Path, typer.Argument(help="Output folder.")],
        *,
        kind: Annotated[str, typer.Option(
            "--kind", metavar="ct|brain-mri", help="ct: chest CT (DICOM) and chest X-rays; "
            "brain-mri: brain MRI cases in the BraTS layout, OUT/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz "
            "(docs/mri.md).")] = "ct",
        cases: Annotated[int, typer.Option("--cases", "-n", min=1, help="Number of CT or brain MRI cases.")] = 5,
        seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed; same seed, same files.")] = 42,
        shape: Annotated[int | None, typer.Option(
            "--shape", min=32, max=1024, help="In-plane size of the CT [default: 512; 64 or 128 for "
            "fast tests]; voxels along each axis of the brain MRI's 192 mm cube [default: 192, "
            "1 mm voxels; 96 or 128 for fast runs].", show_default=False)] = None,
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
        # -- the brain MRI cases (medtool.phantom.brain) ---------------------------------------
        brats_labels: Annotated[str, typer.Option(
            "--brats-labels", metavar="2015|2017|2023", help="Label convention of the brain MRI "
            "segmentation: 2015 (necrosis 1, edema 2, non-enhancing 3, enhancing 4; BRATS 2015), "
            "2017 (necrotic and non-enhancing core 1, edema 2, enhancing 4; BraTS 2017-2021), "
            "2023 (core 1, edema 2, enhancing 3).")] = "2015",
        skull_strip: Annotated[bool, typer.Option(
            "--skull-strip", help="Brain MRI: zero the images outside the intracranial space, as "
            "BraTS ships them.")] = False,
        # ---------------------------------------------------------------------------------
        json: common.WrittenJson = False,
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

        --kind brain-mri writes brain MRI cases instead, in the BraTS layout:
        OUT/<case>/<case>_flair, _t1, _t1ce, _t2 (int16, arbitrary positive units) and _seg
        (--brats-labels), all .nii.gz on one grid: FLAIR, T1, T1c and T2 of a head with a
        glioma (necrosis, edema, non-enhancing core, enhancing rim), each modality with its
        own bias field and Rician noise; the contrasts are in docs/mri.md.

        Example: [bold]medtool phantom data --cases 5 --seed 1 --shape 128[/bold]
        Example: [bold]medtool phantom abd --cases 10 --range bases --shape 512[/bold]
        Example: [bold]medtool phantom brats --kind brain-mri --cases 20 --shape 128[/bold]
        """
        if kind == BRAIN_MRI:
            _refuse_ct_options(tumour_fraction=tumour_fraction, layout=layout, clutter=clutter,
                               labels_as=labels_as, scan_range=scan_range, bowel=bowel,
                               effusion=effusion, emphysema=emphysema, one_lung=one_lung,
                               juxtapleural=juxtapleural, follow_up=follow_up, cxr=cxr,
                               cxr_size=cxr_size)
            return _brain(out, cases=cases, seed=seed, shape=shape, brats_labels=brats_labels,
                          skull_strip=skull_strip, json=json, opts=opts)
        if kind != CT:
            raise _usage(f"--kind {kind}: choose ct or {BRAIN_MRI}")
        if brats_labels != DEFAULT_BRATS_LABELS or skull_strip:
            raise _usage(f"--{'skull-strip' if skull_strip else 'brats-labels'} is an option of "
                         f"--kind {BRAIN_MRI}")
        from ..phantom import write_dataset
        from ..phantom.ct import DEFAULT_SHAPE, Anatomy

        shape = DEFAULT_SHAPE if shape is None else shape
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
        line = (f"wrote {_count(summary['cases'], 'CT case')} ({summary['ct_files']} DICOM files), "
                f"{_count(summary['cxr'], 'chest X-ray')} to {out}"
                + (f" (anatomy {summary['anatomy']})" if "anatomy" in summary else ""))
        return _report(out, summary, line, json=json, opts=opts)


CT, BRAIN_MRI = "ct", "brain-mri"
DEFAULT_BRATS_LABELS = "2015"            # medtool.phantom.brain.DEFAULT_CONVENTION (tested)
#: The CT options and their defaults: given with --kind brain-mri, they are refused.
_CT_DEFAULTS = {"layout": "flat", "clutter": False, "labels_as": None,
                "scan_range": "chest", "bowel": None, "effusion": False, "emphysema": False,
                "one_lung": None, "juxtapleural": False, "follow_up": "independent", "cxr": None,
                "cxr_size": None}


def _usage(text: str):
    from ..errors import UsageError

    return UsageError(text, hint="see medtool phantom --help")


def _refuse_ct_options(**given) -> None:
    from ..phantom.ct import TUMOUR_FRACTION

    defaults = {**_CT_DEFAULTS, "tumour_fraction": TUMOUR_FRACTION}
    changed = [name for name, value in given.items() if value != defaults[name]]
    if changed:
        option = {"scan_range": "range", "tumour_fraction": "tumour-fraction"}.get(changed[0], changed[0])
        raise _usage(f"--{option.replace('_', '-')} is an option of the CT phantom, not of "
                     f"--kind {BRAIN_MRI}")


def _brain(out: Path, *, cases: int, seed: int, shape: int | None, brats_labels: str,
           skull_strip: bool, json: bool, opts) -> int:
    from ..phantom.brain import DEFAULT_SHAPE
    from ..phantom.brats import write_brain_dataset

    summary = write_brain_dataset(out, cases=cases, seed=seed,
                                  shape=DEFAULT_SHAPE if shape is None else shape,
                                  convention=brats_labels, skull_strip=skull_strip,
                                  workers=opts.workers, force=opts.force, step=opts.step(),
                                  progress=opts.show_progress)
    line = (f"wrote {_count(summary['cases'], 'brain MRI case')} (FLAIR, T1, T1c, T2, seg; "
            f"{summary['shape'][0]}^3 at {summary['spacing_mm'][0]:.3g} mm, labels {summary['convention']}) to {out}")
    return _report(out, summary, line, json=json, opts=opts)


def _report(out: Path, summary: dict, line: str, *, json: bool, opts) -> int:
    """Print what a phantom wrote: ``summary`` as JSON, else ``line``; the exit status."""
    if json:
        common.print_json({"out": str(out), **summary})
    elif not opts.quiet:
        common.stderr.print(line, highlight=False)
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
