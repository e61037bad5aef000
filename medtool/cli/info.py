"""``medtool info``: what is in a volume file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from . import common


def register(app: typer.Typer) -> None:
    @common.command(app, "info", shared=("workers",))
    def info(
        files: Annotated[list[Path], typer.Argument(help="Volume files, DICOM files, or folders of either (walked recursively).")],
        *,
        json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of tables.")] = False,
        opts: common.Options,
    ) -> int:
        """Show shape, dtype, spacing, origin, orientation, value range, units and history of
        volume files; for DICOM files and folders, one row per series that dicom2npy would
        write (its planned shape, spacing, orientation and files, read from the headers only)
        and what it would skip.

        Example: [bold]medtool info phantom/truth/case_001_lungs.nii.gz[/bold]

        Example: [bold]medtool info phantom/ct[/bold]
        """
        from ..batch import run_batch
        from ..files import find_files, volume_suffix
        from ..info import describe_dicom, describe_file

        found = find_files(files, suffixes=None)
        named = {p for p in files if not p.is_dir()}
        paths = [p for p in found if volume_suffix(p) or not p.exists()]   # a missing one: its error
        dicom = [p for p in found if p.exists() and not volume_suffix(p)
                 and not _is_sidecar(p)]
        outcome = run_batch(describe_file, paths, workers=opts.workers, description="reading",
                            progress=opts.show_progress, on_error=opts.report)
        rows = [row for row in outcome.results if row is not None]
        failures = list(outcome.failures)
        series = None
        if dicom:
            named_dicom = [p for p in dicom if p in named]
            if named_dicom and named_dicom == dicom and all(not _looks_dicom(p) for p in dicom):
                for path in dicom:                  # a named file that is neither
                    error = InputError("not a volume or DICOM file", path=path,
                                       hint="medtool info reads .nii.gz, .nii, .npy, .npz and DICOM")
                    opts.report(error)
                    failures.append((str(path), error))
            else:
                series = describe_dicom(dicom, list(files), workers=opts.workers,
                                        progress=opts.show_progress, on_error=opts.report)
                failures += series.failures
        if not rows and not failures and (series is None or not series.rows):
            raise InputError("no volume files or DICOM image series found",
                             path=" ".join(map(str, files)),
                             hint=f"{len(found)} file(s) looked at; medtool info reads .nii.gz, "
                                  ".nii, .npy and .npz files and DICOM folders")
        if json:
            common.print_json(rows + ([] if series is None else series.rows))
        else:
            if rows:
                _print_tables(rows)
            if series is not None and series.rows:
                _print_series(series.rows)
        if series is not None and not opts.quiet:
            for notice in series.notices:
                common.report_notice(notice)
            if series.skipped:
                from .dicom2npy import skipped_summary

                common.stderr.print(skipped_summary(series.skipped, verbose=opts.verbose),
                                    highlight=False, markup=False)
        total = len(paths) + (0 if series is None else
                                             len(series.rows) + len(series.failures))
        return common.report_failures(failures, max(total, 1))


def _is_sidecar(path: Path) -> bool:
    return path.suffix == ".json" and path.with_suffix(".npy").exists()


def _looks_dicom(path: Path) -> bool:
    from ..dicomfast import is_dicom

    return is_dicom(path)


def _print_series(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(header_style="bold", box=None, pad_edge=False, title="DICOM series",
                  title_justify="left", title_style="bold")
    for name in ("series", "shape", "spacing (mm)", "orient.", "files", "modality"):
        table.add_column(name, overflow="fold" if name == "series" else None)
    for row in rows:
        table.add_row(row["series"], _fmt(row["shape"]), _fmt(row["spacing"]), row["orientation"],
                      str(row["files"]), str(row["modality"] or ""))
    common.stdout.print(table)


def _fmt(values, digits: int = 4) -> str:
    return " x ".join(f"{v:.{digits}g}" for v in values)


def _print_tables(rows: list[dict]) -> None:
    from rich.table import Table

    if len(rows) > 1:
        table = Table(header_style="bold", box=None, pad_edge=False)
        table.add_column("file", overflow="fold")
        for name in ("shape", "dtype", "spacing (mm)", "orient.", "range", "units"):
            table.add_column(name, no_wrap=True)
        for row in rows:
            table.add_row(row["file"], _fmt(row["shape"]), row["dtype"], _fmt(row["spacing"]),
                          row["orientation"], f"{row['min']} .. {row['max']}", row["units"])
        common.stdout.print(table)
        return
    row = rows[0]
    table = Table(show_header=False, box=None, pad_edge=False, title=row["file"],
                  title_justify="left", title_style="bold")
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("shape", f"{_fmt(row['shape'])}  ({row['axes']})")
    table.add_row("dtype", row["dtype"])
    table.add_row("spacing", f"{_fmt(row['spacing'], 6)} mm  ({row['axes']})")
    table.add_row("origin", f"{_fmt(row['origin'], 6)} mm  (x y z, LPS)")
    table.add_row("orientation", row["orientation"])
    table.add_row("range", f"{row['min']} .. {row['max']}")
    table.add_row("units", row["units"])
    if row["modality"]:
        table.add_row("modality", str(row["modality"]))
    for i, entry in enumerate(row["history"], 1):
        table.add_row("history" if i == 1 else "", f"{entry.get('time', '?')}  {entry.get('command', '?')}")
    if not row["history"]:
        table.add_row("history", "(none)")
    common.stdout.print(table)
