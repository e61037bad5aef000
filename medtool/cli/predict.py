"""``medtool predict``: run a trained checkpoint on volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Run a checkpoint from medtool train on volumes; masks land on each input's own grid.

The model is loaded once. Each input is prepared exactly as the checkpoint's recipe says (resampled to its spacing, normalised), segmented by sliding windows (Gaussian importance weighting, [bold]--overlap[/bold], windows in batches, optional flip [bold]--tta[/bold]), turned into labels (arg-max, or [bold]--threshold[/bold] on the foreground probability), cleaned ([bold]--keep-largest N[/bold] components per label) and resampled back onto the input's grid with nearest neighbour, so the mask overlays the input in any viewer. [bold]--probabilities[/bold] also writes one float map per class (<name>_prob_<class>). Memory stays bounded: the volume is processed in slabs along z.

Example: [bold]medtool predict runs/lung/best.pt hu/ masks/ --keep-largest 1 --tta[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "predict", shared=("device", "workers", "shard", "force"), help=_HELP,
                    short_help="Run a trained model on volumes (masks on the input grid).")
    def predict(
        checkpoint: Annotated[Path, typer.Argument(help="best.pt or last.pt of a run.", show_default=False)],
        paths: Annotated[list[Path], typer.Argument(metavar="INPUT... OUT",
                                                    help="Volumes or folders, then the output folder (or file for one input).",
                                                    show_default=False)],
        *,
        overlap: Annotated[float, typer.Option("--overlap", help="Overlap of neighbouring windows (fraction).")] = 0.5,
        blend: Annotated[str, typer.Option("--blend", help="gaussian or constant window weighting.")] = "gaussian",
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows per forward pass.")] = 4,
        tta: Annotated[bool, typer.Option("--tta", help="Average over all axis flips.")] = False,
        keep_largest: Annotated[int, typer.Option("--keep-largest", min=0, help="Keep the N largest components of each label (0: all).")] = 0,
        threshold: Annotated[float | None, typer.Option("--threshold", help="Foreground probability cut [default: arg-max / 0.5].")] = None,
        probabilities: Annotated[bool, typer.Option("--probabilities", help="Also write float probability maps.")] = False,
        amp: Annotated[str, typer.Option("--amp", help="Mixed precision on CUDA: auto, bf16, fp16, off.")] = "auto",
        fmt: Annotated[str | None, typer.Option("--format", help="Output format [default: the input's].")] = None,
        suffix: Annotated[str, typer.Option("--suffix", help="Added to each output name after the case id (e.g. _lungs).")] = "",
        json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        import torch

        from ..errors import UsageError
        from ..inference import BLENDS
        from ..segmentation import PredictSettings, predict_files
        from ..train import load_checkpoint

        if len(paths) < 2:
            raise UsageError("give at least one INPUT and the OUT folder")
        if blend not in BLENDS:
            raise UsageError(f"--blend {blend}: choose one of {', '.join(BLENDS)}")
        *inputs, out = paths
        device = opts.torch_device()
        torch.set_num_threads(max(1, opts.workers))
        state = load_checkpoint(checkpoint)
        if state["task"] != "segment":
            raise UsageError(f"predict for a {state['task']} checkpoint is not available yet")
        settings = PredictSettings(overlap=overlap, blend=blend, batch_size=batch_size, tta=tta,
                                   threshold=threshold, keep_largest=keep_largest, probabilities=probabilities)
        outcome = predict_files(state, inputs, out, settings=settings, device=device, fmt=fmt, suffix=suffix,
                                force=opts.force, shard=opts.shard, step=opts.step(), amp=amp,
                                progress=opts.show_progress, on_error=opts.report)
        rows = [r for r in outcome.results if r is not None]
        if json:
            common.print_json(rows)
        elif rows:
            from rich.table import Table

            names = list(rows[0]["volumes_ml"])
            table = Table(box=None, pad_edge=False)
            for column in ["output", "shape", *[f"{n} (ml)" for n in names]]:
                table.add_column(column)
            for row in rows:
                table.add_row(row["output"], " x ".join(map(str, row["shape"])),
                              *[f"{row['volumes_ml'][n]:.1f}" for n in names])
            common.stdout.print(table)
        return common.report_failures(outcome.failures, len(outcome.results))
