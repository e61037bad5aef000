"""What every command shares: the common options, logging, and turning errors into one line.

Commands are declared with :func:`command`, which adds the shared options to the function's
signature (so they are defined here once), collects them into an :class:`Options` passed as
``opts``, and maps :class:`~medtool.errors.MedtoolError` to ``error: ...`` on stderr with the
error's exit code (0 ok, 1 some input failed, 2 usage).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Sequence

import typer
from typer.core import TyperArgument, TyperCommand

from .. import provenance
from ..errors import EXIT_INPUT, EXIT_OK, MedtoolError
from ..device import DEVICE_HELP, parse_device, resolve_device
from ..files import parse_shard

from ..console import stderr, stdout  # noqa: F401  (commands print through these)

#: Exit status for Ctrl-C, as shells report it.
EXIT_INTERRUPTED = 130
#: Exit status after SIGTERM (128 + 15), as shells report it.
EXIT_TERMINATED = 143


@dataclass
class Options:
    """The shared options of one command run, as the command body sees them."""

    device: str = "auto"
    workers: int = 1
    force: bool = False
    shard: tuple[int, int] | None = None
    quiet: bool = False
    verbose: bool = False
    debug: bool = False
    argv: list[str] = field(default_factory=list)
    #: The shared options given on the command line (the others hold their defaults).
    given: frozenset[str] = frozenset()

    def step(self, **details: Any) -> dict[str, Any]:
        """The history entry for this run (see :func:`medtool.provenance.step`)."""
        return provenance.step(self.argv, **details)

    def torch_device(self):
        """Resolve ``--device`` to a :class:`torch.device` (imports torch)."""
        return resolve_device(self.device)

    def report(self, error: BaseException) -> None:
        """Print one input's error as one line (with its traceback under ``--debug``)."""
        if self.debug and getattr(error, "traceback", None):
            stderr.print(error.traceback, markup=False, highlight=False)
        elif self.debug and error.__traceback__ is not None:
            from rich.traceback import Traceback

            stderr.print(Traceback.from_exception(type(error), error, error.__traceback__))
        report_error(error)

    @property
    def show_progress(self) -> bool:
        return not self.quiet


# Each shared option: (annotation with its typer.Option, default). Help panels keep them apart
# from the command's own options in --help.
_PANEL = "Common options"
SHARED_OPTIONS: dict[str, tuple[Any, Any]] = {
    "device": (Annotated[str, typer.Option("--device", help=f"Compute device: {DEVICE_HELP}.",
                                           rich_help_panel=_PANEL)], "auto"),
    "workers": (Annotated[int, typer.Option("--workers", "-j", min=1,
                                            help="Files processed in parallel.",
                                            rich_help_panel=_PANEL)], 1),
    "shard": (Annotated[str | None, typer.Option(
        "--shard", metavar="I/N", rich_help_panel=_PANEL,
        help="Process only share I of N of the files (deterministic; for job arrays).")], None),
    "force": (Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.",
                                           rich_help_panel=_PANEL)], False),
    "quiet": (Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.",
                                           rich_help_panel=_PANEL)], False),
    "verbose": (Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.",
                                             rich_help_panel=_PANEL)], False),
    "debug": (Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.",
                                           rich_help_panel=_PANEL)], False),
}
# Parameters several commands declare in their own signatures, defined once.
#: ``OUT`` of a command that writes a file per input: the folder, or the file of a single input.
Output = Annotated[Path, typer.Argument(help="Output folder, or one output file for one input.", show_default=False)]
#: ``--format`` of a command that writes a volume per input (default None: the input's format).
OutputFormat = Annotated[str | None, typer.Option("--format", help="Output format [default: the input's].")]
#: ``--json`` of a command that writes files (default False).
WrittenJson = Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")]


def paths_argument(help: str, *, metavar: str | None = None) -> Any:
    """The annotation of a command's positional paths: one or more files or folders (required,
    so --help shows no default).

    Parameters
    ----------
    help
        The argument's line in --help.
    metavar
        Its name in the usage line (``SRC... OUT``) [default: the parameter's name, upper-cased].
    """
    return Annotated[list[Path], typer.Argument(metavar=metavar, help=help, show_default=False)]

#: Name of the typer.Context parameter the wrapper adds (it carries the raw argv).
_CONTEXT = "medtool_context"
#: Options every command gets.
ALWAYS = ("quiet", "verbose", "debug")
#: The shared options of commands that read and write files one by one.
FILE_COMMAND = ("workers", "shard", "force")


def command(app: typer.Typer, name: str, *, shared: Sequence[str] = (), **settings: Any) -> Callable:
    """Register ``fn`` as command ``name`` of ``app`` with the shared options ``shared``.

    ``fn`` takes its own parameters plus ``opts: Options``; it returns an exit status (or
    ``None`` for 0). ``--quiet``, ``--verbose`` and ``--debug`` are always added; ``device``
    is resolved before ``fn`` runs, so a missing GPU fails fast.
    """
    names = list(dict.fromkeys([*shared, *ALWAYS]))
    unknown = set(names) - SHARED_OPTIONS.keys()
    if unknown:
        raise ValueError(f"unknown shared options {sorted(unknown)}")

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "opts"]
        extra = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=SHARED_OPTIONS[n][1],
                              annotation=SHARED_OPTIONS[n][0])
            for n in names
        ]
        extra.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY,
                                       annotation=typer.Context))

        @functools.wraps(fn)
        def run(**kwargs: Any) -> None:
            values = {n: kwargs.pop(n) for n in names}
            context = kwargs.pop(_CONTEXT)
            given = frozenset(n for n in names if _given(context, n))
            code = execute(lambda opts: fn(**kwargs, opts=opts), values,
                           context.meta.get("argv", []), given=given)
            raise typer.Exit(code)

        run.__signature__ = signature.replace(parameters=[*own, *extra])
        run.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
        del run.__wrapped__  # typer must see the new signature, not fn's
        app.command(name, cls=settings.pop("cls", HelpCommand), **settings)(run)
        return fn

    return decorate


# -- help as users expect it --------------------------------------------------------------------
#: Value names shown in --help for options without their own metavar, by type.
_METAVARS = {"str": "TEXT", "text": "TEXT", "int": "INT", "integer": "INT", "float": "FLOAT",
             "path": "PATH", "bool": "BOOL", "boolean": "BOOL"}


def reflow(text: str) -> str:
    """Help text with each paragraph on one line, so rich wraps it to the terminal's width.

    Paragraphs are separated by blank lines; indented lines and lines starting with ``-``,
    ``*`` or ``$`` keep their own line (examples, lists, commands), and a paragraph starting
    with ``\\b`` or ``Example`` is left as it is.
    """
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith(("\b", "Example", "[bold]Example")):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line[:1].isspace() and not line.startswith(("- ", "* ", "$ ")):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


#: ``[text]`` that rich would take for a style tag and swallow (``[default: ...]``).
_NOT_A_TAG = re.compile(r"\[(?!/?(?:bold|italic|dim|underline|red|green|blue|yellow|cyan|magenta)\])"
                        r"(?=[a-zA-Z#@/])")


def escape_brackets(text: str | None) -> str | None:
    """``text`` with square brackets that are not style tags escaped, so rich shows them."""
    return None if text is None else _NOT_A_TAG.sub(r"\\[", text)


def _type_name(kind: Any) -> str:
    """The value name of a click parameter type: ``INT``, ``PATH``, ``FLOAT FLOAT``, ..."""
    inner = getattr(kind, "types", None)            # a tuple type: one name per value
    if inner:
        return " ".join(_type_name(k) for k in inner)
    if "Path" in type(kind).__name__:               # its name says file, directory or path
        return "PATH"
    name = getattr(kind, "name", "").split(" ")[0]  # "int range" -> "int"
    return _METAVARS.get(name, "VALUE")


class _Argument(TyperArgument):
    """An argument shown by its name alone (``INPUTS...``), without a ``<path>`` type."""

    @staticmethod
    def untyped(kind: Any) -> Any:
        """A copy of the click type ``kind`` whose help shows no type name."""
        import copy

        shown = copy.copy(kind)
        shown.__class__ = _untyped_class(type(kind))
        return shown


class _NoMetavar:
    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return ""


@functools.cache
def _untyped_class(kind: type) -> type:
    """``kind`` with :class:`_NoMetavar` in front (one class per click type, made once)."""
    return type(f"Untyped{kind.__name__}", (_NoMetavar, kind), {})


class HelpCommand(TyperCommand):
    """A command whose --help reads like a mature tool's: paragraphs wrapped to the terminal,
    no ``<bool>`` after flags, value names in capitals (``PATH``, ``INT``) and a plain usage
    line (``medtool hu [OPTIONS] INPUTS... OUT``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = escape_brackets(reflow(self.help))
        for param in self.params:
            param.help = escape_brackets(getattr(param, "help", None))
            if isinstance(param, TyperArgument):
                param.__class__ = _Argument
                param.type = _Argument.untyped(param.type)
            if param.metavar is not None:
                continue
            if isinstance(param, TyperArgument):
                param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
            elif getattr(param, "is_flag", False):
                param.metavar = ""
            else:
                param.metavar = _type_name(param.type)

    def get_help_option(self, ctx: Any):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = ["[OPTIONS]"]
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces


def _given(context: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given (command line or environment), not defaulted."""
    source = context.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def execute(body: Callable[[Options], int | None], values: dict[str, Any], argv: list[str], *,
            given: frozenset[str] = frozenset()) -> int:
    """Build :class:`Options` from ``values``, run ``body`` and map errors to exit codes."""
    debug = bool(values.get("debug"))
    with _terminate_cleanly(), _warnings_to_log(debug):
        return _execute(body, values, argv, debug, given)


@contextlib.contextmanager
def _warnings_to_log(debug: bool):
    """Python warnings of the libraries (pydicom on odd values, NumPy on odd arithmetic) as one
    log line each, shown with ``--verbose``; ``--debug`` leaves them as they are."""
    import warnings

    if debug:
        yield
        return

    def show(message, category, filename, lineno, file=None, line=None):
        logging.getLogger("medtool").info("%s: %s", category.__name__,
                                          " ".join(str(message).split()))

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _terminate_cleanly():
    """Turn SIGTERM into ``SystemExit(143)`` while a command runs, so that ``finally`` blocks
    (temporary outputs) run as they do for Ctrl-C; worker processes inherit the handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(EXIT_TERMINATED)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(body, values: dict[str, Any], argv: list[str], debug: bool,
             given: frozenset[str]) -> int:
    try:
        opts = Options(argv=list(argv), given=given,
                       **{k: v for k, v in values.items() if k != "shard"})
        if values.get("shard") is not None:
            opts.shard = parse_shard(values["shard"])
        configure_logging(opts)
        if "device" in values:
            opts.device = parse_device(opts.device)
            opts.torch_device()
        result = body(opts)
        return EXIT_OK if result is None else int(result)
    except MedtoolError as exc:
        if debug:
            stderr.print_exception()
        report_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        stderr.print("[red]interrupted[/red]")
        return EXIT_INTERRUPTED
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug: one line unless --debug
        if debug:
            stderr.print_exception()
        report_error(f"internal error: {type(exc).__name__}: {exc} (run again with --debug "
                     "and report the traceback)")
        return EXIT_INPUT


def one_line(text: object) -> str:
    """``text`` on one line, with rich markup escaped: file names and values are shown as they
    are (``[red]scan.dcm`` stays, ``a[/]b`` cannot break the printer)."""
    from rich.markup import escape

    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return escape(flat)


def report_error(error: MedtoolError | str) -> None:
    """Print ``error: <text>`` in red on stderr, on one line."""
    stderr.print(f"[bold red]error:[/bold red] {one_line(error)}", markup=True, highlight=False,
                 overflow="ignore", crop=False, soft_wrap=True)


def report_warning(text: str) -> None:
    """Print ``warning: <text>`` in yellow on stderr, on one line."""
    stderr.print(f"[yellow]warning:[/yellow] {one_line(text)}", markup=True, highlight=False,
                 overflow="ignore", crop=False, soft_wrap=True)


def report_notice(notice) -> None:
    """Print a :class:`~medtool.series.Notice` (``note:`` / ``warning:``) on stderr."""
    colour = "yellow" if notice.level == "warning" else "cyan"
    stderr.print(f"[{colour}]{notice.level}:[/{colour}] {one_line(notice.text)}", markup=True,
                 highlight=False, overflow="ignore", crop=False, soft_wrap=True)


def report_failures(failures: Iterable[tuple[str, BaseException]], total: int) -> int:
    """Summarise a batch's failures on stderr (the inputs that failed); the exit status."""
    failures = list(failures)
    if not failures:
        return EXIT_OK
    if total == 1:      # the error line itself said it all
        return EXIT_INPUT
    stderr.print(f"[bold red]{len(failures)} of {total} inputs failed:[/bold red] "
                 + one_line(", ".join(name for name, _ in failures)), highlight=False,
                 overflow="ignore", crop=False, soft_wrap=True)
    return EXIT_INPUT


def configure_logging(opts: Options) -> None:
    """Send medtool's log records to stderr at the level ``--quiet``/``--verbose`` ask for."""
    if opts.quiet:
        level = logging.ERROR
    elif opts.verbose:
        level = logging.DEBUG if opts.debug else logging.INFO
    else:
        level = logging.WARNING
    logger = logging.getLogger("medtool")
    logger.handlers[:] = [_RichOnFirstRecord(show_path=opts.debug, markup=False,
                                             rich_tracebacks=opts.debug)]
    logger.setLevel(level)
    logger.propagate = False
    # pydicom logs each failed decoder plugin with a traceback; medtool reports the failure as
    # one line, so pydicom's records only show with --debug.
    library = logging.getLogger("pydicom")
    library.handlers[:] = [_RichOnFirstRecord()] if opts.debug else [logging.NullHandler()]
    library.propagate = False


class _RichOnFirstRecord(logging.Handler):
    """rich's log handler (on stderr, no time column), made when the first record comes.

    rich.logging brings rich.traceback with it (about 0.01 s of every start); most runs log
    nothing at the levels they show.
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self._settings = settings
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.logging import RichHandler

            self._rich = RichHandler(console=stderr.console, show_time=False, **self._settings)
        self._rich.handle(record)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout (plain text: no colours, stable for scripts)."""
    import json

    from ..formats import json_default

    sys.stdout.write(json.dumps(data, indent=2, default=json_default) + "\n")
    sys.stdout.flush()


def threads_per_worker(workers: int) -> int:
    """CPU threads each of ``workers`` processes may use (the cores shared out, at least 1)."""
    import os

    return max(1, (os.cpu_count() or 1) // max(1, workers))


def print_written(rows: Iterable[dict[str, Any]], columns: dict[str, Callable[[dict[str, Any]], str]]) -> None:
    """Print a table of the volumes a command wrote: output, shape and spacing, then ``columns``
    (header -> the cell of a row)."""
    from rich.table import Table

    cells = {"output": lambda row: row["output"], "shape": lambda row: " x ".join(map(str, row["shape"])),
             "spacing (mm)": lambda row: " x ".join(f"{s:.4g}" for s in row["spacing"]), **columns}
    table = Table(header_style="bold", box=None, pad_edge=False)
    for header in cells:
        table.add_column(header, overflow="fold" if header == "output" else None)
    for row in rows:
        table.add_row(*(cell(row) for cell in cells.values()))
    stdout.print(table)


def report_written(report, *, json: bool, opts: Options) -> int:
    """Print the volumes a volume-to-volume command wrote (table or JSON); the exit code."""
    from ..errors import InputError

    if json:
        print_json({"written": report.written, "failed": [name for name, _ in report.failures]})
    elif report.written and not opts.quiet:
        print_written(report.written, {"dtype": lambda row: row["dtype"], "units": lambda row: str(row["units"]),
                                       "range": lambda row: " .. ".join(f"{v:g}" for v in row["range"])})
    if not report.written and not report.failures:
        raise InputError("no volume files found", path=" ".join(report.inputs),
                         hint="give .npy, .npz, .nii or .nii.gz files or folders holding them")
    return report_failures(report.failures, report.files)


def image_suffix(state: dict[str, Any], given: str | None, opts: "Options") -> str:
    """``--image-suffix``, else the one the checkpoint was trained with (said when not empty)."""
    if given is not None:
        return given
    options = state.get("training", {}).get("options", {})
    trained = state.get("recipe", {}).get("image_suffix") or options.get("image_suffix") or ""
    if trained and not opts.quiet:
        stderr.print(f"inputs named <case>{trained} (as in training; change with --image-suffix)",
                     highlight=False)
    return trained
