"""``medtool folds``: leakage-free cross-validation folds (and a held-out test split)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

#: nnU-Net's name for the folds file, written beside OUT.csv with --json.
NNUNET_SPLITS = "splits_final.json"

_HELP = f"""Split cases into K cross-validation folds: stratified, grouped, or both.

Input: a CSV with the case id first (or a [bold]case_id[/bold] column), e.g. medtool phantom's labels.csv, or a folder of cases (one per volume file, or one per sub-folder of DICOM). Output: [bold]case_id,fold[/bold] with folds 0..K-1 and [bold]test[/bold] for the held-out cases, which [bold]train --folds[/bold] never trains or validates on.

Several rows of one case (the RSNA box table, one row per box) are one case: its --stratify class is the rows' class, or 1 when any 0/1 row is 1. In a folder, a case's derived files ([bold]<case>_masked[/bold], or [bold]--image-suffix[/bold]) go with the case.

[bold]--group COL[/bold] keeps every group (patient) in one fold, so follow-up scans of a patient never leak between training and validation. [bold]--stratify COL[/bold] balances the classes of COL over the folds ([bold]--bins N[/bold] cuts a numeric column into N quantile bins first). [bold]--test FRAC[/bold] holds out about FRAC of the cases first, grouped and stratified the same way. The same input and [bold]--seed[/bold] give the same folds, whatever the row order. [bold]--json[/bold] also writes nnU-Net's {NNUNET_SPLITS} beside OUT.csv (folds only; test cases are in none). The class balance of each fold is printed (as JSON with [bold]--json[/bold]).

Impossible requests (more folds than groups, a class with fewer cases than folds) are refused with what to change.

Example: [bold]medtool folds data/labels.csv folds.csv --k 5 --group patient_id --stratify label --test 0.2[/bold]
Example: [bold]medtool folds stage_2_train_labels.csv folds.csv --id-column patientId --stratify Target[/bold]
"""


def register(app: typer.Typer) -> None:
    @common.command(app, "folds", shared=("force",), help=_HELP)
    def folds(
        source: Annotated[Path, typer.Argument(metavar="LABELS", help="Cases CSV, or a folder of cases.",
                                               show_default=False)],
        out: Annotated[Path, typer.Argument(metavar="OUT.csv", help="Output table case_id,fold.",
                                            show_default=False)],
        *,
        k: Annotated[int, typer.Option("--k", "-k", help="Number of folds.")] = 5,
        stratify: Annotated[str | None, typer.Option("--stratify", metavar="COL",
                                                     help="Balance the classes of this column.")] = None,
        group: Annotated[str | None, typer.Option("--group", metavar="COL",
                                                  help="Keep each value of this column in one fold.")] = None,
        bins: Annotated[int | None, typer.Option("--bins", min=2, metavar="N",
                                                 help="Stratify a numeric column by N quantile bins.")] = None,
        id_column: Annotated[str | None, typer.Option(
            "--id-column", metavar="COL",
            help="Column of LABELS holding the case id (default case_id, else the first); with "
                 "--cases, the column (e.g. PatientID) that joins LABELS to the cases.")] = None,
        cases_index: Annotated[Path | None, typer.Option(
            "--cases", metavar="CASES.csv",
            help="dicom2npy's cases.csv: LABELS rows keyed by --id-column stand for every "
                 "case with that value (grouped by it).")] = None,
        image_suffix: Annotated[str | None, typer.Option(
            "--image-suffix", metavar="SUFFIX",
            help="In a folder, files named <case>SUFFIX belong to <case> (as _masked always "
                 "does).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the assignment.")] = 42,
        test: Annotated[float, typer.Option("--test", metavar="FRAC",
                                            help="Hold out this fraction as the test split.")] = 0.0,
        json: Annotated[bool, typer.Option("--json", help=f"Print the balance as JSON; also write {NNUNET_SPLITS} beside OUT.csv.")] = False,
        opts: common.Options,
    ) -> int:
        import json as json_module

        from ..files import atomic_write_text, check_writable
        from ..folds import make_folds, read_cases
        from ..tables import CASE_ID, write_csv

        cases = read_cases(source, stratify=stratify, group=group, bins=bins,
                           id_column=id_column, cases=cases_index, image_suffix=image_suffix)
        if cases.merged and not opts.quiet:
            what = ("files derived from a case's image (<case>_masked ...) taken with their case"
                    if Path(source).is_dir() else "rows of a case already listed merged into it"
                    + (f" (its {stratify} is 1 when any row is 1)" if stratify else ""))
            common.stderr.print(f"note: {cases.merged} {what}: {len(cases.ids)} cases", highlight=False)
        if cases_index is not None and group is None:
            group = id_column
        split = make_folds(cases, k=k, seed=seed, test=test)
        splits_json = out.parent / NNUNET_SPLITS
        check_writable(out, force=opts.force)
        if json:
            check_writable(splits_json, force=opts.force)
        write_csv(out, (CASE_ID, "fold"), ({CASE_ID: c, "fold": split.folds[c]} for c in cases.ids),
                  force=opts.force)
        if json:
            atomic_write_text(splits_json, json_module.dumps(split.nnunet(), indent=2) + "\n",
                              force=opts.force)
        if json:
            common.print_json({"cases": len(cases.ids), "folds": k, "test": len(split.members("test")),
                               "csv": str(out), "splits_json": str(splits_json), "balance": split.balance()})
        else:
            _print_balance(split, stratify=stratify, group=group)
        if not opts.quiet:
            written = f"{out}" + (f" and {splits_json}" if json else "")
            common.stderr.print(f"wrote {len(cases.ids)} cases in {k} folds"
                                + (f" + {len(split.members('test'))} test" if test else "")
                                + f" to {written}", highlight=False)


def _print_balance(split, *, stratify: str | None, group: str | None) -> None:
    from rich.table import Table

    rows = split.balance()
    classes = list(rows[0]["classes"]) if rows else []
    table = Table(header_style="bold", box=None, pad_edge=False,
                  title=f"class balance ({stratify})" if stratify else None, title_justify="left")
    table.add_column("fold")
    table.add_column("cases", justify="right")
    if group:
        table.add_column(f"{group}s" if not group.endswith("s") else group, justify="right")
    for name in classes:
        table.add_column(f"{stratify}={name}", justify="right")
    for row in rows:
        cells = [str(row["fold"]), str(row["cases"])]
        if group:
            cells.append(str(row["groups"]))
        for name in classes:
            count = row["classes"][name]
            share = count / row["cases"] if row["cases"] else 0.0
            cells.append(f"{count} ({share:.0%})")
        table.add_row(*cells)
    common.stdout.print(table)
