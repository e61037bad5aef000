"""``medtool train``: train a model for one task (segment, classify, ...) into a run folder.

The command parses the options, hands the task's own ones to that task's options builder
(:data:`_TASK_OPTIONS`: one small function per task) and runs :func:`medtool.train.fit`, or
:func:`medtool.crossval.cross_validate` with ``--cv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from . import common

_HELP = """Train a model; the run folder gets best.pt, last.pt, log.csv and curve.png.

[bold]--task segment[/bold]: images and masks matched by case id ([bold]--images DIR --masks DIR[/bold], masks named <case><suffix> for each [bold]--mask-suffix[/bold], merged into one label map), or [bold]--csv[/bold] with case_id,image,mask. Each case is resampled to the recipe's spacing (default: the median of the training images), normalised (CT window to [0, 1] for HU volumes) and cached under RUN/cache, then memory-mapped. [bold]--dim 3d[/bold] samples patches ([bold]--patch Z Y X[/bold]) with a foreground share [bold]--pos-ratio[/bold]; [bold]--dim 2d[/bold] samples slices. A U-Net (depth, width, norm, dropout, residual blocks, deep supervision, upsampling all configurable) is trained with the chosen loss and torch augmentation on the device (and lesion copy-paste: [bold]--aug paste=0.5 --aug paste_into=-1000,-300[/bold]); validation is full-volume sliding-window Dice per label on [bold]--fold K[/bold] of [bold]--folds[/bold] (else a random --val-fraction), nnU-Net's way: a case where neither truth nor prediction holds the label is left out of its mean and a false positive on a case without it scores 0, so predicting nothing cannot win best.pt; the volume predicted on cases without the label is reported as fp_ml_<label>. [bold]--resume[/bold] continues RUN/last.pt. Under [bold]torchrun --nproc_per_node N[/bold] it runs DistributedDataParallel.

[bold]--task classify[/bold]: whole volumes (or 2D images with [bold]--dim 2d[/bold]) under [bold]--images[/bold] and their classes in [bold]--labels[/bold] CSV ([bold]--id-column[/bold], [bold]--label-column[/bold]); every image needs a label and every label an image. Each volume is resampled to [bold]--spacing[/bold] and brought to one [bold]--shape Z Y X[/bold] (in-plane resampled, centre slices kept; default: the median of the training volumes), normalised and cached. A CNN ([bold]--model simple3d[/bold], the seeds' 3-block net, or resnet3d-10 / resnet3d-18; 2D variants with --dim 2d) is trained with cross-entropy, class weights against imbalance ([bold]--class-weights balanced[/bold]) and torch augmentation; accuracy, balanced accuracy and AUC are validated each epoch. [bold]--cv[/bold] trains every fold of [bold]--folds[/bold] in turn (RUN/fold_K/, each a normal run) and writes the out-of-fold predictions RUN/oof.csv and the mean and spread of the metrics RUN/cv.json.

[bold]--task detect[/bold]: 2D chest X-rays under [bold]--images[/bold] (DICOM of any file name, PNG, or volume files; image id = file name without its suffix) and the RSNA box table [bold]--boxes[/bold] (patientId,x,y,width,height,Target; Target 0 rows for images without boxes). Ids without an image, images without a row, boxes outside their image or non-2D inputs stop the run before training. Each image is letterboxed to [bold]--size[/bold] pixels (aspect kept, boxes scaled), z-scored and cached. A torchvision RetinaNet ([bold]--model resnet50-fpn[/bold], resnet34-fpn, or resnet18-fpn for CPUs; one input channel, one class, built without downloads; [bold]--weights FILE[/bold] loads a local ResNet/RetinaNet state dict) with anchors planned from the training boxes ([bold]--anchor-sizes[/bold], [bold]--anchor-ratios[/bold]) is trained with the focal and box losses and box-aware augmentation ([bold]--augment detect[/bold]: scale, rotation up to 6 degrees, shear, shift, horizontal flip, gamma, blur, noise; boxes follow through 8 edge points); the RSNA map-iou is validated each epoch at the best score cut, which predict then uses.

Examples:
[bold]medtool train --task segment --images hu/ --masks truth/ --mask-suffix _lungs --mask-suffix _tumour --dim 3d --patch 32 96 96 --epochs 40 --out runs/lung[/bold]
[bold]medtool train --task classify --images crops/ --labels labels.csv --folds folds.csv --cv --model simple3d --epochs 30 --out runs/recist[/bold]
[bold]medtool train --task detect --images phantom/cxr --boxes phantom/cxr_boxes.csv --model resnet18-fpn --size 256 --epochs 30 --schedule plateau --out runs/cxr[/bold]
"""

_SEG = "Segmentation (--task segment)"
_CLS = "Classification (--task classify)"
_DET = "Detection (--task detect)"
_LOOP = "Training loop"


def register(app: typer.Typer) -> None:
    @common.command(app, "train", shared=("device", "workers", "force"), help=_HELP,
                    short_help="Train a model (segment: U-Net 2D/3D; classify: 2D/3D CNN; detect: RetinaNet) from images.")
    def train(
        *,
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, log, curve, cache).",
                                          show_default=False)],
        task: Annotated[str, typer.Option("--task", help="What to train: segment, classify or detect.")] = "segment",
        images: Annotated[Path | None, typer.Option("--images", help="Folder of training volumes.")] = None,
        folds: Annotated[Path | None, typer.Option("--folds", help="folds.csv (case_id,fold).")] = None,
        fold: Annotated[int | None, typer.Option("--fold", help="Fold to validate on.")] = None,
        val_fraction: Annotated[float, typer.Option("--val-fraction", help="Random validation share without --folds.")] = 0.2,
        dim: Annotated[str, typer.Option("--dim", help="2d or 3d (segment: slices or patches; classify: 2D images or volumes).")] = "3d",
        spacing: Annotated[tuple[float, float, float] | None, typer.Option(
            "--spacing", metavar="Z Y X", help="Model spacing in mm [default: median of the training images].")] = None,
        normalize: Annotated[str, typer.Option("--normalize", help="auto, ct (window to [0, 1]), zscore or none.")] = "auto",
        window: Annotated[tuple[float, float], typer.Option("--window", metavar="LOW HIGH", help="CT window in HU.")] = (-1000.0, 400.0),
        class_names: Annotated[str | None, typer.Option(
            "--class-names", help="Comma-separated class names (segment: labels 1, 2, ...; classify: the order of the classes).")] = None,
        model: Annotated[str | None, typer.Option("--model", help="Network [default: unet for segment, simple3d for classify, resnet50-fpn for detect].")] = None,
        width: Annotated[int | None, typer.Option("--width", min=1, help="Channels of the first level [default: 32 for unet, 16 for simple3d, 32 for resnets].")] = None,
        dropout: Annotated[float | None, typer.Option("--dropout", min=0.0, max=1.0, help="Dropout [default: 0 for segment, 0.3 before the classifier].")] = None,
        augment: Annotated[str | None, typer.Option("--augment", help="none, light, heavy or detect [default: detect for --task detect, else light].")] = None,
        aug: Annotated[list[str] | None, typer.Option("--aug", metavar="KEY=VALUE",
                                                      help="Override one augmentation setting (rotate=30, elastic=0, ...).")] = None,
        # segmentation
        masks: Annotated[Path | None, typer.Option("--masks", help="Folder of masks (named <case><suffix>).", rich_help_panel=_SEG)] = None,
        csv: Annotated[Path | None, typer.Option("--csv", help="CSV case_id,image,mask instead of folders.", rich_help_panel=_SEG)] = None,
        mask_suffix: Annotated[list[str] | None, typer.Option(
            "--mask-suffix", help="Mask name after the case id; repeat to merge masks [default: none].", rich_help_panel=_SEG)] = None,
        patch: Annotated[tuple[int, int, int] | None, typer.Option(
            "--patch", metavar="Z Y X", help="Patch size (Z is 1 for --dim 2d) [default: planned from the data].", rich_help_panel=_SEG)] = None,
        pos_ratio: Annotated[float, typer.Option("--pos-ratio", help="Share of patches centred on foreground.", rich_help_panel=_SEG)] = 0.33,
        activation: Annotated[str, typer.Option("--activation", help="auto, sigmoid (one class) or softmax.", rich_help_panel=_SEG)] = "auto",
        depth: Annotated[int, typer.Option("--depth", min=2, help="Levels of the U-Net.", rich_help_panel=_SEG)] = 5,
        norm: Annotated[str, typer.Option("--norm", help="instance or batch.", rich_help_panel=_SEG)] = "instance",
        residual: Annotated[bool, typer.Option("--residual", help="Residual blocks.", rich_help_panel=_SEG)] = False,
        deep_supervision: Annotated[bool, typer.Option("--deep-supervision", help="Loss on every decoder level.", rich_help_panel=_SEG)] = False,
        channels_last: Annotated[bool | None, typer.Option("--channels-last/--contiguous", help="Memory layout of weights and activations [default: the faster here, timed on a few training steps of each].", rich_help_panel=_SEG)] = None,
        upsample: Annotated[str, typer.Option("--upsample", help="transpose or interpolate.", rich_help_panel=_SEG)] = "transpose",
        loss: Annotated[str, typer.Option("--loss", help="bce-dice, dice-ce, dice, jaccard or focal.", rich_help_panel=_SEG)] = "dice-ce",
        ce_weight: Annotated[float, typer.Option("--ce-weight", help="Weight of the (B)CE term of bce-dice.", rich_help_panel=_SEG)] = 1.0,
        dice_weight: Annotated[float, typer.Option("--dice-weight", help="Weight of the Dice term of bce-dice.", rich_help_panel=_SEG)] = 1.0,
        batch_dice: Annotated[bool, typer.Option("--batch-dice/--sample-dice", help="Dice over the whole batch, or the mean of each sample's Dice (a small lesion weighs as much as a large one).", rich_help_panel=_SEG)] = True,
        topk: Annotated[float, typer.Option("--topk", min=0.01, max=100, help="Percent of voxels, the hardest, that the cross-entropy of bce-dice/dice-ce averages over (nnU-Net's TopK loss uses 10).", rich_help_panel=_SEG)] = 100.0,
        # classification
        labels: Annotated[Path | None, typer.Option("--labels", help="CSV with a case id and a class per image.", rich_help_panel=_CLS)] = None,
        image_suffix: Annotated[str, typer.Option("--image-suffix", help="Images are named <case><suffix> (e.g. _masked); others in the folder are left out.", rich_help_panel=_CLS)] = "",
        id_column: Annotated[str, typer.Option("--id-column", help="Case id column of --labels (matches the image names); with --cases, the column (e.g. PatientID) joining --labels to the cases.", rich_help_panel=_CLS)] = "case_id",
        cases: Annotated[Path | None, typer.Option("--cases", metavar="CASES.csv", help="dicom2npy's cases.csv: --labels rows keyed by --id-column label every case with that value.", rich_help_panel=_CLS)] = None,
        label_column: Annotated[str, typer.Option("--label-column", help="Class column of --labels.", rich_help_panel=_CLS)] = "label",
        shape: Annotated[tuple[int, int, int] | None, typer.Option(
            "--shape", metavar="Z Y X", help="Model input size (Z is 1 for --dim 2d) [default: median of the training volumes].", rich_help_panel=_CLS)] = None,
        class_weights: Annotated[str, typer.Option(
            "--class-weights", help="balanced (inverse class frequency), none, or one weight per class (0.3,0.7).", rich_help_panel=_CLS)] = "balanced",
        cv: Annotated[bool, typer.Option("--cv", help="Train every fold of --folds; write RUN/oof.csv and RUN/cv.json.", rich_help_panel=_CLS)] = False,
        # detection
        boxes: Annotated[Path | None, typer.Option("--boxes", help="RSNA box table patientId,x,y,width,height,Target.", rich_help_panel=_DET)] = None,
        size: Annotated[int, typer.Option("--size", min=64, help="Square model input in pixels (multiple of 32).", rich_help_panel=_DET)] = 256,
        weights: Annotated[Path | None, typer.Option("--weights", help="Local pretrained state dict (ResNet or RetinaNet); never downloaded.", rich_help_panel=_DET)] = None,
        fpn_width: Annotated[int, typer.Option("--fpn-width", min=8, help="Channels of the FPN and heads (torchvision: 256; 64 trains faster on CPUs).", rich_help_panel=_DET)] = 256,
        anchor_sizes: Annotated[str | None, typer.Option("--anchor-sizes", help="Five base anchor sizes for P3-P7 in model pixels (16,32,64,128,256) [default: planned from the boxes].", rich_help_panel=_DET)] = None,
        anchor_ratios: Annotated[str, typer.Option("--anchor-ratios", help="Anchor height/width ratios.", rich_help_panel=_DET)] = "0.5,1,2",
        nms: Annotated[float, typer.Option("--nms", help="NMS IoU threshold of validation and predict.", rich_help_panel=_DET)] = 0.5,
        # the loop
        epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs [default: 100].", rich_help_panel=_LOOP)] = None,
        steps: Annotated[int | None, typer.Option("--steps", min=1, help="Batches per epoch (per process) [default: 50 for segment; classify, detect: one pass over the training cases, at least 10].", rich_help_panel=_LOOP)] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Samples per batch [default: 2 for segment, 8 for classify and detect].", rich_help_panel=_LOOP)] = None,
        lr: Annotated[float, typer.Option("--lr", help="Learning rate.", rich_help_panel=_LOOP)] = 1e-3,
        weight_decay: Annotated[float, typer.Option("--weight-decay", help="Weight decay.", rich_help_panel=_LOOP)] = 1e-4,
        optimizer: Annotated[str, typer.Option("--optimizer", help="adamw or sgd.", rich_help_panel=_LOOP)] = "adamw",
        schedule: Annotated[str, typer.Option("--schedule", help="cosine, plateau or constant.", rich_help_panel=_LOOP)] = "cosine",
        amp: Annotated[str, typer.Option("--amp", help="Mixed precision: auto (CUDA: bf16 when supported, else fp16; CPU: off), bf16 (also CPUs with AVX512-BF16/AMX: 1.4-1.7x faster for thin 3D U-Nets), fp16 (CUDA), off.", rich_help_panel=_LOOP)] = "auto",
        grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the gradient norm (0: off).", rich_help_panel=_LOOP)] = 12.0,
        patience: Annotated[int, typer.Option("--patience", help="Stop after this many validations without a better score (0: off).", rich_help_panel=_LOOP)] = 0,
        val_every: Annotated[int, typer.Option("--val-every", min=1, help="Validate every N epochs.", rich_help_panel=_LOOP)] = 1,
        max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop after the epoch that passes this wall time (minutes); the cosine schedule then runs over the time.", rich_help_panel=_LOOP)] = None,
        ema: Annotated[float, typer.Option("--ema", help="Keep an exponential moving average of the weights with this decay (0.99-0.999) for validation and the checkpoints (0: off).", rich_help_panel=_LOOP)] = 0.0,
        seed: Annotated[int, typer.Option("--seed", help="Random seed.", rich_help_panel=_LOOP)] = 0,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.", rich_help_panel=_LOOP)] = False,
        json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        from ..errors import UsageError
        from ..train import LAST, TASKS, TrainConfig, fit, load_checkpoint, make_task

        values = dict(locals())
        device = opts.torch_device()
        log = None if opts.quiet else (lambda text: common.stderr.print(text, highlight=False))
        checkpoint = None
        if resume:
            if cv:
                raise UsageError("--cv and --resume do not go together", hint="resume one fold: --out RUN/fold_K --resume")
            checkpoint = load_checkpoint(out / LAST)
            state = checkpoint["training"]
            config = TrainConfig(**state["config"])
            if epochs is not None:
                config.epochs = epochs
            task_obj = make_task(checkpoint["task"], state["options"], recipe=checkpoint["recipe"])
        else:
            if task not in TASKS or task not in _TASK_OPTIONS:
                raise UsageError(f"--task {task}: choose one of {', '.join(t for t in TASKS if t in _TASK_OPTIONS)}")
            options = _TASK_OPTIONS[task](values)
            defaults = _LOOP_DEFAULTS.get(task, {})
            config = TrainConfig(epochs=epochs or 100, steps_per_epoch=steps or defaults.get("steps", 50),
                                 batch_size=batch_size or defaults.get("batch_size", 2), lr=lr,
                                 weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, amp=amp,
                                 grad_clip=grad_clip, patience=patience, val_every=val_every, seed=seed,
                                 max_minutes=max_minutes, ema=ema)
            if cv:
                from ..crossval import cross_validate

                summary = cross_validate(task, options, config, out, device=device, workers=opts.workers,
                                         force=opts.force, progress=opts.show_progress, log=log,
                                         step=opts.step())
                if json:
                    common.print_json(summary)
                else:
                    common.stdout.print(_cv_line(summary), highlight=False)
                return 0
            task_obj = make_task(task, options)
        summary = fit(task_obj, config, out, device=device, workers=opts.workers, resume=resume,
                      force=opts.force, progress=opts.show_progress, log=log, step=opts.step(),
                      checkpoint=checkpoint)
        if summary["rank"] != 0:
            return 0
        if json:
            common.print_json(summary)
        else:
            common.stdout.print(_summary_line(summary), highlight=False)
        return 0


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


# -- the options of each task ---------------------------------------------------------------------------
def _segment_options(v: dict[str, Any]):
    from ..segmentation import SegmentOptions

    given = {k: v[k] for k in ("model", "width", "dropout") if v[k] is not None}
    return SegmentOptions(
        images=_str(v["images"]), masks=_str(v["masks"]), csv=_str(v["csv"]), mask_suffixes=v["mask_suffix"] or [""],
        class_names=_names(v["class_names"]), folds=_str(v["folds"]), fold=v["fold"],
        val_fraction=v["val_fraction"], dim=_dim(v["dim"]), patch=_sizes(v["patch"], v["dim"], "--patch"),
        spacing=list(v["spacing"]) if v["spacing"] else None, normalize=v["normalize"], window=list(v["window"]),
        pos_ratio=v["pos_ratio"], activation=v["activation"], depth=v["depth"], norm=v["norm"],
        residual=v["residual"], deep_supervision=v["deep_supervision"], channels_last=v["channels_last"], upsample=v["upsample"], loss=v["loss"],
        ce_weight=v["ce_weight"], dice_weight=v["dice_weight"], batch_dice=v["batch_dice"], topk=v["topk"], augment=v["augment"] or "light", aug=list(v["aug"] or []),
        **given)


def _classify_options(v: dict[str, Any]):
    from ..classify import ClassifyOptions

    given = {k: v[k] for k in ("model", "width", "dropout") if v[k] is not None}
    return ClassifyOptions(
        images=_str(v["images"]), labels=_str(v["labels"]), image_suffix=v["image_suffix"], id_column=v["id_column"],
        cases=_str(v["cases"]),
        label_column=v["label_column"], class_names=_names(v["class_names"]), folds=_str(v["folds"]),
        fold=v["fold"], val_fraction=v["val_fraction"], dim=_dim(v["dim"]),
        shape=_sizes(v["shape"], v["dim"], "--shape"), spacing=list(v["spacing"]) if v["spacing"] else None,
        normalize=v["normalize"], window=list(v["window"]), class_weights=v["class_weights"],
        augment=v["augment"] or "light", aug=list(v["aug"] or []), **given)


def _detect_options(v: dict[str, Any]):
    from ..detection import DetectOptions

    given = {k: v[k] for k in ("model", "augment") if v[k] is not None}
    return DetectOptions(
        images=_str(v["images"]), boxes=_str(v["boxes"]), folds=_str(v["folds"]), fold=v["fold"],
        val_fraction=v["val_fraction"], size=v["size"], normalize=v["normalize"], window=list(v["window"]),
        weights=_str(v["weights"]), fpn_width=v["fpn_width"], anchor_sizes=_numbers(v["anchor_sizes"], "--anchor-sizes"),
        anchor_ratios=_numbers(v["anchor_ratios"], "--anchor-ratios"), nms=v["nms"],
        class_name=(_names(v["class_names"]) or ["opacity"])[0], aug=list(v["aug"] or []), **given)


def _numbers(text: str | None, option: str) -> list[float] | None:
    from ..errors import UsageError

    if text is None:
        return None
    try:
        return [float(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise UsageError(f"{option} {text}: give comma-separated numbers") from None


#: Task name -> builder of its options dataclass from the command's values.
_TASK_OPTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "segment": _segment_options,
    "classify": _classify_options,
    "detect": _detect_options,
}
#: Loop defaults that differ by task (steps 0: one pass over the training cases).
_LOOP_DEFAULTS: dict[str, dict[str, int]] = {
    "segment": {"steps": 50, "batch_size": 2},
    "classify": {"steps": 0, "batch_size": 8},
    "detect": {"steps": 0, "batch_size": 8},
}


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",")] if text else None


def _dim(text: str) -> int:
    from ..errors import UsageError

    value = text.lower().rstrip("d")
    if value not in ("2", "3"):
        raise UsageError(f"--dim {text}: choose 2d or 3d")
    return int(value)


def _sizes(sizes: tuple[int, int, int] | None, dim: str, option: str) -> list[int] | None:
    """``--patch``/``--shape Z Y X``: three sizes in 3D, ``1 Y X`` in 2D (returned as Y X)."""
    from ..errors import UsageError

    if sizes is None:
        return None
    if _dim(dim) == 2:
        if sizes[0] != 1:
            raise UsageError(f"{option} {' '.join(map(str, sizes))}: a 2d {option[2:]} is 1 Y X")
        return list(sizes[1:])
    return list(sizes)
