"""Commands whose issues have not landed yet: listed in --help, and say so when run."""

from __future__ import annotations

from typing import Callable

import typer

from ..errors import EXIT_USAGE
from .common import report_error

#: The pipeline commands in order: name -> (one-line purpose, issue that delivers it).
PIPELINE: dict[str, tuple[str, int]] = {
    "dicom2npy": ("Convert DICOM series into volumes (.npy/.npz/.nii.gz).", 3),
    "anonymize": ("De-identify DICOM files (PS3.15 basic profile), series kept intact.", 4),
    "hu": ("Convert raw scanner values to Hounsfield units.", 3),
    "lungmask": ("Segment the lungs (1 right, 2 left) in a HU volume.", 10),
    "resample": ("Resample volumes to a new spacing or onto another volume's grid.", 10),
    "attach": ("Give arrays without geometry (coursework masks) their image's geometry.", 24),
    "todicom": ("Write label volumes as DICOM SEG or RTSTRUCT of their source series.", 27),
    "view": ("Render slices of a volume (with masks) to PNG.", 10),
    "folds": ("Split cases into leakage-free cross-validation folds.", 5),
    "export": ("Write images and masks as an nnU-Net v2 raw dataset.", 24),
    "train": ("Train a segmentation, classification or detection model.", 6),
    "predict": ("Run a trained model on volumes or images.", 6),
    "score": ("Score predictions against truth (Dice, HD95, mAP, AUC, ...).", 5),
    "gradcam": ("Grad-CAM attention maps on the input volume's grid.", 8),
}


def register(app: typer.Typer, landed: dict[str, Callable[[typer.Typer], None]]) -> None:
    """Add the pipeline commands in pipeline order: ``landed`` ones for real, others planned."""
    taken = {info.name for info in app.registered_commands}
    for name, (purpose, issue) in PIPELINE.items():
        if name in landed:
            landed[name](app)
        elif name not in taken:
            app.command(
                name,
                help=f"{purpose} [dim](not available yet: issue #{issue})[/dim]",
                short_help=f"{purpose} [dim](planned, issue #{issue})[/dim]",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                add_help_option=True,
            )(_placeholder(name, issue))


def _placeholder(name: str, issue: int):
    def run() -> None:
        report_error(f"medtool {name} is not available yet; it lands with issue #{issue}")
        raise typer.Exit(EXIT_USAGE)

    run.__name__ = name
    return run
