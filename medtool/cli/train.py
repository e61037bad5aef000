"""``medtool train``: train a model from volumes and masks (segmentation today)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Train a model; the run folder gets best.pt, last.pt, log.csv and curve.png.

[bold]--task segment[/bold]: images and masks matched by case id ([bold]--images DIR --masks DIR[/bold], masks named <case><suffix> for each [bold]--mask-suffix[/bold], merged into one label map), or [bold]--csv[/bold] with case_id,image,mask. Each case is resampled to the recipe's spacing (default: the median of the training images), normalised (CT window to [0, 1] for HU volumes) and cached under RUN/cache, then memory-mapped. [bold]--dim 3d[/bold] samples patches ([bold]--patch Z Y X[/bold]) with a foreground share [bold]--pos-ratio[/bold]; [bold]--dim 2d[/bold] samples slices. A U-Net (depth, width, norm, dropout, residual blocks, deep supervision, upsampling all configurable) is trained with the chosen loss and torch augmentation on the device; validation is full-volume sliding-window Dice per label on [bold]--fold K[/bold] of [bold]--folds[/bold] (else a random --val-fraction). [bold]--resume[/bold] continues RUN/last.pt. Under [bold]torchrun --nproc_per_node N[/bold] it runs DistributedDataParallel.

Example: [bold]medtool train --task segment --images hu/ --masks truth/ --mask-suffix _lungs --mask-suffix _tumour --dim 3d --patch 32 96 96 --epochs 40 --out runs/lung[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "train", shared=("device", "workers", "force"), help=_HELP,
                    short_help="Train a segmentation model (U-Net 2D/3D) from volumes and masks.")
    def train(
        *,
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, log, curve, cache).",
                                          show_default=False)],
        task: Annotated[str, typer.Option("--task", help="What to train: segment.")] = "segment",
        images: Annotated[Path | None, typer.Option("--images", help="Folder of training volumes.")] = None,
        masks: Annotated[Path | None, typer.Option("--masks", help="Folder of masks (named <case><suffix>).")] = None,
        csv: Annotated[Path | None, typer.Option("--csv", help="CSV case_id,image,mask instead of folders.")] = None,
        mask_suffix: Annotated[list[str] | None, typer.Option(
            "--mask-suffix", help="Mask name after the case id; repeat to merge masks [default: none].")] = None,
        class_names: Annotated[str | None, typer.Option(
            "--class-names", help="Comma-separated names of the labels 1, 2, ...")] = None,
        folds: Annotated[Path | None, typer.Option("--folds", help="folds.csv (case_id,fold).")] = None,
        fold: Annotated[int | None, typer.Option("--fold", help="Fold to validate on.")] = None,
        val_fraction: Annotated[float, typer.Option("--val-fraction", help="Random validation share without --folds.")] = 0.2,
        dim: Annotated[str, typer.Option("--dim", help="2d (slices) or 3d (patches).")] = "3d",
        patch: Annotated[tuple[int, int, int] | None, typer.Option(
            "--patch", metavar="Z Y X", help="Patch size (Z is 1 for --dim 2d) [default: planned from the data].")] = None,
        spacing: Annotated[tuple[float, float, float] | None, typer.Option(
            "--spacing", metavar="Z Y X", help="Model spacing in mm [default: median of the training images].")] = None,
        normalize: Annotated[str, typer.Option("--normalize", help="auto, ct (window to [0, 1]), zscore or none.")] = "auto",
        window: Annotated[tuple[float, float], typer.Option("--window", metavar="LOW HIGH", help="CT window in HU.")] = (-1000.0, 400.0),
        pos_ratio: Annotated[float, typer.Option("--pos-ratio", help="Share of patches centred on foreground.")] = 0.33,
        activation: Annotated[str, typer.Option("--activation", help="auto, sigmoid (one class) or softmax.")] = "auto",
        model: Annotated[str, typer.Option("--model", help="Network (see medtool.models).")] = "unet",
        width: Annotated[int, typer.Option("--width", min=1, help="Channels of the first level.")] = 32,
        depth: Annotated[int, typer.Option("--depth", min=2, help="Levels of the U-Net.")] = 5,
        norm: Annotated[str, typer.Option("--norm", help="instance or batch.")] = "instance",
        dropout: Annotated[float, typer.Option("--dropout", min=0.0, max=1.0, help="Encoder dropout.")] = 0.0,
        residual: Annotated[bool, typer.Option("--residual", help="Residual blocks.")] = False,
        deep_supervision: Annotated[bool, typer.Option("--deep-supervision", help="Loss on every decoder level.")] = False,
        upsample: Annotated[str, typer.Option("--upsample", help="transpose or interpolate.")] = "transpose",
        loss: Annotated[str, typer.Option("--loss", help="bce-dice, dice-ce, dice, jaccard or focal.")] = "dice-ce",
        ce_weight: Annotated[float, typer.Option("--ce-weight", help="Weight of the (B)CE term of bce-dice.")] = 1.0,
        dice_weight: Annotated[float, typer.Option("--dice-weight", help="Weight of the Dice term of bce-dice.")] = 1.0,
        augment: Annotated[str, typer.Option("--augment", help="none, light or heavy.")] = "light",
        aug: Annotated[list[str] | None, typer.Option("--aug", metavar="KEY=VALUE",
                                                      help="Override one augmentation setting (rotate=30, elastic=0, ...).")] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs [default: 100].")] = None,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Batches per epoch (per process).")] = 50,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Patches per batch.")] = 2,
        lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 1e-3,
        weight_decay: Annotated[float, typer.Option("--weight-decay", help="Weight decay.")] = 1e-4,
        optimizer: Annotated[str, typer.Option("--optimizer", help="adamw or sgd.")] = "adamw",
        schedule: Annotated[str, typer.Option("--schedule", help="cosine, plateau or constant.")] = "cosine",
        amp: Annotated[str, typer.Option("--amp", help="Mixed precision on CUDA: auto (bf16 when supported), bf16, fp16, off.")] = "auto",
        grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the gradient norm (0: off).")] = 12.0,
        patience: Annotated[int, typer.Option("--patience", help="Stop after this many validations without a better Dice (0: off).")] = 0,
        val_every: Annotated[int, typer.Option("--val-every", min=1, help="Validate every N epochs.")] = 1,
        max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop after the epoch that passes this wall time.")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
        json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        from ..segmentation import SegmentOptions
        from ..train import LAST, TrainConfig, fit, load_checkpoint, make_task

        device = opts.torch_device()
        checkpoint = None
        if resume:
            checkpoint = load_checkpoint(out / LAST)
            state = checkpoint["training"]
            config = TrainConfig(**state["config"])
            if epochs is not None:
                config.epochs = epochs
            task_obj = make_task(checkpoint["task"], state["options"], recipe=checkpoint["recipe"])
        else:
            options = SegmentOptions(
                images=_str(images), masks=_str(masks), csv=_str(csv), mask_suffixes=mask_suffix or [""],
                class_names=[n.strip() for n in class_names.split(",")] if class_names else None,
                folds=_str(folds), fold=fold, val_fraction=val_fraction, dim=_dim(dim),
                patch=_patch(patch, dim), spacing=list(spacing) if spacing else None,
                normalize=normalize, window=list(window), pos_ratio=pos_ratio, activation=activation,
                model=model, width=width, depth=depth, norm=norm, dropout=dropout, residual=residual,
                deep_supervision=deep_supervision, upsample=upsample, loss=loss, ce_weight=ce_weight,
                dice_weight=dice_weight, augment=augment, aug=list(aug or []))
            config = TrainConfig(epochs=epochs or 100, steps_per_epoch=steps, batch_size=batch_size, lr=lr,
                                 weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, amp=amp,
                                 grad_clip=grad_clip, patience=patience, val_every=val_every, seed=seed,
                                 max_minutes=max_minutes)
            task_obj = make_task(task, options)
        log = None if opts.quiet else (lambda text: common.stderr.print(text, highlight=False))
        summary = fit(task_obj, config, out, device=device, workers=opts.workers, resume=resume,
                      force=opts.force, progress=opts.show_progress, log=log, step=opts.step(),
                      checkpoint=checkpoint)
        if summary["rank"] != 0:
            return 0
        if json:
            common.print_json(summary)
        else:
            dice = ", ".join(f"{k[5:]} {v:.3f}" for k, v in summary["metrics"].items() if k.startswith("dice_"))
            common.stdout.print(
                f"{summary['run']}: {summary['epochs']} epochs ({summary['stopped']}), best epoch "
                f"{summary['best_epoch']}" + (f", validation Dice {dice}" if dice else "")
                + f", {summary['samples_per_s']:.1f} samples/s, data wait {summary['data_wait']:.0%}",
                highlight=False)
        return 0


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _dim(text: str) -> int:
    from ..errors import UsageError

    value = text.lower().rstrip("d")
    if value not in ("2", "3"):
        raise UsageError(f"--dim {text}: choose 2d or 3d")
    return int(value)


def _patch(patch: tuple[int, int, int] | None, dim: str) -> list[int] | None:
    from ..errors import UsageError

    if patch is None:
        return None
    if _dim(dim) == 2:
        if patch[0] != 1:
            raise UsageError(f"--patch {' '.join(map(str, patch))}: a 2d patch is 1 Y X")
        return list(patch[1:])
    return list(patch)
