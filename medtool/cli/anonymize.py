"""``medtool anonymize``: PS3.15 Basic Profile de-identification, series kept intact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common

#: Help text. Rich keeps single line breaks inside a paragraph, so each paragraph is one line
#: here (joined below) and rich wraps it to the terminal; only the examples keep their breaks.
_HELP = "\n\n".join([
    "De-identify DICOM files with the DICOM PS3.15 Annex E Basic Application Level "
    "Confidentiality Profile (Table E.1-1 shipped as data, edition 2024c with the Basic Profile "
    "rows up to 2026c), walking nested sequences and the file meta information.",

    "UIDs (all but SOP Class, Transfer Syntax and well-known UIDs) become "
    "2.25.<HMAC-SHA256 of the salt and the UID>, so a series keeps one new SeriesInstanceUID, "
    "references stay consistent, and runs over separate batches agree when they use the same "
    "salt. Give the salt with [bold]--key-file[/bold] (preferred: a command-line --salt shows in "
    "ps and shell history) or [bold]--salt[/bold]; without either a random salt is used and a "
    "warning says that separate runs will not agree.",

    "PatientID and PatientName become a pseudonym (ANON + 10 hex digits from the salt, or "
    "[bold]--pseudonym-map[/bold] CSV patient_id,pseudonym). Private attributes, overlays, "
    "curves and icon images are removed; free text inside sequences the table replaces (the "
    "SR Content Sequence) gets a dummy; pixel data is copied byte for byte (compressed files "
    "are not decoded). Files with burned-in annotation (BurnedInAnnotation YES, or secondary "
    "capture without it) are refused unless [bold]--allow-burned-in[/bold].",

    "Compound actions are resolved to keep the file valid: X/Z -> empty; X/D, X/Z/D, Z/D -> "
    "dummy value; X/Z/U* -> kept with new UIDs inside.",

    "File and folder names often hold identity, so outputs are named from the pseudonymised "
    "identity:",

    "  OUT/<pseudonym>/ST-<study>/SE<number>-<modality>-<series>/IM-<instance>.dcm",

    "where <study> and <series> are 8 hex digits of SHA-256 of the new Study and Series "
    "Instance UIDs, <number> is the SeriesNumber, and IM-<instance>-<8 hex> is used when two images of a series share an "
    "instance number. [bold]--keep-names[/bold] mirrors the input names instead; "
    "[bold]--in-place[/bold] rewrites the inputs atomically (names kept; symbolic and hard "
    "links are refused). Attributes the data dictionary does not know are removed and "
    "counted, and the 128-byte preamble is written as zeros.",

    "[bold]--check[/bold] lists every attribute the profile would still act on (file, tag, "
    "name), a preamble that is not zero, attributes unknown to the data dictionary and file "
    "or folder names that hold an identifying value of the file, and exits 1 if there is any "
    "(or if it found no DICOM file to check).",

    "Examples:\n"
    "  [bold]medtool anonymize data/ct anon/ --key-file site.key --date-shift --workers 2[/bold]\n"
    "  [bold]medtool anonymize --check anon/[/bold]",
])


def register(app: typer.Typer) -> None:
    @common.command(app, "anonymize", shared=common.FILE_COMMAND, help=_HELP)
    def anonymize(
        paths: common.paths_argument("DICOM files or folders, then the output folder "
                                     "(only inputs with --in-place or --check).", metavar="INPUT... OUT"),
        *,
        check: Annotated[bool, typer.Option("--check", help="Only list what the profile would "
                                            "still act on; exit 1 if anything.")] = False,
        in_place: Annotated[bool, typer.Option("--in-place", help="Rewrite the inputs (atomically).")] = False,
        keep_names: Annotated[bool, typer.Option(
            "--keep-names", help="Mirror the input file and folder names (they may hold "
            "identity) instead of naming outputs by pseudonym, study and series.")] = False,
        salt: Annotated[str | None, typer.Option("--salt", help="Secret for UIDs, pseudonyms and "
                                                 "date shifts.")] = None,
        key_file: Annotated[Path | None, typer.Option("--key-file", help="File whose content is the salt.",
                                                      exists=True, dir_okay=False)] = None,
        date_shift: Annotated[bool, typer.Option(
            "--date-shift", help="Retain longitudinal information: shift dates by a per-patient "
            "number of days (1..3652 back).")] = False,
        keep_dates: Annotated[bool, typer.Option("--keep-dates", help="Retain full dates (option "
                                                 "113106).")] = False,
        keep_patient: Annotated[bool, typer.Option(
            "--keep-patient-characteristics", help="Keep sex, age, size, weight, ...")] = False,
        keep_device: Annotated[bool, typer.Option("--keep-device", help="Keep device identity "
                                                  "(station, serial numbers, ...).")] = False,
        keep_institution: Annotated[bool, typer.Option("--keep-institution",
                                                       help="Keep institution identity.")] = False,
        keep_private: Annotated[list[str] | None, typer.Option(
            "--keep-private", metavar="CREATOR:GGGG,EE",
            help="Keep this private attribute (EE within the creator's block, or xx for the "
                 "block); repeat for more.")] = None,
        pseudonym_map: Annotated[Path | None, typer.Option(
            "--pseudonym-map", help="CSV patient_id,pseudonym; every patient must be in it.")] = None,
        write_map: Annotated[Path | None, typer.Option(
            "--write-map", help="Write patient_id,pseudonym,date_shift_days (IDENTIFYING: keep it "
            "apart from the data).")] = None,
        allow_burned_in: Annotated[bool, typer.Option("--allow-burned-in",
                                                      help="Write files whose pixels may show identity.")] = False,
        json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        opts: common.Options,
    ) -> int:
        from .. import anonymize as core
        from ..errors import UsageError

        workers = opts.workers if "workers" in opts.given else None     # None: one per core
        if check:                                                       # for many files
            report = core.check(paths, workers=workers, shard=opts.shard,
                                progress=opts.show_progress, on_error=opts.report)
            _report_workers(report.workers, chosen=workers is None, opts=opts)
            return _report_check(report, json=json, opts=opts)
        if in_place and keep_names:
            raise UsageError("--keep-names goes with an output folder; --in-place keeps the "
                             "names anyway")
        if in_place:
            inputs, out = paths, None
        elif len(paths) < 2:
            raise UsageError("give the inputs and then the output folder",
                             hint="or pass --in-place to rewrite the inputs")
        else:
            inputs, out = paths[:-1], paths[-1]
        options = {name for name, on in (("modified_dates", date_shift), ("full_dates", keep_dates),
                                         ("patient", keep_patient), ("device", keep_device),
                                         ("institution", keep_institution),
                                         ("safe_private", bool(keep_private))) if on}
        if salt is not None and key_file is not None:
            raise UsageError("give --salt or --key-file, not both")
        if key_file is not None:
            secret = key_file.read_bytes().strip()
            if not secret:
                raise UsageError("the key file is empty", path=key_file)
        elif salt:
            secret = salt.encode()
        else:
            secret = core.random_salt()
            if not opts.quiet:
                common.report_warning("no --salt or --key-file: using a random salt, so UIDs, "
                                      "pseudonyms and date shifts will not agree with any "
                                      "other run")
        settings = core.Settings(
            salt=secret, options=frozenset(options),
            pseudonyms=core.read_pseudonym_map(pseudonym_map) if pseudonym_map else None,
            safe_private=tuple(core.SafePrivate.parse(s) for s in keep_private or ()),
            allow_burned_in=allow_burned_in)
        if write_map is not None and write_map.exists() and not opts.force:
            raise UsageError(f"{write_map} exists already", hint="pass --force to overwrite it")
        report = core.anonymize(inputs, out, settings=settings, in_place=in_place,
                                keep_names=keep_names, workers=workers, force=opts.force,
                                shard=opts.shard, progress=opts.show_progress,
                                on_error=opts.report)
        _report_workers(report.workers, chosen=workers is None, opts=opts)
        if write_map is not None and report.written:
            rows = core.write_map(write_map, report, force=opts.force)
            if not opts.quiet:
                common.report_warning(f"{write_map} links {rows} pseudonym(s) to the original "
                                      "patient IDs: it is identifying, keep it apart from the "
                                      "data")
        if (in_place or keep_names) and report.written and not opts.quiet:
            common.report_warning("file and folder names were kept; they may hold identity "
                                  "(medtool anonymize --check flags names that hold a value "
                                  "of their file)")
        return _report_written(report, json=json, opts=opts, out=out)


def _report_written(report, *, json: bool, opts: common.Options, out) -> int:
    if json:
        common.print_json({
            "written": [{k: w[k] for k in ("source", "output", "removed", "replaced", "unknown")}
                        for w in report.written],
            "skipped": [{"file": f, "reason": r} for f, r in report.skipped],
            "refused_burned_in": report.refused,
            "failed": [{"file": f, "error": str(e)} for f, e in report.failures]})
    elif not opts.quiet:
        where = "in place" if out is None else f"to {out}"
        patients = len({w["pseudonym"] for w in report.written})
        common.stdout.print(f"anonymized {len(report.written)} DICOM file(s) of {patients} "
                            f"patient(s) {where}", highlight=False, markup=False)
    if report.unknown and not opts.quiet:
        common.stderr.print(f"note: removed {report.unknown} public attribute(s) that the data "
                            "dictionary does not know (nobody can vouch for their content)",
                            highlight=False, markup=False)
    if report.skipped and not opts.quiet:
        common.stderr.print(f"note: skipped {len(report.skipped)} non-DICOM file(s) and "
                            "DICOMDIR(s)", highlight=False, markup=False)
    if report.refused:
        common.stderr.print(f"[bold red]refused {len(report.refused)} file(s) with burned-in "
                            "annotation[/bold red] (--allow-burned-in writes them)", highlight=False)
    return common.report_failures(report.failures, report.files)


def _report_workers(workers: int, *, chosen: bool, opts: common.Options) -> None:
    """Say so when the batch chose to run on several processes."""
    if chosen and workers > 1 and not opts.quiet:
        common.stderr.print(f"note: {workers} worker processes (one per core, for this many "
                            "files); --workers N to choose", highlight=False, markup=False)


def _report_check(report, *, json: bool, opts: common.Options) -> int:
    if json:
        common.print_json({"checked": report.checked, "findings": report.findings,
                           "dirty_files": report.dirty_files,
                           "failed": [{"file": f, "error": str(e)} for f, e in report.failures]})
    else:
        for f in report.findings:
            common.stdout.print(f"{f['file']}\t{f['tag']}\t{f['where']}{f['name']}\t{f['action']}",
                                highlight=False, markup=False, soft_wrap=True)
        if not opts.quiet:
            verdict = (f"{len(report.findings)} attribute(s) to de-identify in "
                       f"{len(report.dirty_files)} file(s)" if report.findings
                       else f"{len(report.failures)} file(s) could not be read"
                       if report.failures else "clean")
            common.stderr.print(f"checked {report.checked} DICOM file(s): {verdict}",
                                highlight=False, markup=False)
    failed = common.report_failures(report.failures, report.checked + len(report.failures))
    return 1 if report.findings else failed
