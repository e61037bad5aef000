"""``medtool gradcam``: Grad-CAM attention maps of a checkpoint, on each input volume's own grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Attention maps (Grad-CAM, Grad-CAM++, guided Grad-CAM) of a medtool train checkpoint, written as volumes on each input's own grid and geometry.

Each input is prepared exactly as the checkpoint's recipe says (resampled, cropped, normalised); the map of the chosen layer is upsampled (bilinear / trilinear) to the model's input, put back through that preprocessing onto the input volume's grid (same shape, spacing, origin and direction, so it overlays the input in any viewer), and normalised to [0, 1] per case ([bold]--raw[/bold] keeps the raw values). Works for 2D and 3D models.

[bold]--class[/bold]: pred (the predicted class), a class number or a class name. For a classify checkpoint the target is that class's logit; for a segment checkpoint it is the summed logit inside the region predicted as that class (pred: the foreground class with the most predicted voxels; a 2D model explains each slice).

[bold]--layer auto[/bold] takes the layer the model declares, else the last convolution whose output keeps a spatial size above 1 along every axis (not the output head); [bold]--layer NAME[/bold] names any module, [bold]--list-layers[/bold] prints them with their output shapes. [bold]--png[/bold] also writes a montage of the input with the map overlaid (slices where the map is strongest, colour bar). The model is loaded once for all inputs. OUT is a folder (OUT/<name><suffix>.<format>) or a file for one input.

Examples:
[bold]medtool gradcam runs/cls/best.pt hu/case_001.npy cam/case_001.nii.gz --png[/bold]
[bold]medtool gradcam runs/tumour/best.pt hu/ cam/ --class tumour --method gradcam++ --format nii.gz[/bold]
[bold]medtool gradcam runs/cls/best.pt --list-layers[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "gradcam", shared=("device", "shard", "force"), help=_HELP)
    def gradcam(
        checkpoint: Annotated[Path, typer.Argument(help="best.pt or last.pt of a run.", show_default=False)],
        paths: Annotated[list[Path] | None, typer.Argument(
            metavar="INPUT... OUT", help="Volumes or folders, then the output (folder, or a file for one input).",
            show_default=False)] = None,
        *,
        method: Annotated[str, typer.Option("--method", help="gradcam, gradcam++ or guided.")] = "gradcam",
        layer: Annotated[str, typer.Option("--layer", help="auto, or a module name (see --list-layers).")] = "auto",
        target: Annotated[str, typer.Option("--class", help="pred, a class number or a class name.")] = "pred",
        raw: Annotated[bool, typer.Option("--raw", help="Keep raw map values (no [0, 1] scaling).")] = False,
        png: Annotated[bool, typer.Option("--png", help="Also write <name>.png: the input with the map overlaid.")] = False,
        list_layers: Annotated[bool, typer.Option("--list-layers", help="Print the model's layers and exit.")] = False,
        fmt: common.OutputFormat = None,
        suffix: Annotated[str, typer.Option("--suffix", help="Added to each output name after the case id (e.g. _cam).")] = "",
        image_suffix: Annotated[str | None, typer.Option("--image-suffix", help="The inputs are named <case><suffix> (_masked); other files are left out [default: the checkpoint's, from training].")] = None,
        truth: Annotated[Path | None, typer.Option("--truth", metavar="DIR", help="Masks of what the map should point at (tumours): print how much stronger the map is inside them than outside.")] = None,
        truth_suffix: Annotated[str, typer.Option("--truth-suffix", metavar="S", help="The --truth masks are named <case><S> (e.g. _tumour).")] = "",
        json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        import torch

        from ..errors import UsageError
        from ..train import load_checkpoint

        device = opts.torch_device()
        state = load_checkpoint(checkpoint)
        paths = list(paths or [])
        if list_layers:
            return _list_layers(state, paths, device, json=json)
        if len(paths) < 2:
            raise UsageError("give at least one INPUT and the OUT folder (or --list-layers)")
        *inputs, out = paths
        torch.set_num_threads(common.threads_per_worker(1))
        from ..datasets import select_files
        from ..errors import InputError
        from ..files import VOLUME_SUFFIXES
        from ..gradcam import explain_files

        strip = common.image_suffix(state, image_suffix, opts)
        if strip:
            named, inputs = inputs, select_files(inputs, None, suffixes=VOLUME_SUFFIXES, strip=strip)
            if not inputs:
                raise InputError(f"no input is named <case>{strip}", path=str(named[0]),
                                 hint="name the inputs so, or give --image-suffix ''")

        outcome = explain_files(state, inputs, out, method=method, layer=layer, target=target, raw=raw,
                                png=png, device=device, fmt=fmt, suffix=suffix, image_suffix=strip, force=opts.force,
                                shard=opts.shard, step=opts.step(), progress=opts.show_progress,
                                on_error=opts.report, truth=truth, truth_suffix=truth_suffix)
        rows = [r for r in outcome.results if r is not None]
        for row in rows:
            for note in row["notes"]:
                common.stderr.print(f"[yellow]warning:[/yellow] {row['input']}: {note}", highlight=False)
        if json:
            common.print_json(rows)
        elif rows and not opts.quiet:
            from rich.table import Table

            table = Table(box=None, pad_edge=False, header_style="bold")
            columns = ("output", "class", "layer", "score", "png") + (("inside/outside",) if truth else ())
            for column in columns:
                table.add_column(column, overflow="fold")
            for row in rows:
                ratio = row.get("inside_outside")
                table.add_row(row["output"], row["class"], row["layer"], f"{row['score']:.4g}", row["png"] or "",
                              *(() if not truth else ("-" if ratio is None else f"{ratio:.2f}",)))
            common.stdout.print(table)
        if truth and rows and not (opts.quiet or json):
            from ..gradcam import summarise_ratios

            found = summarise_ratios([row.get("inside_outside") for row in rows])
            common.stdout.print(
                "mean map inside the --truth masks / mean outside: no case has a truth region" if found is None else
                f"mean map inside the --truth masks / mean outside: mean {found['mean']:.2f}, median "
                f"{found['median']:.2f}, range {found['min']:.2f}-{found['max']:.2f} over {found['cases']} "
                f"case{'s' if found['cases'] != 1 else ''} with a truth region", highlight=False)
        if not outcome.results and not outcome.failures:
            from ..errors import InputError

            raise InputError("no volume files found", path=" ".join(map(str, inputs)),
                             hint="give .npy, .npz, .nii or .nii.gz files or folders")
        return common.report_failures(outcome.failures, len(outcome.results))


def _list_layers(state, paths: list[Path], device, *, json: bool) -> int:
    from ..gradcam import list_layers

    layers, auto, shape = list_layers(state, inputs=paths[:1], device=device)
    if json:
        common.print_json({"input_shape": shape, "auto": auto, "layers": [layer.row() for layer in layers]})
        return 0
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold",
                  title=f"layers for an input of {' x '.join(map(str, shape))}  (* = --layer auto)",
                  title_justify="left")
    for column in ("name", "type", "output shape"):
        table.add_column(column)
    for layer in layers:
        mark = " *" if layer.name == auto else ""
        table.add_row(layer.name + mark, layer.kind, " x ".join(map(str, layer.shape)))
    common.stdout.print(table)
    return 0
