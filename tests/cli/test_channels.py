"""Several MRI sequences as input channels, through the commands a user runs: a BraTS folder, a
flat folder of <case>_<channel> files, a Decathlon 4D dataset; predict and gradcam refuse a
case whose channel is missing; export nnunet writes one file per channel."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medtool.formats import load_volume
from medtool.train import load_checkpoint

TINY = ("--dim", "2d", "--width", "4", "--depth", "2", "--epochs", "1", "--steps", "1", "--batch-size", "2")


def _text(result) -> str:
    return " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    """Four skull-stripped brain MRI cases at 32^3 in the BraTS layout."""
    from typer.testing import CliRunner

    from medtool.cli import app

    out = tmp_path_factory.mktemp("brain") / "brats"
    result = CliRunner().invoke(app, ["phantom", str(out), "--kind", "brain-mri", "--cases", "4", "--shape", "32",
                                      "--skull-strip"])
    assert result.exit_code == 0, result.output
    return out


def _flat(brain, flat):
    """The BraTS case folders' files copied into one folder (<case>_<channel> side by side)."""
    flat.mkdir()
    for file in brain.rglob("*.nii.gz"):
        shutil.copy(file, flat / file.name)
    return flat


def test_three_channels_train_predict_and_explain(cli, brain, tmp_path):
    result = cli("train", "segment", "--dataset", brain, "--channels", "flair,t1ce,t2", *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    text = _text(result)
    assert "channels flair, t1ce, t2 (of flair, t1, t1ce, t2; choose with --channels)" in text
    # skull-stripped: every channel z-scored inside the brain, and said so
    assert "normalise flair, t1ce, t2: zscore inside the nonzero voxels" in text
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    recipe = state["recipe"]
    assert recipe["channels"]["names"] == ["flair", "t1ce", "t2"]
    assert recipe["channels"]["suffixes"] == ["_flair", "_t1ce", "_t2"]
    assert [n["foreground"] for n in recipe["normalize"]] == ["nonzero"] * 3
    assert state["model"]["config"]["in_channels"] == 3
    assert recipe["classes"][1:] == ["necrosis", "edema", "non-enhancing_tumour", "enhancing_tumour"]

    result = cli("predict", tmp_path / "run" / "last.pt", brain, tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "pred").rglob("*.nii.gz"))
    assert written == [f"brain_{i:03d}.nii.gz" for i in range(1, 5)]
    seg = load_volume(brain / "brain_001" / "brain_001_seg.nii.gz")
    assert load_volume(tmp_path / "pred" / "brain_001.nii.gz").same_grid(seg)

    # a case without its T1c: one line naming the missing file, the other cases go on
    broken = tmp_path / "broken"
    shutil.copytree(brain, broken)
    (broken / "brain_002" / "brain_002_t1ce.nii.gz").unlink()
    result = cli("predict", tmp_path / "run" / "last.pt", broken, tmp_path / "pred2")
    assert result.exit_code == 1
    assert "brain_002_flair.nii.gz: channel t1ce is missing: no brain_002_t1ce.nii.gz beside it" in _text(result)
    assert len(list((tmp_path / "pred2").rglob("*.nii.gz"))) == 3

    result = cli("gradcam", tmp_path / "run" / "last.pt", brain / "brain_003" / "brain_003_flair.nii.gz",
                 tmp_path / "cam.nii.gz")
    assert result.exit_code == 0, result.stderr
    assert load_volume(tmp_path / "cam.nii.gz").same_grid(seg)
    result = cli("gradcam", tmp_path / "run" / "last.pt", broken / "brain_002" / "brain_002_flair.nii.gz",
                 tmp_path / "cam2.nii.gz")
    assert result.exit_code == 1 and "channel t1ce is missing" in _text(result)


def test_a_flat_folder_of_case_channel_files(cli, brain, tmp_path):
    flat = _flat(brain, tmp_path / "flat")
    result = cli("train", "segment", "--images", flat, "--masks", flat, "--mask-suffix", "_seg",
                 "--channels", "t2,flair", *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    recipe = load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]
    assert recipe["channels"]["names"] == ["t2", "flair"] and recipe["image_suffix"] == "_t2"
    result = cli("predict", tmp_path / "run" / "last.pt", flat, tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [f"brain_{i:03d}.nii.gz" for i in range(1, 5)]
    bad = cli("train", "segment", "--images", flat, "--masks", flat, "--mask-suffix", "_seg", "--channels", "t2",
              "--image-suffix", "_t2", *TINY, "--out", tmp_path / "run2")
    assert bad.exit_code == 2 and "give --channels or --image-suffix, not both" in _text(bad)


def test_a_decathlon_4d_dataset_trains_and_predicts(cli, brain, tmp_path):
    task = tmp_path / "Task01_BrainTumour"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    training = []
    for folder in sorted(brain.iterdir()):
        case = folder.name
        images = [nib.load(folder / f"{case}_{m}.nii.gz") for m in ("flair", "t1", "t1ce", "t2")]
        stacked = np.stack([np.asarray(i.dataobj) for i in images], axis=-1)
        nib.save(nib.Nifti1Image(stacked, images[0].affine), task / "imagesTr" / f"{case}.nii.gz")
        shutil.copy(folder / f"{case}_seg.nii.gz", task / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (task / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "necrosis", "2": "edema", "3": "non-enhancing", "4": "enhancing"},
        "training": training, "test": []}))
    result = cli("train", "segment", "--dataset", task, "--channels", "FLAIR,t1gd", *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    recipe = load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]
    assert recipe["channels"] == {"names": ["FLAIR", "t1gd"], "suffixes": [], "four_d": True, "indices": [0, 2]}
    result = cli("predict", tmp_path / "run" / "last.pt", task / "imagesTr" / "brain_001.nii.gz", tmp_path / "p.nii.gz")
    assert result.exit_code == 0, result.stderr
    assert load_volume(tmp_path / "p.nii.gz").shape == (32, 32, 32)
    three_d = brain / "brain_001" / "brain_001_t2.nii.gz"
    result = cli("predict", tmp_path / "run" / "last.pt", three_d, tmp_path / "q.nii.gz")
    assert result.exit_code == 1 and "holds 1 channels, the model takes 2" in _text(result)


def test_export_nnunet_writes_a_file_per_channel(cli, brain, tmp_path):
    out = tmp_path / "Dataset501_Brain"
    result = cli("export", "nnunet", out, "--dataset", brain, "--json")
    assert result.exit_code == 0, result.stderr
    description = json.loads((out / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "flair", "1": "t1", "2": "t1ce", "3": "t2"}
    names = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert names[:4] == [f"brain_001_{k:04d}.nii.gz" for k in range(4)] and len(names) == 16
    for k, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        exported = load_volume(out / "imagesTr" / f"brain_002_{k:04d}.nii.gz")
        original = load_volume(brain / "brain_002" / f"brain_002_{modality}.nii.gz")
        assert np.array_equal(exported.array, original.array) and exported.same_grid(original)
    # read back as nnU-Net raw: the same four channels per case
    from medtool.layouts import read_layout

    back = read_layout(out)
    assert back.chosen == ["flair", "t1", "t1ce", "t2"] and len(back.cases[0].inputs) == 4


def test_region_training_predicts_labels_and_region_maps(cli, brain, tmp_path):
    result = cli("train", "segment", "--dataset", brain, "--regions", "brats", *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "predict paints them back into labels wt->2, tc->1, et->4" in _text(result)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["recipe"]["regions"] == {"wt": [1, 2, 3, 4], "tc": [1, 3, 4], "et": [4]}
    assert state["model"]["config"]["out_channels"] == 3 and state["recipe"]["activation"] == "sigmoid"
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"dice_wt", "dice_tc", "dice_et"} <= set(log)
    result = cli("predict", tmp_path / "run" / "last.pt", brain / "brain_001" / "brain_001_flair.nii.gz",
                 tmp_path / "pred" / "brain_001.nii.gz", "--probabilities")
    assert result.exit_code == 0, result.stderr
    labels = load_volume(tmp_path / "pred" / "brain_001.nii.gz").array
    maps = {r: load_volume(tmp_path / "pred" / f"brain_001_prob_{r}.nii.gz").array for r in ("wt", "tc", "et")}
    # the labels are the region maps painted at 0.5: wt -> 2, then tc -> 1, then et -> 4
    expected = np.zeros(labels.shape, np.uint8)
    for region, label in (("wt", 2), ("tc", 1), ("et", 4)):
        expected[maps[region] >= 0.5] = label
    assert set(np.unique(labels)) <= {0, 1, 2, 4}
    assert np.mean(labels == expected) > 0.999          # the maps are the model's, interpolated onto the grid
    bad = cli("train", "segment", "--dataset", brain, "--regions", "brats", "--activation", "softmax", *TINY,
              "--out", tmp_path / "run2")
    assert bad.exit_code == 2 and "--activation softmax does not apply" in _text(bad)


def test_a_classifier_takes_several_channels(cli, brain, tmp_path):
    flat = _flat(brain, tmp_path / "flat")
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,label\n" + "".join(f"brain_{i:03d},{'ab'[i % 2]}\n" for i in range(1, 5)))
    result = cli("train", "classify", "--images", flat, "--labels", labels, "--channels", "flair,t1ce",
                 "--epochs", "1", "--steps", "1", "--batch-size", "2", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "normalise flair: zscore (channel flair in --channels); t1ce: zscore" in _text(result)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["model"]["config"]["in_channels"] == 2 and state["recipe"]["channels"]["names"] == ["flair", "t1ce"]
    (flat / "brain_003_t1ce.nii.gz").unlink()
    result = cli("predict", tmp_path / "run" / "last.pt", flat, tmp_path / "pred.csv")
    assert result.exit_code == 1 and "channel t1ce is missing: no brain_003_t1ce.nii.gz" in _text(result)
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,prob_a,prob_b") and [r.split(",")[0] for r in rows[1:]] == [
        "brain_001", "brain_002", "brain_004"]
