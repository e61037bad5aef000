"""Other tools' dataset layouts: Decathlon, nnU-Net v2 raw and BraTS read as they are published;
nnU-Net v2 raw written by export_nnunet and read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtool.errors import InputError, UsageError
from medtool.folds import nnunet_splits
from medtool.formats import load_volume, save_volume
from medtool.layouts import export_nnunet, read_layout
from tests.layout_fixtures import _case, write_brats, write_decathlon, write_nnunet


def test_decathlon_cases_classes_and_channel_come_from_dataset_json(tmp_path):
    layout = read_layout(write_decathlon(tmp_path))
    assert layout.kind == "Decathlon"
    assert [c.case_id for c in layout.cases] == ["liver_0", "liver_1", "liver_2"]   # no ._liver_0
    assert layout.classes == ["liver", "cancer"] and layout.channel == "CT" and layout.is_ct
    assert [p.name for p in layout.test] == ["liver_99.nii.gz"] and layout.image_suffix == ""
    assert "Decathlon dataset" in layout.describe() and "classes liver, cancer" in layout.describe()


def test_nnunet_channel_suffix_labels_and_test_images(tmp_path):
    layout = read_layout(write_nnunet(tmp_path, channel="T2"))
    assert layout.kind == "nnU-Net" and layout.image_suffix == "_0000"
    assert [c.case_id for c in layout.cases] == ["box_000", "box_001", "box_002"]
    assert layout.cases[0].masks[0].name == "box_000.nii.gz"
    assert layout.classes == ["organ", "lesion"] and not layout.is_ct
    assert [p.name for p in layout.test] == ["box_007_0000.nii.gz"]


def test_brats_folders_give_cases_channels_and_test_cases(tmp_path):
    layout = read_layout(write_brats(tmp_path))
    assert layout.kind == "BraTS" and layout.channels == ["flair", "t1", "t1ce", "t2"]
    assert layout.channel == "flair" and layout.image_suffix == "_flair" and layout.mask_suffix == "_seg"
    assert len(layout.cases) == 3 and len(layout.test) == 1
    assert layout.cases[0].image.name == "BraTS20_Training_000_flair.nii.gz"
    # every channel is an input unless --channels picks some (nnU-Net trains on all)
    assert layout.chosen == ["flair", "t1", "t1ce", "t2"] and layout.suffixes == ["_flair", "_t1", "_t1ce", "_t2"]
    assert [p.name for p in layout.cases[0].inputs] == [f"BraTS20_Training_000_{m}.nii.gz"
                                                        for m in ("flair", "t1", "t1ce", "t2")]
    assert "channels flair, t1, t1ce, t2 (all; choose with --channels)" in layout.describe()
    channels = layout.input_channels()
    assert channels.names == ("flair", "t1", "t1ce", "t2") and not channels.four_d
    t1ce = read_layout(tmp_path / "BraTS", channels=["T1CE"])
    assert t1ce.cases[2].image.name == "BraTS20_Training_002_t1ce.nii.gz" and t1ce.image_suffix == "_t1ce"
    assert t1ce.input_channels() is None and "(of flair, t1, t1ce, t2; choose with --channels)" in t1ce.describe()
    # the order given is the order of the channels
    two = read_layout(tmp_path / "BraTS", channels=["t2", "flair"])
    assert [p.name for p in two.cases[1].inputs] == ["BraTS20_Training_001_t2.nii.gz", "BraTS20_Training_001_flair.nii.gz"]
    assert two.test[0].name == "BraTS20_Training_003_t2.nii.gz"


def test_nnunet_channels_are_the_numbered_files_of_a_case(tmp_path):
    dataset = write_nnunet(tmp_path, channel="T2")
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T2", "1": "ADC"}
    (dataset / "dataset.json").write_text(json.dumps(meta))
    for case in ("box_000", "box_001", "box_002"):
        first = dataset / "imagesTr" / f"{case}_0000.nii.gz"
        (dataset / "imagesTr" / f"{case}_0001.nii.gz").write_bytes(first.read_bytes())
    layout = read_layout(dataset)
    assert layout.chosen == ["T2", "ADC"] and layout.suffixes == ["_0000", "_0001"]
    assert [p.name for p in layout.cases[2].inputs] == ["box_002_0000.nii.gz", "box_002_0001.nii.gz"]
    only = read_layout(dataset, channels=["adc"])
    assert only.image_suffix == "_0001" and only.cases[0].image.name == "box_000_0001.nii.gz"
    (dataset / "imagesTr" / "box_001_0001.nii.gz").unlink()
    with pytest.raises(InputError, match="channel file box_001_0001.nii.gz is missing"):
        read_layout(dataset)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "labelsTr" / "box_001.nii.gz").unlink(), "no label file box_001.nii.gz"),
    (lambda d: (d / "dataset.json").write_text("{not json"), "cannot read it"),
    (lambda d: (d / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "numTraining": 5,
         "file_ending": ".nii.gz"})), "numTraining 5, imagesTr holds 3"),
    (lambda d: (d / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "whole": [1, 2]},
         "file_ending": ".nii.gz"})), "is a region"),
    (lambda d: (d / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 3},
         "file_ending": ".nii.gz"})), "do not run 1..N"),
])
def test_damaged_datasets_are_one_error_naming_the_file(tmp_path, damage, message):
    dataset = write_nnunet(tmp_path)
    damage(dataset)
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("[", r"\[")):
        read_layout(dataset)


def test_not_a_dataset_and_unknown_channels(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="no dataset.json and no BraTS"):
        read_layout(tmp_path / "plain")
    brats = write_brats(tmp_path)
    with pytest.raises(UsageError, match="the dataset has no pd"):
        read_layout(brats, channels=["pd"])
    with pytest.raises(UsageError, match="choose from flair, t1, t1ce, t2"):
        read_layout(brats, channels=["flair", "pd"])


def test_export_nnunet_round_trips_images_labels_and_splits(tmp_path):
    layout = read_layout(write_decathlon(tmp_path))
    folds = {"liver_0": 0, "liver_1": 1, "liver_2": "test"}
    out = tmp_path / "raw" / "Dataset501_Liver"
    summary = export_nnunet(layout.cases, out, classes=layout.classes, channels=["CT"], folds=folds)
    assert summary["cases"] == 3 and summary["splits"] == 2
    description = json.loads((out / "dataset.json").read_text())
    assert description["labels"] == {"background": 0, "liver": 1, "cancer": 2}
    assert description["channel_names"] == {"0": "CT"} and description["numTraining"] == 3
    splits = json.loads((out / "splits_final.json").read_text())
    assert splits == [{"train": ["liver_1"], "val": ["liver_0"]}, {"train": ["liver_0"], "val": ["liver_1"]}]
    back = read_layout(out)
    assert back.kind == "nnU-Net" and back.classes == layout.classes and back.is_ct
    for original, exported in zip(layout.cases, back.cases):
        assert exported.case_id == original.case_id
        a, b = load_volume(original.image), load_volume(exported.image)
        np.testing.assert_array_equal(a.array, b.array)
        assert a.same_grid(b)
        np.testing.assert_array_equal(load_volume(original.masks[0]).array, load_volume(exported.masks[0]).array)
        assert load_volume(exported.masks[0]).array.dtype == np.uint8


def test_export_refuses_bad_names_and_masks_off_the_grid(tmp_path):
    layout = read_layout(write_decathlon(tmp_path))
    with pytest.raises(UsageError, match="DatasetNNN_Name"):
        export_nnunet(layout.cases, tmp_path / "Liver", classes=None, channels=["CT"])
    moved = load_volume(layout.cases[1].masks[0])
    moved.origin = (0.0, 0.0, 0.0)
    save_volume(moved, layout.cases[1].masks[0], force=True)
    out = tmp_path / "Dataset001_Liver"
    with pytest.raises(InputError, match="not on its image's grid"):
        export_nnunet(layout.cases, out, classes=None, channels=["CT"])
    assert not out.exists()                     # nothing half-written


def test_splits_leave_the_test_fold_out_and_need_every_case():
    assert nnunet_splits({"a": 0, "b": 1, "c": 0, "t": "test"}, ["a", "b", "c", "t"]) == [
        {"train": ["b"], "val": ["a", "c"]}, {"train": ["a", "c"], "val": ["b"]}]
    with pytest.raises(InputError, match="not in the folds table"):
        nnunet_splits({"a": 0}, ["a", "z"])


def test_nnunet_accepts_the_export(tmp_path, monkeypatch):
    """nnU-Net v2's own dataset check (verify_dataset_integrity: dataset.json keys, file names,
    label values, image/label geometry). nnunetv2 is not a dependency: install it to run this."""
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    layout = read_layout(write_decathlon(tmp_path))
    out = tmp_path / "raw" / "Dataset501_Liver"
    export_nnunet(layout.cases, out, classes=layout.classes, channels=["CT"])
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    verify.verify_dataset_integrity(str(out), num_processes=1)      # raises on any violation


def test_brats_2023_names_with_hyphens(tmp_path):
    """BraTS 2023 on names files <case>-t1n, -t1c, -t2w, -t2f and -seg."""
    root = tmp_path / "BraTS2023"
    image, labels = _case(0, value=300.0)
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000"):
        (root / case).mkdir(parents=True)
        for modality in ("t2f", "t1n", "t1c", "t2w"):
            save_volume(image, root / case / f"{case}-{modality}.nii.gz")
        save_volume(labels, root / case / f"{case}-seg.nii.gz")
    layout = read_layout(root)
    assert layout.kind == "BraTS" and layout.chosen == ["t1n", "t1c", "t2w", "t2f"]
    assert layout.suffixes == ["-t1n", "-t1c", "-t2w", "-t2f"] and layout.mask_suffix == "-seg"
    assert [p.name for p in layout.cases[1].inputs][:2] == ["BraTS-GLI-00002-000-t1n.nii.gz",
                                                            "BraTS-GLI-00002-000-t1c.nii.gz"]
    assert layout.cases[0].masks[0].name == "BraTS-GLI-00000-000-seg.nii.gz"
