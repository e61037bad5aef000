"""Shell completion scripts: current with the CLI, valid shell, and they complete what they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from medtool.completion import SCRIPTS, describe_cli, scripts

FOLDER = Path(__file__).resolve().parents[1] / "completions"


def test_checked_in_scripts_are_current():
    for name, text in scripts().items():
        path = FOLDER / name
        assert path.exists(), f"{path} missing: run python completions/generate.py"
        assert path.read_text() == text, (
            f"{path} is out of date with the CLI: run python completions/generate.py")


def test_every_command_and_option_is_described():
    commands = {c.name: c for c in describe_cli()}
    assert {"dicom2npy", "anonymize", "hu", "lungmask", "resample", "folds", "train", "predict",
            "score", "phantom", "info", "env"} <= set(commands)
    resample = {n: o for o in commands["resample"].options for n in o.names}
    assert resample["--spacing"].takes_value and not resample["--json"].takes_value
    assert resample["--like"].paths and commands["resample"].path_arguments
    assert resample["-j"] is resample["--workers"]
    assert "map-iou" in {n: o for o in commands["score"].options for n in o.names}["--metric"].choices


def _bash(words: list[str], tmp_path: Path) -> list[str]:
    """COMPREPLY of the bash script for the command line ``words`` (last word being completed)."""
    script = f"""
source {FOLDER / SCRIPTS['bash']}
COMP_WORDS=({' '.join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
_medtool
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         check=True)
    return [line for line in out.stdout.splitlines() if line]


def test_bash_completes_commands_options_values_and_files(tmp_path):
    (tmp_path / "case_001.nii.gz").write_bytes(b"")
    assert _bash(["medtool", "res"], tmp_path) == ["resample"]
    assert _bash(["medtool", "resample", "--sp"], tmp_path) == ["--spacing"]
    assert set(_bash(["medtool", "score", "--metric", "map"], tmp_path)) == {"map-iou"}
    assert _bash(["medtool", "resample", "--like", "case"], tmp_path) == ["case_001.nii.gz"]
    assert _bash(["medtool", "hu", "ca"], tmp_path) == ["case_001.nii.gz"]
    assert _bash(["medtool", "resample", "--spacing", ""], tmp_path) == []   # a number, no files
    assert set(_bash(["medtool", "dicom2npy", "--format", ""], tmp_path)) == {"nii.gz", "nii", "npy", "npz", "nrrd", "seg.nrrd", "mha", "mhd"}


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands_and_options(tmp_path):
    def complete(line: str) -> list[str]:
        out = subprocess.run(["fish", "--no-config", "-c",
                              f"source {FOLDER / SCRIPTS['fish']}; complete -C '{line}'"],
                             capture_output=True, text=True, cwd=tmp_path, check=True)
        return [row.split("\t")[0] for row in out.stdout.splitlines()]

    assert complete("medtool res") == ["resample"]
    assert "--spacing" in complete("medtool resample --sp")
    assert "map-iou" in complete("medtool score --metric ")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses():
    result = subprocess.run(["zsh", "-n", str(FOLDER / SCRIPTS["zsh"])], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
