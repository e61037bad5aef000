"""Datasets in their owners' layouts through the commands a user runs: train segment --dataset
(Decathlon, nnU-Net v2, BraTS), predict with the image suffix the checkpoint learnt, score by
name, export nnunet and back."""

from __future__ import annotations

import json

import numpy as np

from medtool.formats import load_volume
from medtool.train import load_checkpoint
from tests.layout_fixtures import write_brats, write_decathlon, write_nnunet

TINY = ("--dim", "2d", "--width", "4", "--depth", "2", "--epochs", "1", "--steps", "1", "--batch-size", "2")


def _text(result) -> str:
    return " ".join(result.stderr.split())


def test_decathlon_trains_with_ct_normalisation_and_its_class_names(cli, tmp_path):
    task = write_decathlon(tmp_path)
    result = cli("train", "segment", "--dataset", task, *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    text = _text(result)
    assert f"Decathlon dataset {task}: 3 training cases, 1 test images; classes liver, cancer; channel CT" in text
    assert "normalise ct window [-1000, 400] (channel CT in the Decathlon dataset.json)" in text
    recipe = load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]
    assert recipe["classes"] == ["background", "liver", "cancer"]
    assert recipe["dataset"] == {"kind": "Decathlon", "channel": "CT", "channels": ["CT"]}
    result = cli("predict", tmp_path / "run" / "last.pt", task / "imagesTs", tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in (tmp_path / "pred").iterdir()] == ["liver_99.nii.gz"]


def test_an_mri_channel_is_z_scored(cli, tmp_path):
    dataset = write_nnunet(tmp_path, channel="T2")
    result = cli("train", "segment", "--dataset", dataset, *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "normalise zscore (channel T2 in the nnU-Net dataset.json; over every voxel: the nonzero voxels fill" in _text(result)


def test_export_nnunet_then_train_and_predict_on_its_layout(cli, tmp_path):
    task = write_decathlon(tmp_path)
    (tmp_path / "folds.csv").write_text("case_id,fold\nliver_0,0\nliver_1,1\nliver_2,test\n")
    out = tmp_path / "nnUNet_raw" / "Dataset501_Liver"
    result = cli("export", "nnunet", out, "--dataset", task, "--folds", tmp_path / "folds.csv", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["liver", "cancer"] and summary["channels"] == ["CT"] and summary["splits"] == 2
    assert "channel CT (the Decathlon dataset.json)" in _text(result)
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"liver_{i}_0000.nii.gz" for i in range(3)]
    # the same images and labels as the Decathlon files
    for i in range(3):
        a = load_volume(task / "imagesTr" / f"liver_{i}.nii.gz")
        b = load_volume(out / "imagesTr" / f"liver_{i}_0000.nii.gz")
        np.testing.assert_array_equal(a.array, b.array)
        assert a.same_grid(b)
    again = cli("export", "nnunet", out, "--dataset", task)
    assert again.exit_code != 0 and "exists" in again.stderr      # never overwritten without --force

    (out / "imagesTs").mkdir()
    (out / "imagesTs" / "liver_9_0000.nii.gz").write_bytes((task / "imagesTs" / "liver_99.nii.gz").read_bytes())
    result = cli("train", "segment", "--dataset", out, "--folds", tmp_path / "folds.csv", "--fold", "0", *TINY,
                 "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "1 training / 1 validation cases" in _text(result)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["recipe"]["classes"] == ["background", "liver", "cancer"]
    result = cli("predict", tmp_path / "run" / "last.pt", out / "imagesTs", tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    assert "inputs named <case>_0000 (as in training" in _text(result)
    assert [p.name for p in (tmp_path / "pred").iterdir()] == ["liver_9.nii.gz"]     # nnU-Net's output name


def test_export_from_folders_guesses_ct_from_hu_values(cli, tmp_path):
    task = write_decathlon(tmp_path)
    out = tmp_path / "Dataset002_Box"
    result = cli("export", "nnunet", out, "--images", task / "imagesTr", "--masks", task / "labelsTr")
    assert result.exit_code == 0, result.stderr
    assert "channel CT (liver_0.nii.gz: " in _text(result)
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "label_1": 1, "label_2": 2}
    bad = cli("export", "dicom", tmp_path / "x", "--dataset", task)
    assert bad.exit_code == 2 and "choose one of nnunet" in bad.stderr


def test_brats_trains_one_modality_and_its_predictions_score_by_name(cli, tmp_path):
    brats = write_brats(tmp_path)
    result = cli("train", "segment", "--dataset", brats, "--channels", "t1ce", "--normalize", "zscore", *TINY,
                 "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "channel t1ce (of flair, t1, t1ce, t2; choose with --channels)" in _text(result)
    result = cli("predict", tmp_path / "run" / "last.pt", brats, tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    written = sorted(p.relative_to(tmp_path / "pred").as_posix() for p in (tmp_path / "pred").rglob("*.nii.gz"))
    assert written == [f"BraTS20_Training_{i:03d}.nii.gz" for i in range(4)]     # <case>.nii.gz, as BraTS wants
    result = cli("score", "--truth", brats, "--suffix", "_seg", tmp_path / "pred", "--metric", "dice", "--json")
    assert result.exit_code == 0, result.stderr
    board = json.loads(result.stdout)["leaderboard"][0]
    assert board["cases"] == 3 and board["missing"] == [] and board["extra"] == ["BraTS20_Training_003"]


def test_dataset_and_folders_together_is_a_usage_error(cli, tmp_path):
    task = write_decathlon(tmp_path)
    result = cli("train", "segment", "--dataset", task, "--images", task / "imagesTr", "--masks", task / "labelsTr",
                 "--out", tmp_path / "run")
    assert result.exit_code == 2 and "not --dataset and --images" in result.stderr
