"""``medtool train segment|classify|detect``: train a model for one task into a run folder.

Each task is a sub-command with its own options (an option of another task is a usage error)
and its own help; the defaults live in the task's options dataclass and in
:class:`medtool.train.TrainConfig` (loop defaults by task in :data:`medtool.tasks.REGISTRY`),
so a Python caller gets the same ones. The options are declared once here, as groups, and
each sub-command takes the groups it needs. ``medtool train --task X ...`` still works (one
release) and means ``medtool train X ...``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import common
from .common import HelpCommand

_HELP = """Train a model; the run folder gets best.pt, last.pt, log.csv and curve.png.

[bold]medtool train segment[/bold]: a U-Net (2D or 3D) from images and masks (or a Decathlon, nnU-Net or BraTS [bold]--dataset[/bold]). [bold]medtool train classify[/bold]: a CNN from volumes (or 2D images) and a label table. Every task takes [bold]--cv[/bold]. [bold]medtool train detect[/bold]: a RetinaNet from chest X-rays and the RSNA box table. [bold]medtool train TASK --help[/bold] lists each task's options.

Example: [bold]medtool train segment --images hu/ --masks truth/ --mask-suffix _lungs --out runs/lung[/bold]
"""

_TASK_HELP = {
    "segment": """Train a U-Net (2D or 3D) on images and masks; the run folder gets best.pt, last.pt, log.csv and curve.png.

Images and masks are matched by case id ([bold]--images DIR --masks DIR[/bold], masks named <case><suffix> for each [bold]--mask-suffix[/bold], merged into one label map), or [bold]--csv[/bold] with case_id,image,mask, or [bold]--dataset DIR[/bold]: a Decathlon or nnU-Net v2 raw dataset (dataset.json gives the class names and CT or MRI normalisation) or BraTS case folders. Several co-registered input channels (MRI sequences) are stacked: every channel of a dataset, or [bold]--channels flair,t1ce,t2[/bold] (with --images: files <case>_flair, <case>_t1ce, <case>_t2 in one folder or a folder per case; nnU-Net's 0000,0001); each is normalised on its own (CT window for CT, else a z-score, inside the nonzero voxels of skull-stripped images), and predict needs the same channels. Each case is resampled to the recipe's spacing (default: the median of the training images), normalised ([bold]--normalize auto[/bold] decides from the images and says so) and cached under RUN/cache, then memory-mapped. [bold]--dim 3d[/bold] samples patches ([bold]--patch Z Y X[/bold]) with a foreground share [bold]--pos-ratio[/bold]; [bold]--dim 2d[/bold] samples slices. Validation is full-volume sliding-window Dice per label on [bold]--fold K[/bold] of [bold]--folds[/bold] (held-out test cases are never used), else a random --val-fraction, nnU-Net's way: a case where neither truth nor prediction holds the label is left out of its mean and a false positive on a case without it scores 0. [bold]--cv[/bold] trains every fold into RUN/fold_K and writes the out-of-fold masks (RUN/oof/), RUN/oof.csv and RUN/cv.json. [bold]--resume[/bold] continues RUN/last.pt. Under [bold]torchrun --nproc_per_node N[/bold] it runs DistributedDataParallel.

Example: [bold]medtool train segment --images hu/ --masks truth/ --mask-suffix _lungs --dim 3d --patch 32 96 96 --epochs 40 --out runs/lung[/bold]
""",
    "classify": """Train a CNN on whole volumes (or 2D images with [bold]--dim 2d[/bold]) and their classes; the run folder gets best.pt, last.pt, log.csv and curve.png.

Images under [bold]--images[/bold], classes in [bold]--labels[/bold] CSV ([bold]--id-column[/bold], [bold]--label-column[/bold]; with [bold]--cases[/bold] dicom2npy's cases.csv, rows keyed by e.g. PatientID label every case of that patient); every image needs a label and every label an image. Each volume is resampled to [bold]--spacing[/bold] and brought to one [bold]--shape Z Y X[/bold], normalised and cached. The CNN ([bold]--model simple3d[/bold], resnet3d-10 or resnet3d-18) is trained with cross-entropy and class weights ([bold]--class-weights balanced[/bold]); accuracy, balanced accuracy and AUC are validated each epoch. [bold]--cv[/bold] trains every numbered fold of [bold]--folds[/bold] (RUN/fold_K/) and writes the out-of-fold predictions RUN/oof.csv and RUN/cv.json.

Example: [bold]medtool train classify --images crops/ --labels labels.csv --folds folds.csv --cv --epochs 30 --out runs/recist[/bold]
""",
    "detect": """Train a RetinaNet on 2D chest X-rays and the RSNA box table; the run folder gets best.pt, last.pt, log.csv and curve.png.

X-rays under [bold]--images[/bold] (DICOM of any file name, PNG, or volume files; image id = file name without its suffix) and [bold]--boxes[/bold] (patientId,x,y,width,height,Target). Each image is letterboxed to [bold]--size[/bold] pixels, normalised and cached. A torchvision RetinaNet ([bold]--model resnet50-fpn[/bold], resnet34-fpn, or resnet18-fpn for CPUs; built without downloads; [bold]--weights FILE[/bold] loads a local state dict) with anchors planned from the training boxes is trained with the focal and box losses and box-aware augmentation; the RSNA map-iou is validated each epoch at the best score cut, which predict then uses. [bold]--cv[/bold] trains every fold of [bold]--folds[/bold] (e.g. from medtool folds stage_2_train_labels.csv --id-column patientId) and writes the out-of-fold boxes RUN/oof.csv and RUN/cv.json.

Example: [bold]medtool train detect --images phantom/cxr --boxes phantom/cxr_boxes.csv --model resnet18-fpn --size 256 --epochs 30 --out runs/cxr[/bold]
""",
}

_DATA, _MODEL, _LOOP = "Data", "Model and augmentation", "Training loop"
_O = typer.Option


def _opt(kind: Any, *flags: str, panel: str, **settings: Any) -> Any:
    """An option of a train sub-command (its default is None: the task's own, filled in by the
    library and shown in --help by :class:`_TrainCommand`)."""
    return Annotated[kind, _O(*flags, rich_help_panel=panel, show_default=False, **settings)]


# -- the option groups: name -> annotation (every default None: the library decides) ----------------
_COMMON = {
    "images": _opt(Path | None, "--images", panel=_DATA, help="Folder of training images."),
    "folds": _opt(Path | None, "--folds", panel=_DATA, help="folds.csv (case_id,fold) from medtool folds."),
    "fold": _opt(int | None, "--fold", panel=_DATA, help="Fold to validate on."),
    "val_fraction": _opt(float | None, "--val-fraction", panel=_DATA, help="Random validation share without --folds."),
    "normalize": _opt(str | None, "--normalize", panel=_DATA, help="auto, ct (window to [0, 1]), zscore or none."),
    "window": _opt(tuple[float, float] | None, "--window", metavar="LOW HIGH", panel=_DATA, help="CT window in HU."),
    "model": _opt(str | None, "--model", panel=_MODEL, help="Network."),
    "augment": _opt(str | None, "--augment", panel=_MODEL, help="Augmentation preset: none, light, heavy (detect: detect)."),
    "aug": _opt(list[str] | None, "--aug", metavar="KEY=VALUE", panel=_MODEL,
                help="Override one augmentation setting (rotate=30, elastic=0, ...)."),
}
_VOLUMES = {
    "dim": _opt(str | None, "--dim", panel=_DATA, help="2d or 3d."),
    "spacing": _opt(tuple[float, float, float] | None, "--spacing", metavar="Z Y X", panel=_DATA,
                    help="Model spacing in mm (planned from the training images when not given)."),
    "class_names": _opt(str | None, "--class-names", panel=_DATA, help="Comma-separated class names."),
    "width": _opt(int | None, "--width", min=1, panel=_MODEL, help="Channels of the first level."),
    "dropout": _opt(float | None, "--dropout", min=0.0, max=1.0, panel=_MODEL, help="Dropout."),
    "channels": _opt(str | None, "--channels", panel=_DATA,
                     help="Input channels in order (flair,t1ce,t2): files <case>_NAME beside each other, or a dataset's channel names [default: all of them]."),
    "image_suffix": _opt(str | None, "--image-suffix", panel=_DATA,
                         help="Images are named <case><suffix> (_masked, _flair); others in the folder are left out."),
}
_SEGMENT = {
    "masks": _opt(Path | None, "--masks", panel=_DATA, help="Folder of masks (named <case><suffix>)."),
    "csv": _opt(Path | None, "--csv", panel=_DATA, help="CSV case_id,image,mask instead of folders."),
    "dataset": _opt(Path | None, "--dataset", panel=_DATA,
                    help="A Decathlon or nnU-Net v2 raw dataset (dataset.json), or a BraTS folder of case folders."),
    "clip_percentiles": _opt(tuple[float, float] | None, "--clip-percentiles", metavar="LOW HIGH", panel=_DATA,
                             help="Clip each z-scored channel to these percentiles of its foreground first (e.g. 0.5 99.5)."),
    "mask_suffix": _opt(list[str] | None, "--mask-suffix", panel=_DATA,
                        help="Mask name after the case id; repeat to merge masks."),
    "patch": _opt(tuple[int, int, int] | None, "--patch", metavar="Z Y X", panel=_DATA,
                  help="Patch size (Z is 1 for --dim 2d; planned from the data when not given)."),
    "pos_ratio": _opt(float | None, "--pos-ratio", panel=_DATA, help="Share of patches centred on foreground."),
    "activation": _opt(str | None, "--activation", panel=_MODEL, help="auto, sigmoid (one class) or softmax."),
    "regions": _opt(str | None, "--regions", panel=_MODEL,
                    help="Train overlapping regions, one sigmoid each (nnU-Net's region-based training): brats (wt=1+2+3+4, tc=1+3+4, et=4), brats2023, or NAME=L+L,..."),
    "depth": _opt(int | None, "--depth", min=2, panel=_MODEL, help="Levels of the U-Net."),
    "norm": _opt(str | None, "--norm", panel=_MODEL, help="instance or batch."),
    "residual": _opt(bool | None, "--residual", panel=_MODEL, help="Residual blocks."),
    "deep_supervision": _opt(bool | None, "--deep-supervision", panel=_MODEL,
                             help="Loss on every decoder level."),
    "channels_last": _opt(bool | None, "--channels-last/--contiguous", panel=_MODEL,
                          help="Memory layout (not given: the faster here, timed on a few training steps)."),
    "upsample": _opt(str | None, "--upsample", panel=_MODEL, help="transpose or interpolate."),
    "loss": _opt(str | None, "--loss", panel=_MODEL, help="bce-dice, dice-ce, dice, jaccard or focal."),
    "ce_weight": _opt(float | None, "--ce-weight", panel=_MODEL, help="Weight of the (B)CE term."),
    "dice_weight": _opt(float | None, "--dice-weight", panel=_MODEL, help="Weight of the Dice term."),
    "batch_dice": _opt(bool | None, "--batch-dice/--sample-dice", panel=_MODEL,
                       help="Dice over the whole batch, or the mean of each sample's Dice."),
    "topk": _opt(float | None, "--topk", min=0.01, max=100, panel=_MODEL,
                 help="Percent of voxels, the hardest, that the cross-entropy averages over (nnU-Net's TopK: 10)."),
}
_CLASSIFY = {
    "labels": _opt(Path | None, "--labels", panel=_DATA, help="CSV with a case id and a class per image."),
    "id_column": _opt(str | None, "--id-column", panel=_DATA,
                      help="Case id column of --labels; with --cases, the column (e.g. PatientID) joining them."),
    "cases": _opt(Path | None, "--cases", metavar="CASES.csv", panel=_DATA,
                  help="dicom2npy's cases.csv: --labels rows keyed by --id-column label every case with that value."),
    "label_column": _opt(str | None, "--label-column", panel=_DATA, help="Class column of --labels."),
    "shape": _opt(tuple[int, int, int] | None, "--shape", metavar="Z Y X", panel=_DATA,
                  help="Model input size (Z is 1 for --dim 2d; the median of the training volumes when not given)."),
    "crop": _opt(str | None, "--crop", panel=_DATA,
                 help="foreground: cut each image to the box of what differs from its constant outside (a masked CT); auto: when every training image has one; none."),
    "pool": _opt(str | None, "--pool", panel=_MODEL,
                 help="Global pooling before the last layer: avgmax (average and maximum side by side), avg or max."),
    "class_weights": _opt(str | None, "--class-weights", panel=_MODEL,
                          help="balanced (inverse class frequency), none, or one weight per class (0.3,0.7)."),
}
_DETECT = {
    "boxes": _opt(Path | None, "--boxes", panel=_DATA, help="RSNA box table patientId,x,y,width,height,Target."),
    "size": _opt(int | None, "--size", min=64, panel=_DATA, help="Square model input in pixels (multiple of 32)."),
    "class_name": _opt(str | None, "--class-name", panel=_DATA, help="Name of the detected class."),
    "weights": _opt(Path | None, "--weights", panel=_MODEL, help="Local pretrained state dict (ResNet or RetinaNet); never downloaded."),
    "fpn_width": _opt(int | None, "--fpn-width", min=8, panel=_MODEL, help="Channels of the FPN and heads (64 trains faster on CPUs)."),
    "anchor_sizes": _opt(str | None, "--anchor-sizes", panel=_MODEL,
                         help="Five base anchor sizes for P3-P7 in model pixels (planned from the boxes when not given)."),
    "anchor_ratios": _opt(str | None, "--anchor-ratios", panel=_MODEL, help="Anchor height/width ratios."),
    "nms": _opt(float | None, "--nms", panel=_MODEL, help="NMS IoU threshold of validation and predict."),
}
_PLAN = {"plan_only": Annotated[bool, _O("--plan-only", rich_help_panel=_LOOP,
                                          help="Preprocess, print the plan (a line per value: planned, given or default, and why) "
                                               "and write RUN/plan.json; train nothing.")]}
_CV = {"cv": Annotated[bool, _O("--cv", rich_help_panel=_LOOP,
                                help="Train every numbered fold of --folds into RUN/fold_K; write the out-of-fold "
                                     "RUN/oof.csv and RUN/cv.json (--max-minutes: the whole run).")]}
#: The training loop's options: fields of :class:`medtool.train.TrainConfig` (:data:`_LOOP_FIELDS`).
_LOOP_OPTIONS = {
    "epochs": _opt(int | None, "--epochs", min=1, panel=_LOOP, help="Epochs."),
    "steps": _opt(int | None, "--steps", min=1, panel=_LOOP,
                  help="Batches per epoch per process (0 in the defaults: one pass over the training cases, at least 10)."),
    "batch_size": _opt(int | None, "--batch-size", min=1, panel=_LOOP, help="Samples per batch."),
    "lr": _opt(float | None, "--lr", panel=_LOOP, help="Learning rate."),
    "weight_decay": _opt(float | None, "--weight-decay", panel=_LOOP, help="Weight decay."),
    "optimizer": _opt(str | None, "--optimizer", panel=_LOOP, help="adamw or sgd."),
    "schedule": _opt(str | None, "--schedule", panel=_LOOP, help="cosine, plateau or constant."),
    "amp": _opt(str | None, "--amp", panel=_LOOP,
                help="Mixed precision: auto (CUDA: bf16 when supported, else fp16; CPU: off), bf16, fp16 (CUDA), off."),
    "grad_clip": _opt(float | None, "--grad-clip", panel=_LOOP, help="Clip the gradient norm (0: off)."),
    "patience": _opt(int | None, "--patience", panel=_LOOP, help="Stop after this many validations without a better score (0: off)."),
    "val_every": _opt(int | None, "--val-every", min=1, panel=_LOOP, help="Validate every N epochs."),
    "max_minutes": _opt(float | None, "--max-minutes", panel=_LOOP,
                        help="Stop after the epoch that passes this wall time (minutes); the cosine schedule runs over the time."),
    "ema": _opt(float | None, "--ema", panel=_LOOP, help="Exponential moving average of the weights with this decay (0: off)."),
    "seed": _opt(int | None, "--seed", panel=_LOOP, help="Random seed."),
    "log": _opt(str | None, "--log", panel=_LOOP,
                help="Experiment tracking: tensorboard (RUN/tensorboard/), mlflow (a file store RUN/mlruns/), both (tensorboard,mlflow) or none."),
}
_RUN = {
    "out": Annotated[Path, _O("--out", "-o", help="Run folder (checkpoints, log, curve, cache).", show_default=False)],
    **_LOOP_OPTIONS,
    "resume": Annotated[bool, _O("--resume", rich_help_panel=_LOOP, help="Continue the run in --out from its last.pt.")],
    "json": Annotated[bool, _O("--json", help="Print the summary as JSON.")],
}
#: The groups of each task's sub-command.
_GROUPS = {
    "segment": (_COMMON, _VOLUMES, _SEGMENT, _CV, _PLAN, _RUN),
    "classify": (_COMMON, _VOLUMES, _CLASSIFY, _CV, _PLAN, _RUN),
    "detect": (_COMMON, {"class_names": _VOLUMES["class_names"]}, _DETECT, _CV, _PLAN, _RUN),
}
#: Command-line names that differ from the options dataclass's field names.
_FIELDS = {"mask_suffix": "mask_suffixes"}
#: Loop options whose TrainConfig field has another name than the option.
_LOOP_RENAMED = {"steps": "steps_per_epoch"}
#: Loop options (TrainConfig fields) by their command-line names.
_LOOP_FIELDS = {name: _LOOP_RENAMED.get(name, name) for name in _LOOP_OPTIONS}


class _TrainGroup(TyperGroup):
    """``medtool train --task X ...`` (one release) is ``medtool train X ...``; ``medtool
    train`` with options but no task is ``medtool train segment`` (as --task's old default)."""

    def parse_args(self, ctx, args):
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--task" and i + 1 < len(args):
                task = args[i + 1]
                del args[i:i + 2]
                args.insert(0, task)
                break
            if arg.startswith("--task="):
                del args[i]
                args.insert(0, arg.split("=", 1)[1])
                break
        else:
            if args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
                args.insert(0, "segment")
        return super().parse_args(ctx, args)


class _TrainCommand(HelpCommand):
    """A train sub-command whose --help shows the library's defaults (read from the task's
    options dataclass and the loop config only when help is printed, so ``medtool --help``
    imports nothing of the learning layer)."""

    task = ""

    def format_help(self, ctx, formatter):
        defaults = library_defaults(ctx.info_name)
        for param in self.params:
            value = defaults.get(param.name)
            if value not in (None, "", []) and param.help and "[default:" not in param.help:
                shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
                param.help += f" \\[default: {shown}]"
        return super().format_help(ctx, formatter)


def library_defaults(task: str) -> dict[str, Any]:
    """The defaults a train sub-command's options take, by command-line name: the task's
    options dataclass, the loop config and the task's loop defaults."""
    from dataclasses import MISSING, fields

    from ..tasks import info, load
    from ..train import TrainConfig

    entry = info(task)
    out: dict[str, Any] = {}
    for f in fields(load(entry.options)):
        value = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
        out[f.name] = value
    out["mask_suffix"] = None
    if "dim" in out:
        out["dim"] = f"{out['dim']}d"
    loop = TrainConfig(steps_per_epoch=entry.steps, batch_size=entry.batch_size)
    out.update({cli: getattr(loop, name) for cli, name in _LOOP_FIELDS.items()})
    return out


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="train", cls=_TrainGroup, help=_HELP, no_args_is_help=True,
                        rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})
    for task, groups in _GROUPS.items():
        _register_task(group, task, groups)
    app.add_typer(group)


def _register_task(group: typer.Typer, task: str, groups) -> None:
    annotations = {name: kind for g in groups for name, kind in g.items()}
    parameters = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                    default=inspect.Parameter.empty if name == "out" else
                                    (False if name in ("cv", "resume", "json", "plan_only") else None))
                  for name, kind in annotations.items()]
    parameters.append(inspect.Parameter("opts", inspect.Parameter.KEYWORD_ONLY, annotation=common.Options))

    def run(**values: Any) -> int:
        return _train(task, values)

    run.__signature__ = inspect.Signature(parameters)
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    run.__name__ = f"train_{task}"
    common.command(group, task, shared=("device", "workers", "force"), help=_TASK_HELP[task], cls=_TrainCommand,
                   short_help=_TASK_HELP[task].split(";")[0])(run)


def _train(task: str, values: dict[str, Any]) -> int:
    from ..tasks import make_task
    from ..train import LAST, fit, load_checkpoint

    opts: common.Options = values.pop("opts")
    out, resume, cv, json = values.pop("out"), values.pop("resume"), values.pop("cv", False), values.pop("json")
    plan_only = values.pop("plan_only", False)
    device = opts.torch_device()
    log = None if opts.quiet else (lambda text: common.stderr.print(text, highlight=False))
    checkpoint = None
    if resume:
        from ..train import TrainConfig
        from ..errors import UsageError

        if cv:
            raise UsageError("--cv and --resume do not go together", hint="resume one fold: --out RUN/fold_K --resume")
        checkpoint = load_checkpoint(out / LAST)
        state = checkpoint["training"]
        config = TrainConfig(**state["config"])
        for name in ("epochs", "log"):           # what a resumed run may change
            if values.get(name) is not None:
                setattr(config, name, values[name])
        task_obj = make_task(checkpoint["task"], state["options"], recipe=checkpoint["recipe"])
    else:
        options, config = task_options(task, values), loop_config(task, values)
        if cv:
            from ..crossval import cross_validate

            summary = cross_validate(task, options, config, out, device=device, workers=opts.workers,
                                     force=opts.force, progress=opts.show_progress, log=log, step=opts.step())
            common.print_json(summary) if json else common.stdout.print(_cv_line(summary), highlight=False)
            return 0
        task_obj = make_task(task, options)
        if plan_only:
            from ..train import plan_only as plan_run

            result = plan_run(task_obj, config, out, device=device, workers=opts.workers, progress=opts.show_progress,
                              log=log)
            if json:
                common.print_json(result)
            return 0
    summary = fit(task_obj, config, out, device=device, workers=opts.workers, resume=resume, force=opts.force,
                  progress=opts.show_progress, log=log, step=opts.step(), checkpoint=checkpoint)
    if summary["rank"] == 0:
        common.print_json(summary) if json else common.stdout.print(_summary_line(summary), highlight=False)
    return 0


def task_options(task: str, values: dict[str, Any]):
    """The task's options dataclass from the given command-line values (None: its default)."""
    from ..tasks import info, load

    given = {_FIELDS.get(k, k): _convert(k, v, values) for k, v in values.items()
             if v is not None and k not in _LOOP_FIELDS}
    if task == "detect" and "class_names" in given:         # detect has one class
        given["class_name"] = given.pop("class_names")[0]
    return load(info(task).options)(**given, given=sorted(given))


def loop_config(task: str, values: dict[str, Any]):
    """:class:`medtool.train.TrainConfig` from the given values, else the task's loop defaults."""
    from ..tasks import info
    from ..train import TrainConfig

    entry = info(task)
    config = TrainConfig(steps_per_epoch=entry.steps, batch_size=entry.batch_size, given=[])
    for cli, name in _LOOP_FIELDS.items():
        if values.get(cli) is not None:
            setattr(config, name, values[cli])
            config.given.append(name)
    return config


def _convert(name: str, value: Any, values: dict[str, Any]) -> Any:
    """A command-line value in the options dataclass's terms."""
    if isinstance(value, Path):
        return str(value)
    if name == "dim":
        return _dim(value)
    if name in ("patch", "shape"):
        return _sizes(value, values.get("dim") or "3d", f"--{name}")
    if name in ("spacing", "window", "aug", "clip_percentiles"):
        return list(value)
    if name == "mask_suffix":
        return list(value) or [""]
    if name in ("class_names", "channels"):
        return [n.strip() for n in value.split(",") if n.strip()]
    if name in ("anchor_sizes", "anchor_ratios"):
        return _numbers(value, f"--{name.replace('_', '-')}")
    return value


def _summary_line(summary: dict[str, Any]) -> str:
    metrics = {k: v for k, v in summary["metrics"].items() if k != "score"}
    dice = ", ".join(f"{k[5:]} {v:.3f}" for k, v in metrics.items() if k.startswith("dice_"))
    other = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if not k.startswith("dice_"))
    return (f"{summary['run']}: {summary['epochs']} epochs ({summary['stopped']}), best epoch "
            f"{summary['best_epoch']}" + (f", its validation Dice {dice}" if dice else "")
            + (f", {'' if dice else 'its '}validation {other}" if other else "")
            + f", {summary['samples_per_s']:.1f} samples/s, data wait {summary['data_wait']:.0%}")


def _cv_line(summary: dict[str, Any]) -> str:
    parts = [f"{name} {s['mean']:.3f} ± {s['std']:.3f}" for name, s in summary["metrics"].items()]
    return (f"{summary['run']}: {summary['folds']}-fold cross-validation, out-of-fold "
            f"{summary['oof']}; per fold (mean ± std): " + ", ".join(parts)
            + "; pooled out-of-fold: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["pooled"].items()))


def _numbers(text: str, option: str) -> list[float]:
    from ..errors import UsageError

    try:
        return [float(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise UsageError(f"{option} {text}: give comma-separated numbers") from None


def _dim(text: str) -> int:
    from ..errors import UsageError

    value = str(text).lower().rstrip("d")
    if value not in ("2", "3"):
        raise UsageError(f"--dim {text}: choose 2d or 3d")
    return int(value)


def _sizes(sizes: tuple[int, int, int], dim: str, option: str) -> list[int]:
    """``--patch``/``--shape Z Y X``: three sizes in 3D, ``1 Y X`` in 2D (returned as Y X)."""
    from ..errors import UsageError

    if _dim(dim) == 2:
        if sizes[0] != 1:
            raise UsageError(f"{option} {' '.join(map(str, sizes))}: a 2d {option[2:]} is 1 Y X")
        return list(sizes[1:])
    return list(sizes)
