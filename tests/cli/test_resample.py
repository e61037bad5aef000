"""``medtool resample`` from the command line."""

from __future__ import annotations

import json

import numpy as np

from medtool.formats import load_volume, save_volume
from medtool.volume import Volume


def _hu(path, shape=(6, 10, 12), spacing=(2.5, 0.8, 0.8)):
    rng = np.random.default_rng(0)
    volume = Volume(rng.integers(-1000, 400, size=shape).astype(np.int16), spacing=spacing,
                    origin=(1.0, 2.0, 3.0), meta={"units": "HU"})
    save_volume(volume, path)
    return volume


def test_spacing_then_like_round_trip(cli, tmp_path):
    original = _hu(tmp_path / "in" / "a.npy")
    result = cli("resample", tmp_path / "in", tmp_path / "iso", "--spacing", "1", "1", "1", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["written"]
    assert rows[0]["shape"] == [15, 8, 10] and rows[0]["spacing"] == [1.0, 1.0, 1.0]
    result = cli("resample", tmp_path / "iso" / "a.npy", tmp_path / "back.nii.gz", "--like",
                 tmp_path / "in" / "a.npy")
    assert result.exit_code == 0, result.output
    back = load_volume(tmp_path / "back.nii.gz")
    assert back.same_grid(original, atol=1e-6) and back.array.dtype == np.int16
    assert "medtool resample" in back.history[-1]["command"]


def test_usage_and_input_errors(cli, tmp_path):
    _hu(tmp_path / "a.npy")
    assert cli("resample", tmp_path / "a.npy", tmp_path / "o.npy").exit_code == 2
    assert cli("resample", tmp_path / "a.npy", tmp_path / "o.npy", "--spacing", "1", "1", "1",
               "--like", tmp_path / "a.npy").exit_code == 2
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    result = cli("resample", tmp_path / "a.npy", tmp_path / "bad.npy", tmp_path / "out",
                 "--spacing", "2", "2", "2")
    assert result.exit_code == 1
    assert "bad.npy" in result.stderr and (tmp_path / "out" / "a.npy").exists()
    again = cli("resample", tmp_path / "a.npy", tmp_path / "out", "--spacing", "2", "2", "2")
    assert again.exit_code == 1 and "--force" in again.stderr


def test_shape_and_crop_z(cli, tmp_path):
    _hu(tmp_path / "a.npy", shape=(30, 16, 16))
    result = cli("resample", tmp_path / "a.npy", tmp_path / "o.npz", "--shape", "8", "8",
                 "--crop-z", "20")
    assert result.exit_code == 0, result.output
    out = load_volume(tmp_path / "o.npz")
    assert out.shape == (20, 8, 8) and np.allclose(out.spacing, (2.5, 1.6, 1.6))
