"""The ``medtool`` command line: one typer app, one thin module per command.

Command modules import the core library inside their functions, so that ``medtool --help``
and shell completion never pay for numpy-heavy or torch imports.
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
from typer.core import TyperGroup  # noqa: E402

from .. import __version__  # noqa: E402


class MedtoolGroup(TyperGroup):
    """Keeps the raw arguments (for the history entry each step writes) in ``ctx.meta``."""

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["argv"] = argv
        return ctx

    def list_commands(self, ctx):
        # train is a group (its tasks are sub-commands), which typer lists after the commands:
        # put it back in pipeline order, before predict
        names = [n for n in super().list_commands(ctx) if n != "train"]
        if "train" in self.commands:
            names.insert(names.index("predict") if "predict" in names else len(names), "train")
        return names


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


# Registration order is the order of `medtool --help`: data, the pipeline, then helpers.
from . import env, info, pending, phantom  # noqa: E402


def _landed() -> dict:
    """The pipeline commands that have a module ``medtool/cli/<name>.py``: name -> register."""
    import importlib
    import importlib.util

    found = {}
    for name in pending.PIPELINE:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            found[name] = importlib.import_module(f"{__name__}.{name}").register
    return found


phantom.register(app)
# The pipeline in order; commands of issues still open are listed as planned.
LANDED = _landed()
pending.register(app, LANDED)
info.register(app)
env.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
