"""``medtool score``: score prediction sets against truth and rank them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from . import common

_HELP = """Score predictions against the truth; several prediction sets give a ranked leaderboard.

[bold]Segmentation[/bold] (dice, jaccard, hd95, assd, nsd, volume-error, recist, sensitivity, specificity, slice-dice, lesion-dice, lesion-sensitivity, lesion-precision, lesion-f1, lesion-fp): TRUTH and each PRED are folders of label volumes (any format) matched by case id (the file name without its format suffix, and without [bold]--suffix S[/bold]: with --suffix _lungs, truth/case_001_lungs.nii.gz is case_001, other masks of the folder are skipped, and predictions may be named either way); spacing comes from the truth's geometry; every label is scored on its own (or [bold]--labels 1,2[/bold]) and the mean over labels is ranked. Surfaces and distances are medpy's (6-connected surface voxels, hd95 = 95th percentile of both directions pooled, assd = their mean). volume-error and recist are |pred - truth| / truth of the volume and of the longest axial diameter (mm). Empty masks: both empty -> dice = jaccard = 1, hd95 = assd = 0, relative errors 0; one empty -> dice = jaccard = 0, hd95 = assd = the grid diagonal in mm (worst case), relative errors 1 (empty prediction) or NaN (empty truth); all flagged in --per-case. A missing prediction counts as empty and is reported.

nsd is the normalised surface Dice: the share of both surfaces' voxels within [bold]--nsd-tolerance MM[/bold] (default 1) of the other surface (1 when both are empty, 0 when one is).

sensitivity = TP / (TP + FN) and specificity = TN / (TN + FP) over voxels (BraTS's; sensitivity 1 when both are empty, 0 when only the truth is). slice-dice is the Dice of each axial slice (first array axis) averaged over the slices where the truth or the prediction has the class (LCTSC); [bold]--per-slice OUT.csv[/bold] writes each of those slices' Dice. The lesion-wise metrics take connected components (26 neighbours) as lesions and match them as BraTS 2023 does: a predicted component that overlaps a truth lesion (dilated by [bold]--lesion-dilation N[/bold] voxels; close truth lesions merge) detects it; one that overlaps none is a false-positive lesion; lesion-dice = sum of each truth lesion's Dice with its matched components / (truth lesions + false positives), lesion-sensitivity = detected / truth lesions, lesion-precision = matched / predicted components, lesion-f1 their harmonic mean, lesion-fp the false positives per case; truth lesions of [bold]--min-lesion MM3[/bold] or less are left out. BraTS 2023 gliomas: --lesion-dilation 3 --min-lesion 50; metastases: 1 and 2.

[bold]--regions brats[/bold] scores nested regions instead of labels: wt (whole tumour) = 1+2+3+4, tc (tumour core) = 1+3+4, et (enhancing tumour) = 4, for BRATS 2015 labels (1-4) and BraTS 2017-2021 (1, 2, 4); brats2023: wt = 1+2+3, tc = 1+3, et = 3; or your own, e.g. --regions wt=1+2+4,tc=1+4.

[bold]Detection[/bold] (map-iou, coco-map): TRUTH is the RSNA table patientId,x,y,width,height,Target; each PRED is patientId,PredictionString ("conf x y w h" groups). map-iou is the RSNA Pneumonia metric (IoU thresholds 0.40-0.75, TP/(TP+FP+FN) per image, confidence order; an image with no truth and any prediction scores 0, one with neither is left out); coco-map is COCO AP@[.50:.95] (and AP50), as pycocotools computes it.

[bold]Classification[/bold] (accuracy, balanced-accuracy, auc, sensitivity, specificity, f1, cindex): TRUTH is a CSV (sensitivity and specificity alone are classification for a .csv truth, segmentation otherwise) with the case id first and the class in [bold]--truth-column[/bold] (default label); each PRED is case_id,prob_<class>...,pred (pred defaults to the most probable class). With two classes the second prob_ column is the positive class; with more, macro averages. cindex needs [bold]--time[/bold] and [bold]--event[/bold] columns of the truth and uses the risk column (or prob of the positive class).

[bold]--folds F --fold K|test[/bold] or [bold]--cases FILE.csv[/bold] scores only those cases of the truth (predicted cases outside them are neither scored nor counted; a selected case without truth is an error). For detection and classification a PRED may be a folder of submission CSVs, one leaderboard row each.

[bold]--bootstrap N[/bold] adds 95% confidence intervals (cases resampled, seeded). [bold]--per-case OUT.csv[/bold] writes every case's values. NaN values are counted and named.

Example: [bold]medtool score --metric dice,hd95 --truth truth/ unet/ nnunet/ --per-case cases.csv --bootstrap 1000[/bold]

Example: [bold]medtool score -m dice,sensitivity,specificity,lesion-dice --regions brats --suffix _seg -t brats/ pred/[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "score", shared=("workers", "force"), help=_HELP)
    def score(
        predictions: common.paths_argument("Prediction folders or tables, one per model.", metavar="PRED..."),
        *,
        truth: Annotated[Path, typer.Option("--truth", "-t", help="Truth folder or table.", show_default=False)],
        metric: Annotated[list[str], typer.Option("--metric", "-m", help="Metric(s): repeat or comma-separate.",
                                                  show_default=False)],
        per_case: Annotated[Path | None, typer.Option("--per-case", metavar="OUT.csv",
                                                      help="Write every case's values here.")] = None,
        per_slice: Annotated[Path | None, typer.Option(
            "--per-slice", metavar="OUT.csv",
            help="With slice-dice: write the Dice of every slice that has the label (LCTSC's histograms).")] = None,
        bootstrap: Annotated[int, typer.Option("--bootstrap", metavar="N", min=0,
                                               help="Resamples for 95% confidence intervals.")] = 0,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resamples.")] = 0,
        labels: Annotated[str | None, typer.Option("--labels", metavar="1,2",
                                                   help="Segmentation labels to score [default: all present].")] = None,
        regions: Annotated[str | None, typer.Option(
            "--regions", metavar="brats|brats2023|NAME=L+L,...",
            help="Segmentation: score nested regions of labels instead of each label.",
            show_default=False)] = None,
        lesion_dilation: Annotated[int, typer.Option(
            "--lesion-dilation", metavar="N", min=0,
            help="Lesion-wise metrics: dilate the truth lesions by N voxels to match predictions (BraTS 2023).")] = 0,
        min_lesion: Annotated[float, typer.Option(
            "--min-lesion", metavar="MM3", min=0.0,
            help="Lesion-wise metrics: leave out truth lesions of this volume (mm^3) or less.")] = 0.0,
        nsd_tolerance: Annotated[float, typer.Option(
            "--nsd-tolerance", metavar="MM", min=0.0, help="Tolerance of nsd (mm).")] = 1.0,
        truth_column: Annotated[str, typer.Option("--truth-column", help="Class column of the truth table.")] = "label",
        time: Annotated[str | None, typer.Option("--time", metavar="COL", help="Follow-up time column (cindex).")] = None,
        event: Annotated[str | None, typer.Option("--event", metavar="COL", help="Event column, 1/0 (cindex).")] = None,
        suffix: Annotated[str, typer.Option("--suffix", metavar="S", help="Volume names are <case><S> (e.g. _lungs); truth files without it are skipped.")] = "",
        folds: Annotated[Path | None, typer.Option("--folds", metavar="FOLDS.csv", help="With --fold: score only the cases of that fold.")] = None,
        fold: Annotated[str | None, typer.Option("--fold", metavar="K|test", help="The fold of --folds to score (a number, or test).")] = None,
        cases: Annotated[Path | None, typer.Option("--cases", metavar="FILE.csv", help="Score only the cases of this table (its case_id column, else its first).")] = None,
        json: Annotated[bool, typer.Option("--json", help="Print the leaderboard as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        from ..errors import UsageError
        from ..files import check_writable
        from ..scoring import Settings, parse_metrics, per_case_columns, score as score_runs
        from ..tables import write_csv

        try:
            label_list = None if labels is None else [int(v) for v in labels.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--labels {labels!r} is not a list of integers", hint="e.g. --labels 1,2") from None
        from ..datasets import read_selection
        from ..metrics.lesions import LesionRule
        from ..metrics.regions import parse_regions

        settings = Settings(parse_metrics(metric), bootstrap=bootstrap, seed=seed, labels=label_list,
                            truth_column=truth_column, time_column=time, event_column=event,
                            workers=opts.workers, progress=opts.show_progress, suffix=suffix,
                            selection=read_selection(folds=folds, fold=fold, cases=cases),
                            regions=None if regions is None else parse_regions(regions),
                            lesions=LesionRule(lesion_dilation, min_lesion), tolerance_mm=nsd_tolerance,
                            per_slice=per_slice is not None)
        for table in (per_case, per_slice):
            if table is not None:
                check_writable(table, force=opts.force)
        runs = score_runs(truth, predictions, settings, on_error=opts.report)
        if settings.selection is not None and not opts.quiet and runs:
            common.stderr.print(f"scored only {settings.selection.describe(runs[0].cases)}; cases "
                                "outside it are neither scored nor counted", highlight=False)
        if settings.regions and not opts.quiet:
            from ..metrics.regions import describe

            common.stderr.print(f"regions: {describe(settings.regions)}", highlight=False)
        if not opts.quiet:
            _report_warnings(runs)
        if per_case is not None:
            write_csv(per_case, per_case_columns(runs), (row for run in runs for row in run.per_case),
                      force=opts.force)
        if per_slice is not None:
            from ..scoring import PER_SLICE_COLUMNS

            write_csv(per_slice, PER_SLICE_COLUMNS, (row for run in runs for row in run.per_slice),
                      force=opts.force)
        if json:
            common.print_json({"task": settings.task, "metrics": settings.metrics,
                               "bootstrap": bootstrap, **_rules(settings),
                               "leaderboard": [run.as_dict() for run in runs]})
        else:
            _print_leaderboard(runs, settings)
        failed = [(run.name, error) for run in runs for _, error in run.failures]
        if failed:
            common.stderr.print(f"[bold red]{sum(not r.ok for r in runs)} of {len(runs)} prediction sets "
                                "failed and are not ranked[/bold red]", highlight=False)
            return 1
        return 0


def _rules(settings) -> dict:
    """The scoring rules the leaderboard depends on, for --json: regions, lesion matching, nsd."""
    from ..metrics.lesions import LESION_METRICS

    rules = {}
    if settings.regions:
        rules["regions"] = {name: list(labels) for name, labels in settings.regions.items()}
    if set(LESION_METRICS) & set(settings.metrics):
        rules["lesions"] = {"dilation": settings.lesions.dilation, "min_volume_mm3": settings.lesions.min_volume_mm3}
    if "nsd" in settings.metrics:
        rules["nsd_tolerance_mm"] = settings.tolerance_mm
    return rules


def _names(cases: list[str], limit: int = 5) -> str:
    return ", ".join(cases[:limit]) + (f", ... ({len(cases)} in all)" if len(cases) > limit else "")


def _report_warnings(runs) -> None:
    def warn(text: str) -> None:
        common.stderr.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)

    for run in runs:
        if run.missing and run.ok:
            warn(f"{run.name}: {len(run.missing)} of {run.cases} cases have no prediction and count as "
                 f"empty: {_names(run.missing)}")
        if run.extra:
            warn(f"{run.name}: {len(run.extra)} predicted cases are not in the truth and are left out: "
                 f"{_names(run.extra)}")
        if run.extra_labels:
            warn(f"{run.name}: predicts label(s) {', '.join(map(str, run.extra_labels))}, which no truth "
                 "volume has; they are not scored (name them with --labels to score them)")
        for column, cases in run.nan.items():
            warn(f"{run.name}: {column} is NaN (undefined) for {_names(cases)}; the mean is over the "
                 "other cases")


def _value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


#: A leaderboard with more value columns than this prints one row per label (or region).
WIDE_COLUMNS = 8


def _print_leaderboard(runs, settings) -> None:
    from rich.table import Table

    columns = list(dict.fromkeys(c for run in runs if run.ok for c in run.summary))
    parts = [""]                                    # the row of each run; per label when long
    if len(columns) > WIDE_COLUMNS and any("[" in c for c in columns):
        parts += list(dict.fromkeys(c[c.index("[") + 1:-1] for c in columns if "[" in c))
        columns = [c for c in columns if "[" not in c]
    ci = any(run.ci for run in runs)
    table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1, int(ci), 0),
                  caption=f"{settings.task}; below each value its {_level()} bootstrap interval" if ci else None,
                  caption_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("prediction", overflow="fold")
    if len(parts) > 1:
        table.add_column("regions" if settings.regions else "labels")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("cases", justify="right")
    table.add_column("missing", justify="right")
    table.add_column("nan", justify="right")
    for run in runs:
        for part in parts:
            cells = [str(run.rank) if run.rank else "-", run.name] if not part else ["", ""]
            if len(parts) > 1:
                cells.append(part or "mean")
            for column in columns:
                cells.append(_cell(run, f"{column}[{part}]" if part else column))
            cells += ([str(run.cases), str(len(run.missing)), str(sum(len(v) for v in run.nan.values()))]
                      if not part else ["", "", ""])
            table.add_row(*cells)
    common.stdout.print(table)
    for run in runs:
        if run.confusion and run.ok:
            _print_confusion(run)


def _cell(run, column: str) -> str:
    if not run.ok:
        return "failed"
    text = _value(run.summary.get(column))
    if column in run.ci:
        low, high = run.ci[column]
        text += f"\n[dim]{_value(low)}-{_value(high)}[/dim]"
    return text


def _level() -> str:
    from ..scoring import CI_LEVEL

    return f"{CI_LEVEL:.0%}"


def _print_confusion(run) -> None:
    from rich.table import Table

    classes = run.confusion["classes"]
    table = Table(title=f"confusion matrix of {run.name} (rows: truth, columns: prediction)",
                  title_justify="left", header_style="bold", box=None, pad_edge=False)
    table.add_column("")
    for name in classes:
        table.add_column(name, justify="right")
    for name, row in zip(classes, run.confusion["matrix"]):
        table.add_row(name, *map(str, row))
    common.stdout.print(table)
