"""The command line as a whole: help, version, exit codes, start-up cost."""

import subprocess
import sys
import time

import pytest

from medtool import __version__
from medtool.cli import app, load
from medtool.cli.catalog import COMMANDS

ALL_COMMANDS = list(COMMANDS)


def test_help_lists_every_command_with_a_purpose(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in ALL_COMMANDS:
        assert f" {name} " in result.stdout, name


def test_help_lists_the_pipeline_in_order(cli):
    import typer.main

    group = typer.main.get_command(app)          # train is a group of its tasks' sub-commands
    assert group.list_commands(None) == ALL_COMMANDS


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"medtool {__version__}"


def test_python_dash_m_and_console_script_agree():
    out = subprocess.run([sys.executable, "-m", "medtool", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"medtool {__version__}"


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys, time; t = time.perf_counter(); from medtool.cli import app; "
            "from typer.main import get_command; get_command(app); "
            "print('torch' in sys.modules, 'nibabel' in sys.modules, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    torch_loaded, nibabel_loaded, seconds = out.stdout.split()
    assert torch_loaded == "False" and nibabel_loaded == "False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medtool", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 1.5   # whole interpreter start included; ~0.3 s here


def test_help_does_not_load_markdown_but_its_names_still_work():
    code = ("import sys; sys.argv = ['medtool', '--help']\n"
            "from medtool.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('markdown_it' in sys.modules, file=sys.stderr)\n"
            "from rich.markdown import Heading, Markdown\n"
            "print(Heading.__module__, type(Markdown('x')).__module__, 'markdown_it' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage:" in out.stdout
    assert out.stderr.split() == ["False", "rich.markdown", "rich.markdown", "True"]


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_each_command_loads_with_the_catalogs_purpose(name):
    command = load(name)
    assert command.name == name and command.short_help == COMMANDS[name]


def test_a_command_imports_only_its_own_module():
    code = ("import sys; sys.argv = ['medtool', 'hu', '--help']\n"
            "from medtool.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('medtool.cli.')), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage: medtool hu" in out.stdout
    assert out.stderr.strip() == str(["medtool.cli.catalog", "medtool.cli.common", "medtool.cli.hu"])


def test_root_help_loads_no_command_and_no_rich_logging():
    code = ("import sys; sys.argv = ['medtool', '--help']\n"
            "from medtool.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('medtool.cli.')),"
            " 'rich.logging' in sys.modules, 'numpy' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert all(f" {name} " in out.stdout for name in COMMANDS)
    assert out.stderr.split() == ["['medtool.cli.catalog']", "False", "False"]


def test_usage_error_exits_2(cli):
    result = cli("info", "--no-such-option", "x")
    assert result.exit_code == 2


def test_unknown_command_exits_2(cli):
    assert cli("frobnicate").exit_code == 2


def test_bad_device_spelling_is_a_usage_error(cli):
    result = cli("env", "--device", "gpu0")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --device 'gpu0' is not one of")
    assert "Traceback" not in result.stderr


def test_cuda_where_there_is_none_is_one_clear_line(cli, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli("env", "--device", "cuda")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device is available" in lines[0] and "--device cpu" in lines[0]


def test_env_json(cli):
    import json

    result = cli("env", "--device", "cpu", "--json")
    assert result.exit_code == 0
    facts = json.loads(result.stdout)
    assert facts["medtool"] == __version__ and facts["device"] == "cpu" and facts["torch"]


def test_debug_shows_the_traceback(cli, tmp_path):
    quiet = cli("info", tmp_path / "missing.nii.gz")
    loud = cli("info", "--debug", tmp_path / "missing.nii.gz")
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr and loud.exit_code == 1


def _commands():
    from medtool.completion import describe_cli

    return describe_cli()


def test_every_command_prints_json_on_request():
    """Scripts can consume any command's results: each one offers --json."""
    missing = [c.name for c in _commands() if not any("--json" in o.names for o in c.options)]
    assert not missing, f"commands without --json: {missing}"


def test_every_command_help_carries_an_example(cli):
    for command in _commands():
        result = cli(command.name, "--help")
        assert result.exit_code == 0
        assert "Example" in result.stdout and f"medtool {command.name}" in result.stdout, command.name


def test_help_reads_cleanly_at_80_columns(runner, monkeypatch):
    """Paragraphs wrap to the terminal (no stray short lines), flags carry no <bool>, value names
    are capitals, the usage line is plain, and bracketed notes are not eaten as markup."""
    monkeypatch.setenv("COLUMNS", "80")
    text = runner.invoke(app, ["hu", "--help"]).stdout
    assert "Usage: medtool hu [OPTIONS] INPUTS... OUT" in text
    assert "<bool>" not in text and "<list[Path]>" not in text and "{" not in text
    assert "[default: the input's" in text
    assert any("INT [x>=1]" in line for line in text.splitlines())
    description = [line.strip() for line in text.split("╭")[0].splitlines()[3:]]
    for line, following in zip(description, description[1:]):
        if line and following:
            assert len(line) > 55, f"short line inside a paragraph: {line!r}"


def test_reflow_keeps_examples_and_lists_on_their_lines():
    from medtool.cli.common import reflow

    text = "One\nparagraph here.\n\nExamples:\n  medtool a\n  medtool b\n\n- item one\n- item two\n\nExamples:\nmedtool c\nmedtool d"
    assert reflow(text) == ("One paragraph here.\n\nExamples:\n  medtool a\n  medtool b\n\n- item one\n- item two"
                            "\n\nExamples:\nmedtool c\nmedtool d")
