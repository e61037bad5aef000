"""Shared fixtures: small volumes with non-trivial geometry, a tiny phantom data set, the CLI."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medtool.cli import app
from medtool.volume import Volume

@pytest.fixture(autouse=True)
def _restore_logging():
    """A command run in-process points the medtool and pydicom loggers at its own stderr
    handlers (no propagation); put them back so later tests' caplog sees their records."""
    yield
    for name in ("medtool", "pydicom"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


#: Seed of the shared tiny phantom: 4 cases, patient P001 has two of them, cases without a
#: tumour, with a small tumour (label 0) and with large tumours (label 1).
PHANTOM_SEED = 6


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3x3 rotation about a world axis."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


@pytest.fixture
def oblique_volume() -> Volume:
    """A 3D int16 volume, anisotropic spacing, oblique direction, origin off zero."""
    rng = np.random.default_rng(0)
    direction = rotation("x", 17.0) @ rotation("z", -31.0) @ np.array(
        [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return Volume(
        rng.integers(-1024, 3000, size=(5, 7, 9)).astype(np.int16),
        spacing=(2.5, 0.703125, 0.9),
        origin=(-171.2, 33.3, -402.75),
        direction=direction,
        meta={"units": "HU", "modality": "CT", "note": "π ok"},
        history=[{"command": "medtool test", "version": "0", "time": "2026-01-01T00:00:00+00:00"}],
    )


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(runner):
    """Run ``medtool ARGS...`` in-process; returns the result (exit_code, stdout, stderr)."""

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A tiny phantom data set (4 CT cases at 64 x 64, 4 chest X-rays), built once."""
    from medtool.phantom import write_dataset

    out = tmp_path_factory.mktemp("phantom") / "data"
    write_dataset(out, cases=4, seed=PHANTOM_SEED, shape=64, cxr=4,
                  step={"command": "medtool phantom test"})
    return out


@pytest.fixture
def dcm2niix() -> str:
    """Path of the dcm2niix program; the test is skipped where it is not installed."""
    path = shutil.which("dcm2niix")
    if path is None:
        pytest.skip("dcm2niix is not installed (apt-get install dcm2niix); peer check skipped")
    return path
