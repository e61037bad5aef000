"""``medtool export nnunet``: medtool volumes as a dataset another tool reads as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Write images and masks as another tool's dataset. [bold]nnunet[/bold]: an nnU-Net v2 raw dataset OUT (named DatasetNNN_Name) with imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz (the masks merged into one uint8 label map, on the image's grid or refused), dataset.json (channel_names, labels by name, numTraining, file_ending) and, with [bold]--folds[/bold], splits_final.json (the numbered folds; test cases in none: copy it into nnUNet_preprocessed/DatasetNNN_Name/).

The cases come as [bold]train segment[/bold] reads them: [bold]--images DIR --masks DIR[/bold] (masks named <case><--mask-suffix>, several merged; images named <case><--image-suffix>) or [bold]--dataset DIR[/bold] (Decathlon, nnU-Net, BraTS). The channel name decides nnU-Net's normalisation (CT: its CT scheme, anything else z-score): [bold]--channel-name[/bold], else CT for images in HU and MRI otherwise, said on stderr. The folder appears complete or not at all.

Example: [bold]medtool export nnunet nnUNet_raw/Dataset501_Lung --images hu/ --masks truth/ --mask-suffix _lungs --folds folds.csv[/bold]
"""

#: What ``medtool export`` writes.
FORMATS = ("nnunet",)


def register(app: typer.Typer) -> None:
    @common.command(app, "export", shared=("workers", "force"), help=_HELP)
    def export(
        fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="nnunet.", show_default=False)],
        out: Annotated[Path, typer.Argument(metavar="OUT", help="The dataset folder to write (DatasetNNN_Name).",
                                            show_default=False)],
        *,
        images: Annotated[Path | None, typer.Option("--images", help="Folder of images.")] = None,
        masks: Annotated[Path | None, typer.Option("--masks", help="Folder of masks (named <case><suffix>).")] = None,
        mask_suffix: Annotated[list[str] | None, typer.Option("--mask-suffix", help="Mask name after the case id; repeat to merge masks.")] = None,
        image_suffix: Annotated[str, typer.Option("--image-suffix", help="Images are named <case><suffix>; others are left out.")] = "",
        dataset: Annotated[Path | None, typer.Option("--dataset", help="A Decathlon, nnU-Net or BraTS dataset instead of folders.")] = None,
        channels: Annotated[str | None, typer.Option("--channels", help="Input channels: of --dataset [default: all], or with --images files <case>_NAME (flair,t1ce); written as _0000, _0001, ...")] = None,
        folds: Annotated[Path | None, typer.Option("--folds", metavar="FOLDS.csv", help="Write splits_final.json from these folds.")] = None,
        class_names: Annotated[str | None, typer.Option("--class-names", help="Comma-separated names of labels 1..N [default: the dataset's, else label_N].")] = None,
        channel_name: Annotated[str | None, typer.Option("--channel-name", help="nnU-Net's channel name (CT, MRI, T2, ...) [default: CT for HU images, else MRI].")] = None,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        from ..errors import check_choice
        from ..layouts import export_cases, export_nnunet

        check_choice("export", fmt, FORMATS)
        found = export_cases(
            images=images, masks=masks, mask_suffixes=mask_suffix or [""], image_suffix=image_suffix,
            dataset=dataset, channels=channels.split(",") if channels else None,
            class_names=[n.strip() for n in class_names.split(",")] if class_names else None,
            channel_name=channel_name)
        if not opts.quiet:
            common.stderr.print(f"{len(found.cases)} cases, {'channels' if len(found.channels) > 1 else 'channel'} "
                                f"{', '.join(found.channels)} ({found.why})", highlight=False)
        from ..datasets import read_folds

        summary = export_nnunet(found.cases, out, classes=found.classes, channels=found.channels, inputs=found.inputs,
                                folds=read_folds(folds) if folds else None, workers=opts.workers,
                                force=opts.force, progress=opts.show_progress, on_error=opts.report)
        if json:
            common.print_json(summary)
        else:
            common.stdout.print(f"{summary['dataset']}: {summary['cases']} cases, labels "
                                f"{', '.join(summary['classes'])}, channels {', '.join(summary['channels'])}"
                                + (f", {summary['splits']} folds in splits_final.json" if summary["splits"] else ""),
                                highlight=False)
        return 0
