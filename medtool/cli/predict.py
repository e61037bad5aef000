"""``medtool predict``: run a trained checkpoint on volumes; what it writes depends on the task.

The checkpoint names its task; :data:`_PREDICTORS` maps each task to one small function that
calls that task's ``predict_files`` and prints what was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from . import common

_HELP = """Run a checkpoint from medtool train on volumes: segmentation masks on each input's own grid, a classification CSV, or detection boxes (RSNA CSV).

The model is loaded once and each input is prepared exactly as the checkpoint's recipe says (resampled to its spacing and shape, normalised).

CHECKPOINT may be the run folder of [bold]train --cv[/bold]: the folds' probabilities are averaged (segment, classify). Inputs named <case><[bold]--image-suffix[/bold]> (by default the checkpoint's: _0000, _flair) are the cases; other files are left out.

[bold]--folds F --fold K|test[/bold] (from medtool folds) or [bold]--cases FILE.csv[/bold] predicts only those cases of the inputs (case id = file name without its suffix).

[bold]segment[/bold] checkpoints: volumes are segmented by sliding windows (Gaussian importance weighting, [bold]--overlap[/bold], windows in batches, optional flip [bold]--tta[/bold]), turned into labels (arg-max, or [bold]--threshold[/bold] on the foreground probability), cleaned ([bold]--keep-largest N[/bold] components per label) and resampled back onto the input's grid with nearest neighbour, so the mask overlays the input in any viewer ([bold]--interpolation linear[/bold]: the class probabilities are interpolated onto it instead, a slab at a time, and the labels taken there). [bold]--probabilities[/bold] also writes one float map per class (<name>_prob_<class>). Memory stays bounded: the volume is processed in slabs along z. OUT is a folder (or a file for one input).

[bold]classify[/bold] checkpoints: OUT is one CSV [bold]case_id,prob_<class>...,pred[/bold] (case id = file name without its suffix), volumes in batches of [bold]--batch-size[/bold], ready for [bold]medtool score --metric auc --metric accuracy[/bold].

[bold]detect[/bold] checkpoints: 2D X-rays (DICOM of any file name, PNG, or volume files) are letterboxed to the recipe's size and normalised as in training; OUT is one CSV [bold]patientId,PredictionString[/bold] with [bold]conf x y w h[/bold] groups in the original image's pixels, best first (an empty string for no box): boxes scoring at least [bold]--min-score[/bold] (default: the cut that gave the best validation map-iou), after NMS at IoU [bold]--nms[/bold], at most [bold]--max-boxes[/bold] per image, ready for [bold]medtool score --truth boxes.csv OUT --metric map-iou[/bold].

Examples:
[bold]medtool predict runs/lung/best.pt hu/ masks/ --keep-largest 1 --tta[/bold]
[bold]medtool predict runs/recist/fold_0/last.pt crops/ predictions.csv[/bold]
[bold]medtool predict runs/cxr/best.pt phantom/cxr/ submission.csv --min-score 0.4 --nms 0.3[/bold]
"""

_SEG = "Segmentation checkpoints"
_DET = "Detection checkpoints"


def register(app: typer.Typer) -> None:
    @common.command(app, "predict", shared=("device", "workers", "shard", "force"), help=_HELP)
    def predict(
        checkpoint: Annotated[Path, typer.Argument(help="best.pt or last.pt of a run, or the run folder of train --cv (its folds' probabilities averaged).", show_default=False)],
        paths: common.paths_argument("Volumes or folders, then the output (folder or file; a .csv for classify).",
                                     metavar="INPUT... OUT"),
        *,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows (segment), volumes (classify) or images (detect) per forward pass.")] = 4,
        amp: Annotated[str, typer.Option("--amp", help="Mixed precision: auto (CUDA: bf16 when supported, else fp16; CPU: off), bf16 (also CPUs with AVX512-BF16/AMX), fp16 (CUDA), off.")] = "auto",
        overlap: Annotated[float, typer.Option("--overlap", help="Overlap of neighbouring windows (fraction).", rich_help_panel=_SEG)] = 0.5,
        blend: Annotated[str, typer.Option("--blend", help="gaussian or constant window weighting.", rich_help_panel=_SEG)] = "gaussian",
        tta: Annotated[bool, typer.Option("--tta", help="Average over all axis flips.", rich_help_panel=_SEG)] = False,
        keep_largest: Annotated[int | None, typer.Option("--keep-largest", min=0, help="Keep the N largest components of each label (0: all) [default: the checkpoint's plan: 1 when every training case held one component of each class].", rich_help_panel=_SEG)] = None,
        threshold: Annotated[float | None, typer.Option("--threshold", help="Foreground probability cut [default: arg-max / 0.5].", rich_help_panel=_SEG)] = None,
        probabilities: Annotated[bool, typer.Option("--probabilities", help="Also write float probability maps.", rich_help_panel=_SEG)] = False,
        interpolation: Annotated[str | None, typer.Option("--interpolation", help="How labels return to the input's grid: nearest (arg-max at the model's spacing, then nearest neighbour) or linear (probabilities interpolated in slabs, then arg-max, as nnU-Net: smoother edges) [default: the checkpoint's plan: linear for small structures, else nearest].", rich_help_panel=_SEG)] = None,
        fmt: Annotated[str | None, typer.Option("--format", help="Output format [default: the input's]; dcm-seg or rtstruct: a DICOM SEG or RT Structure Set of the --ref series.", rich_help_panel=_SEG)] = None,
        ref: Annotated[list[Path] | None, typer.Option("--ref", metavar="DICOM_DIR", help="With --format dcm-seg|rtstruct: the DICOM series the inputs were converted from (as medtool todicom).", rich_help_panel=_SEG)] = None,
        min_score: Annotated[float | None, typer.Option("--min-score", help="Keep boxes scoring at least this [default: the checkpoint's validated cut].", rich_help_panel=_DET)] = None,
        nms: Annotated[float | None, typer.Option("--nms", help="NMS IoU threshold [default: the checkpoint's].", rich_help_panel=_DET)] = None,
        max_boxes: Annotated[int, typer.Option("--max-boxes", min=1, help="Most boxes per image.", rich_help_panel=_DET)] = 100,
        suffix: Annotated[str, typer.Option("--suffix", help="segment: added to each output name after the case id (e.g. _lungs); outputs are named <case><suffix>.<format>.")] = "",
        image_suffix: Annotated[str | None, typer.Option("--image-suffix", help="The inputs are named <case><suffix> (_masked, _flair, _0000); other files are left out and the case id is the name without it [default: the checkpoint's, from training].")] = None,
        folds: Annotated[Path | None, typer.Option("--folds", metavar="FOLDS.csv", help="With --fold: predict only the cases of that fold.")] = None,
        fold: Annotated[str | None, typer.Option("--fold", metavar="K|test", help="The fold of --folds to predict (a number, or test).")] = None,
        cases: Annotated[Path | None, typer.Option("--cases", metavar="FILE.csv", help="Predict only the cases of this table (its case_id column, else its first).")] = None,
        json: common.WrittenJson = False,
        opts: common.Options,
    ) -> int:
        import torch

        from ..datasets import read_selection, select_files
        from ..errors import InputError, UsageError
        from ..files import VOLUME_SUFFIXES
        from ..tasks import info
        values = dict(locals())
        if len(paths) < 2:
            raise UsageError("give at least one INPUT and the OUT folder")
        *inputs, out = paths
        selection = read_selection(folds=folds, fold=fold, cases=cases)
        device = opts.torch_device()
        torch.set_num_threads(max(1, opts.workers))
        state, ensemble = _checkpoints(checkpoint, opts)
        values["ensemble"] = ensemble
        task = state["task"]
        if task not in _PREDICTORS:
            raise UsageError(f"predict for a {task} checkpoint is not available",
                             hint=f"this medtool predicts {', '.join(_PREDICTORS)}")
        entry = info(task)
        if suffix and not entry.per_case_outputs:
            raise UsageError(f"--suffix names per-case outputs; {task} writes one CSV",
                             hint="for inputs named <case>_masked use --image-suffix _masked")
        values["image_suffix"] = common.image_suffix(state, image_suffix, opts)
        if selection is not None or values["image_suffix"]:
            named = inputs
            inputs = select_files(inputs, selection, suffixes=VOLUME_SUFFIXES if entry.reads == "volumes" else None,
                                  strip=values["image_suffix"])
            if not inputs:
                raise InputError(f"no input is named <case>{values['image_suffix']}", path=str(named[0]),
                                 hint="name the inputs so, or give --image-suffix '' (or the suffix they have)")
            if selection is not None and not opts.quiet:
                common.stderr.print(f"predicting {selection.describe(len(inputs))}", highlight=False)
        return _PREDICTORS[task](state, inputs, out, values, device, opts)


def _checkpoints(path: Path, opts: common.Options) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The checkpoint, and for a ``--cv`` run folder the other folds' (averaged with it).

    Raises
    ------
    UsageError
        The folds are of a task without ensembles or were planned differently.
    """
    from ..crossval import fold_checkpoints
    from ..errors import UsageError
    from ..tasks import info, load
    from ..train import load_checkpoint

    if not path.is_dir():
        return load_checkpoint(path), []
    paths = fold_checkpoints(path)
    states = [load_checkpoint(p) for p in paths]
    task = states[0]["task"]
    if len(states) > 1 and not info(task).ensembles:
        raise UsageError(f"averaging {task} folds is not available (boxes would need fusing)",
                         hint=f"predict with one fold: {paths[0]}")
    keys = load(info(task).task).plan_keys
    for other, p in zip(states[1:], paths[1:]):
        differ = sorted(k for k in keys if other["recipe"].get(k) != states[0]["recipe"].get(k))
        if other["task"] != task or differ:
            raise UsageError(f"{p} and {paths[0]} take different inputs ({', '.join(differ) or 'task'})",
                             hint="an ensemble needs the folds of one train --cv run")
    if not opts.quiet:
        common.stderr.print(f"ensemble of {len(states)} folds ({', '.join(p.parent.name for p in paths)}): "
                            "their probabilities averaged", highlight=False)
    return states[0], states[1:]


def _predict_segment(state: dict[str, Any], inputs: list[Path], out: Path, v: dict[str, Any], device,
                     opts: common.Options) -> int:
    from ..segmentation import PredictSettings, predict_files

    writer, fmt = _dicom_writer(v), v["fmt"]
    if writer is not None:
        fmt = None
    keep = int(_planned(state, v["keep_largest"], "keep_largest", "why", 0, quiet=opts.quiet))
    interpolation = _planned(state, v["interpolation"], "interpolation", "interpolation_why", "nearest",
                             quiet=opts.quiet)
    settings = PredictSettings(overlap=v["overlap"], blend=v["blend"], batch_size=v["batch_size"], tta=v["tta"],
                               threshold=v["threshold"], keep_largest=keep,
                               probabilities=v["probabilities"], interpolation=interpolation)
    outcome = predict_files(state, inputs, out, settings=settings, device=device, fmt=fmt, suffix=v["suffix"],
                            image_suffix=v["image_suffix"], force=opts.force, shard=opts.shard, step=opts.step(),
                            amp=v["amp"], progress=opts.show_progress, on_error=opts.report, writer=writer,
                            ensemble=v["ensemble"])
    rows = [r for r in outcome.results if r is not None]
    if v["json"]:
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


def _dicom_writer(v: dict[str, Any]):
    """The DICOM SEG / RTSTRUCT writer of ``--format dcm-seg|rtstruct --ref DIR``, else ``None``."""
    from ..dicomlabels import DICOM_FORMATS, Algorithm, DicomLabelWriter, scan_references
    from ..errors import UsageError

    if v["fmt"] not in DICOM_FORMATS:
        if v["ref"]:
            raise UsageError("--ref goes with --format dcm-seg or rtstruct")
        return None
    if not v["ref"]:
        raise UsageError(f"--format {v['fmt']} needs --ref DICOM_DIR (the series the inputs came from)")
    if v["probabilities"]:
        raise UsageError(f"--probabilities writes volume files, not --format {v['fmt']}")
    source = str(v["checkpoint"])
    algorithm = Algorithm(source=source if len(source) <= 64 else "..." + source[-61:])
    return DicomLabelWriter(v["fmt"], scan_references(v["ref"]), algorithm)


def _predict_classify(state: dict[str, Any], inputs: list[Path], out: Path, v: dict[str, Any], device,
                      opts: common.Options) -> int:
    from ..classify import predict_files

    outcome = predict_files(state, inputs, out, batch_size=v["batch_size"], device=device, amp=v["amp"],
                            image_suffix=v["image_suffix"], ensemble=v["ensemble"], force=opts.force,
                            workers=opts.workers, shard=opts.shard, progress=opts.show_progress,
                            on_error=opts.report)
    rows = [r for r in outcome.results if r is not None]
    if v["json"]:
        common.print_json({"output": str(out), "predictions": rows})
    elif rows:
        from rich.table import Table

        columns = list(rows[0])
        table = Table(box=None, pad_edge=False, title=str(out), title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns])
        common.stdout.print(table)
    return common.report_failures(outcome.failures, len(outcome.results))


def _predict_detect(state: dict[str, Any], inputs: list[Path], out: Path, v: dict[str, Any], device,
                    opts: common.Options) -> int:
    from ..detection import PredictSettings, predict_files

    settings = PredictSettings(min_score=v["min_score"], nms=v["nms"], max_boxes=v["max_boxes"],
                               batch_size=v["batch_size"])
    outcome = predict_files(state, inputs, out, settings=settings, device=device, amp=v["amp"],
                            force=opts.force, shard=opts.shard, progress=opts.show_progress, on_error=opts.report)
    rows = [r for r in outcome.results if r is not None]
    if v["json"]:
        common.print_json({"output": str(out), "images": rows})
    else:
        found = sum(r["boxes"] for r in rows)
        common.stdout.print(f"{out}: {len(rows)} images, {found} boxes on "
                            f"{sum(1 for r in rows if r['boxes'])} images", highlight=False)
    return common.report_failures(outcome.failures, len(outcome.results))


#: Task name -> how predict runs a checkpoint of that task.
_PREDICTORS: dict[str, Callable[..., int]] = {
    "segment": _predict_segment,
    "classify": _predict_classify,
    "detect": _predict_detect,
}


def _planned(state, given, key: str, why: str, default, *, quiet: bool):
    """An inference setting: ``given``, else the checkpoint's plan (said on stderr), else ``default``."""
    if given is not None:
        return given
    planned = state["recipe"].get("inference", {})
    if key not in planned:
        return default
    option = "--" + key.replace("_", "-")
    if not quiet:
        common.stderr.print(f"{option} {planned[key]} (planned in training: {planned.get(why, '')}; "
                            f"change with {option})", highlight=False)
    return planned[key]
