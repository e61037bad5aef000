"""``medtool view`` from the command line."""

from __future__ import annotations

import json

import numpy as np

from medtool.formats import save_volume

from ..test_lungmask import chest


def test_pictures_with_overlays_matched_by_name(cli, tmp_path):
    import matplotlib.image

    volume, truth = chest()
    for name in ("a", "b"):
        save_volume(volume, tmp_path / "hu" / f"{name}.npy")
        save_volume(volume.with_array(truth, units="label"), tmp_path / "masks" / f"{name}.nii.gz")
    result = cli("view", tmp_path / "hu", tmp_path / "png", "--overlay", tmp_path / "masks",
                 "--plane", "coronal", "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["written"]
    assert [row["output"] for row in written] == [str(tmp_path / "png" / "a.png"),
                                                 str(tmp_path / "png" / "b.png")]
    pixels = (matplotlib.image.imread(tmp_path / "png" / "a.png")[..., :3] * 255).round()
    assert np.any(np.all(pixels == [230, 25, 75], axis=2))       # right lung outline
    assert np.any(np.all(pixels == [60, 180, 75], axis=2))       # left lung outline


def test_errors(cli, tmp_path):
    volume, _ = chest()
    save_volume(volume, tmp_path / "a.npy")
    assert cli("view", tmp_path / "a.npy", tmp_path / "a.png", "--plane", "oblique").exit_code == 2
    result = cli("view", tmp_path / "a.npy", tmp_path / "a.png", "--overlay", tmp_path / "none.npy")
    assert result.exit_code == 1 and "none.npy" in result.stderr
    assert not (tmp_path / "a.png").exists()
