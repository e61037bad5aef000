"""``medtool lungmask`` from the command line."""

from __future__ import annotations

import json

import numpy as np

from medtool.formats import load_volume, save_volume

from ..test_lungmask import chest


def test_masks_and_masked_images(cli, tmp_path):
    volume, truth = chest()
    save_volume(volume, tmp_path / "hu" / "case.nii.gz")
    raw = volume.with_array(volume.array + 1024, units="raw")
    save_volume(raw, tmp_path / "hu" / "raw.npy")
    result = cli("lungmask", tmp_path / "hu", tmp_path / "masks", "--apply", "-1000", "--json")
    assert result.exit_code == 1                             # raw.npy failed, case went on
    assert "raw.npy" in result.stderr and "medtool hu" in result.stderr
    written = [row["output"] for row in json.loads(result.stdout)["written"]]
    assert written == [str(tmp_path / "masks" / "case.nii.gz"),
                       str(tmp_path / "masks" / "case_masked.nii.gz")]
    mask = load_volume(tmp_path / "masks" / "case.nii.gz")
    assert mask.same_grid(volume) and set(np.unique(mask.array)) == {0, 1, 2}
    masked = load_volume(tmp_path / "masks" / "case_masked.nii.gz")
    assert np.all(masked.array[mask.array == 0] == -1000)


def test_model_method_is_not_there_yet(cli, tmp_path):
    volume, _ = chest()
    save_volume(volume, tmp_path / "a.npy")
    result = cli("lungmask", tmp_path / "a.npy", tmp_path / "m.npy", "--method", "model")
    assert result.exit_code == 2 and "#6" in result.stderr
