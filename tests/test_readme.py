"""Every command of the README's tour runs as written, in order, at a small size.

The tour's ``console`` blocks are one shell session: each ``$ `` line (with its ``\\``
continuation lines) is run in one working folder, after the ones before it. To keep the test
quick the phantom is made smaller and training shorter (see :data:`SMALL`); nothing else in
the commands is changed. A line ending in ``# exit N`` must exit with status N, every other
line with 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow     # whole workflows: left out by pytest -m 'not slow'

ROOT = Path(__file__).resolve().parents[1]
#: Substitutions that make the tour small: (pattern, replacement).
SMALL = [
    (r"(medtool phantom .*)--shape \d+", r"\1--shape 48"),
    (r"--epochs \d+", "--epochs 1"),
    (r"--steps \d+", "--steps 2"),
    (r"--bootstrap \d+", "--bootstrap 20"),
    (r"--max-minutes [\d.]+", "--max-minutes 0.5"),
]
EXIT = re.compile(r"#\s*exit (\d+)\s*$")


def tour_commands(text: str) -> list[str]:
    """The ``$ `` commands of the README's ``console`` blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        pending = None
        for line in block.splitlines():
            if pending is not None:
                pending += "\n" + line
                if not line.rstrip().endswith("\\"):
                    commands.append(pending)
                    pending = None
            elif line.startswith("$ "):
                command = line[2:]
                if command.rstrip().endswith("\\"):
                    pending = command
                else:
                    commands.append(command)
    return commands


def small(command: str) -> str:
    for pattern, replacement in SMALL:
        command = re.sub(pattern, replacement, command)
    return command


def test_tour_parser_joins_continuations():
    text = "```console\n$ medtool a \\\n    --b 1\nout\n$ medtool c  # exit 1\n```\n```bash\n$ not this\n```"
    assert tour_commands(text) == ["medtool a \\\n    --b 1", "medtool c  # exit 1"]
    assert small("medtool phantom data --cases 5 --shape 128 --seed 1") == \
        "medtool phantom data --cases 5 --shape 48 --seed 1"


def test_every_readme_command_runs_as_written(tmp_path):
    commands = tour_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 20 and commands[0].startswith("medtool phantom")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               COLUMNS="120")
    for command in commands:
        match = EXIT.search(command)
        expected = int(match.group(1)) if match else 0
        result = subprocess.run(["bash", "-c", small(command)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == expected, (
            f"README command exited {result.returncode}, not {expected}:\n$ {small(command)}\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        if expected == 0:
            assert "Traceback" not in result.stderr, result.stderr
