"""The README's main job runs as written (at the smallest size)."""

import os
import subprocess
import sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow     # whole workflows: left out by pytest -m 'not slow'

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_runs(tmp_path):
    env = dict(os.environ, CASES="2", SHAPE="48", WORKERS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", str(ROOT / "examples" / "pipeline.sh"), str(tmp_path / "out")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "phantom" / "labels.csv").is_file()
    assert "case_001_lungs.nii.gz" in result.stdout and "LPS" in result.stdout
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"lung_dice", "recist_auc", "detect_map_iou", "gradcam_inside_outside", "seconds"} <= set(summary)
    assert summary["lung_cases"] == 1 and summary["recist_cases"] == 2 and summary["seconds"] > 0
    assert 0 <= summary["lung_dice"] <= 1 and summary["gradcam_cases"] >= 1
    assert "RSNA map-iou" in result.stdout and "main job:" in result.stdout.splitlines()[-1]


def test_readme_commands_match_ci():
    """.ci/run installs exactly as the README says and runs the README's test command."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = "pip install torch==2.14.1 torchvision==0.29.1 -e '.[dev]'"
    assert install in readme and install in ci
    assert "python -m pytest" in readme and "\npython -m pytest\n" in ci


def test_makefile_workflows_run_at_the_smallest_size(tmp_path):
    """examples/Makefile at SIZE=tiny: every workflow from DICOM to scores, in parallel."""
    import json

    out = tmp_path / "mk"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["make", "-C", str(ROOT / "examples"), "-j2", "SIZE=tiny", f"OUT={out}", "all"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lungs = json.loads((out / "scores" / "lungs.json").read_text())["leaderboard"][0]
    assert lungs["cases"] == 6 and lungs["missing"] == [] and set(lungs["scores"]) >= {"dice", "hd95"}
    tumour = json.loads((out / "scores" / "tumour.json").read_text())["leaderboard"][0]
    assert "recist" in tumour["scores"]
    assert (out / "pictures" / "case_001_lungs.png").stat().st_size > 1000
    classify = json.loads((out / "scores" / "classify.json").read_text())["leaderboard"][0]
    assert classify["cases"] == 6 and {"auc", "accuracy"} <= set(classify["scores"])
    mri = {row["prediction"].rsplit("/", 1)[-1]: row for row in
           json.loads((out / "scores" / "mri.json").read_text())["leaderboard"]}
    assert set(mri) == {"t1ce", "flair+t1ce"} and all(r["cases"] == 2 for r in mri.values())
    assert {"dice[wt]", "dice[tc]", "dice[et]", "sensitivity[et]"} <= set(mri["flair+t1ce"]["scores"])
    detect = json.loads((out / "scores" / "detect.json").read_text())["leaderboard"][0]
    assert "map-iou" in detect["scores"] and detect["failed"] == []
    from medtool.formats import load_volume as _load

    cam = _load(out / "gradcam" / "case_002.nii.gz")
    assert cam.shape == _load(out / "model_in" / "case_002.npy").shape and 0 <= cam.array.min() <= cam.array.max() <= 1
    # intermediate files are real volumes a user can open
    from medtool.formats import load_volume

    assert load_volume(out / "model_in" / "case_003.npy").shape[0] == 8
    # a second run has nothing to do
    again = subprocess.run(["make", "-C", str(ROOT / "examples"), "-q", "SIZE=tiny", f"OUT={out}", "all"],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
