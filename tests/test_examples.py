"""The README's main job runs as written (at the smallest size)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_runs(tmp_path):
    env = dict(os.environ, CASES="2", SHAPE="48", WORKERS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", str(ROOT / "examples" / "pipeline.sh"), str(tmp_path / "out")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "phantom" / "labels.csv").is_file()
    assert "case_001_lungs.nii.gz" in result.stdout and "LPS" in result.stdout


def test_readme_commands_match_ci():
    """.ci/run installs exactly as the README says and runs the README's test command."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = "pip install torch==2.14.1 torchvision==0.29.1 -e '.[dev]'"
    assert install in readme and install in ci
    assert "python -m pytest" in readme and "\npython -m pytest\n" in ci
