"""The ``medtool`` command line: one typer app, one thin module per command.

The root lists the commands of :mod:`.catalog` and imports a command's module only when that
command runs; command modules import the core library inside their functions, so that
``medtool --help`` and a command's start-up never pay for what they do not use.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Annotated


def _defer_rich_markdown() -> None:
    """Stand a placeholder in for ``rich.markdown`` until a Markdown is made.

    typer's help renderer imports it (markdown-it and pygments: about 0.09 s of every start)
    for its "markdown" markup mode, which medtool does not use; the placeholder loads the real
    module on first use of any of its names.
    """
    import rich

    if "rich.markdown" in sys.modules:
        return

    def real() -> types.ModuleType:
        if sys.modules.get("rich.markdown") is placeholder:
            del sys.modules["rich.markdown"]
        return importlib.import_module("rich.markdown")

    class Markdown:
        def __new__(cls, *args, **kwargs):
            return real().Markdown(*args, **kwargs)

    placeholder = types.ModuleType("rich.markdown")
    placeholder.Markdown = Markdown

    def attribute(name: str):
        if name.startswith("__"):       # the import machinery's probes (__path__, ...)
            raise AttributeError(name)
        return getattr(real(), name)

    placeholder.__getattr__ = attribute
    sys.modules["rich.markdown"] = placeholder
    rich.markdown = placeholder


_defer_rich_markdown()

import typer  # noqa: E402
import typer.main  # noqa: E402
from typer.core import TyperCommand, TyperGroup  # noqa: E402

from .. import __version__  # noqa: E402
from . import catalog  # noqa: E402


class MedtoolGroup(TyperGroup):
    """The root group: commands load on demand, and the raw arguments are kept.

    The raw arguments (for the history entry each step writes) go to ``ctx.meta``. Commands
    are listed from :data:`catalog.COMMANDS`; a command's module is imported, and its options
    built, only when that command is resolved to run or to show its own help.
    """

    _listing = False

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["argv"] = argv
        return ctx

    def list_commands(self, ctx):
        return [*catalog.COMMANDS, *(n for n in self.commands if n not in catalog.COMMANDS)]

    def get_command(self, ctx, name):
        if name not in self.commands and name in catalog.COMMANDS:
            if self._listing:           # the root's help needs the purpose only
                return _Listed(name, help=catalog.COMMANDS[name])
            self.commands[name] = load(name)
        return self.commands.get(name)

    def format_help(self, ctx, formatter):
        self._listing = True
        try:
            return super().format_help(ctx, formatter)
        finally:
            self._listing = False


class _Listed(TyperCommand):
    """A command as the root's help lists it: its name and purpose, nothing loaded."""


def load(name: str):
    """The click command ``name``, built from ``medtool/cli/<name>.py``'s ``register``."""
    module = importlib.import_module(f"{__name__}.{name}")
    holder = typer.Typer(rich_markup_mode="rich", add_completion=False,
                         pretty_exceptions_enable=False)
    holder.callback()(_root)            # a callback makes typer build a group around it
    module.register(holder)
    command = typer.main.get_command(holder).commands[name]
    command.short_help = catalog.COMMANDS[name]
    return command


app = typer.Typer(
    name="medtool",
    cls=MedtoolGroup,
    help="Medical-imaging deep learning from the command line: DICOM to volumes, masks, "
         "trained models, scores and attention maps, in composable steps.",
    no_args_is_help=True,
    add_completion=False,          # static scripts in completions/ (medtool/completion.py)
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Medical-imaging deep learning from the command line."""


def main() -> None:
    """Console-script entry point."""
    app()
