"""Seed S0's workflow as a user runs it, from a TCIA download and a clinical table keyed by
PatientID: dicom2npy -> hu -> lungmask -> resample -> folds grouped by patient -> train --cv
classify, with no table written by hand between the steps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medtool.phantom import write_dataset

pytestmark = pytest.mark.slow     # whole workflows: left out by pytest -m 'not slow'

#: Seed 43: six patients, one study each. Seed 45: four patients, two of them with a follow-up.
ONE_STUDY_SEED, FOLLOW_UP_SEED = 43, 45


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _patient_table(data: Path, out: Path) -> dict[str, str]:
    """The user's clinical table: one row per patient (PatientID,label), the label being
    whether the patient's first scan shows a tumour of 20 mm or more."""
    labels: dict[str, str] = {}
    for row in _rows(data / "labels.csv"):
        labels.setdefault(row["PatientID"], row["label"])
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PatientID", "label"])
        writer.writerows(sorted(labels.items()))
    return labels


def _to_lung_crops(cli, raw: Path, work: Path) -> Path:
    """hu -> lungmask (masked CT) -> resample to the classifier's input grid."""
    for args in (("hu", raw, work / "hu"),
                 ("lungmask", work / "hu", work / "lungs", "--apply", "-1000"),
                 ("resample", work / "lungs", work / "crops", "--shape", "32", "32", "--crop-z", "8")):
        result = cli(*args)
        assert result.exit_code == 0, (args[0], result.stderr)
    return work / "crops"


@pytest.fixture(scope="module")
def one_study(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("tcia") / "data"
    write_dataset(data, cases=6, seed=ONE_STUDY_SEED, shape=64, cxr=0, layout="tcia")
    return data


def test_s0_from_a_tcia_download_named_by_patient(cli, tmp_path, one_study):
    labels = _patient_table(one_study, tmp_path / "patients.csv")
    assert len(labels) == 6 and set(labels.values()) == {"0", "1"}

    result = cli("dicom2npy", one_study / "ct", tmp_path / "raw", "--name", "{PatientID}")
    assert result.exit_code == 0, result.stderr
    # one volume per patient, named by PatientID, and the table of what each one is
    assert sorted(p.stem for p in (tmp_path / "raw").glob("*.npy")) == sorted(labels)
    cases = _rows(tmp_path / "raw" / "cases.csv")
    assert sorted(r["case_id"] for r in cases) == sorted(labels)
    assert all(r["case_id"] == r["PatientID"] and r["Modality"] == "CT" for r in cases)

    crops = _to_lung_crops(cli, tmp_path / "raw", tmp_path)
    assert sorted(p.name for p in crops.glob("*_masked.npy")) == sorted(f"{p}_masked.npy" for p in labels)

    result = cli("folds", tmp_path / "patients.csv", tmp_path / "folds.csv", "--k", "2",
                 "--group", "PatientID", "--stratify", "label", "--id-column", "PatientID")
    assert result.exit_code == 0, result.stderr
    folds = {r["case_id"]: r["fold"] for r in _rows(tmp_path / "folds.csv")}
    assert sorted(folds) == sorted(labels) and set(folds.values()) == {"0", "1"}

    result = cli("train", "--task", "classify", "--images", crops, "--image-suffix", "_masked",
                 "--labels", tmp_path / "patients.csv", "--id-column", "PatientID",
                 "--folds", tmp_path / "folds.csv", "--cv", "--model", "simple3d", "--width", "4",
                 "--epochs", "1", "--steps", "1", "--batch-size", "2", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "normalise ct window [-1000, 400] (CT in HU" in " ".join(result.stderr.split())
    oof = _rows(tmp_path / "run" / "oof.csv")
    assert sorted(r["case_id"] for r in oof) == sorted(labels)
    # every case predicted by the model of the fold it was held out in
    assert all(r["fold"] == folds[r["case_id"]] and r["truth"] == labels[r["case_id"]] for r in oof)
    summary = json.loads((tmp_path / "run" / "cv.json").read_text())
    assert summary["folds"] == 2


def test_s0_with_follow_ups_joins_patient_labels_through_cases_csv(cli, tmp_path):
    """Two patients have a follow-up study: cases are named PatientID_StudyDate, the table keyed
    by PatientID labels both scans of a patient, and the folds keep them together."""
    data = tmp_path / "data"
    write_dataset(data, cases=6, seed=FOLLOW_UP_SEED, shape=64, cxr=0, layout="tcia")
    labels = _patient_table(data, tmp_path / "patients.csv")
    assert len(labels) == 4

    result = cli("dicom2npy", data / "ct", tmp_path / "raw", "--name", "{PatientID}_{StudyDate}")
    assert result.exit_code == 0, result.stderr
    cases = {r["case_id"]: r["PatientID"] for r in _rows(tmp_path / "raw" / "cases.csv")}
    assert len(cases) == 6 and sorted(set(cases.values())) == sorted(labels)

    crops = _to_lung_crops(cli, tmp_path / "raw", tmp_path)
    result = cli("folds", tmp_path / "patients.csv", tmp_path / "folds.csv", "--k", "2",
                 "--id-column", "PatientID", "--cases", tmp_path / "raw" / "cases.csv",
                 "--stratify", "label")
    assert result.exit_code == 0, result.stderr
    folds = {r["case_id"]: r["fold"] for r in _rows(tmp_path / "folds.csv")}
    assert sorted(folds) == sorted(cases)
    by_patient: dict[str, set[str]] = {}
    for case, patient in cases.items():
        by_patient.setdefault(patient, set()).add(folds[case])
    assert all(len(f) == 1 for f in by_patient.values()), by_patient   # no patient in two folds

    result = cli("train", "--task", "classify", "--images", crops, "--image-suffix", "_masked",
                 "--labels", tmp_path / "patients.csv", "--id-column", "PatientID",
                 "--cases", tmp_path / "raw" / "cases.csv", "--folds", tmp_path / "folds.csv",
                 "--cv", "--model", "simple3d", "--width", "4", "--epochs", "1", "--steps", "1",
                 "--batch-size", "2", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    oof = _rows(tmp_path / "run" / "oof.csv")
    assert sorted(r["case_id"] for r in oof) == sorted(cases)
    assert all(r["truth"] == labels[cases[r["case_id"]]] for r in oof)


def test_held_out_test_cases_stay_out_of_training_and_cross_validation(cli, tmp_path, one_study):
    """folds --test writes a fold named test: train --folds --fold K and --cv take the numbered
    folds and leave the test cases out, with no row removed by hand."""
    labels = {r["PatientID"]: str(int(float(r["tumour_volume_ml"]) > 0)) for r in _rows(one_study / "labels.csv")}
    (tmp_path / "patients.csv").write_text("PatientID,label\n" + "".join(f"{p},{v}\n" for p, v in labels.items()))
    assert sorted(labels.values()) == ["0", "0", "0", "1", "1", "1"]          # any tumour
    assert cli("dicom2npy", one_study / "ct", tmp_path / "raw", "--name", "{PatientID}").exit_code == 0
    crops = _to_lung_crops(cli, tmp_path / "raw", tmp_path)
    result = cli("folds", tmp_path / "patients.csv", tmp_path / "folds.csv", "--k", "2",
                 "--id-column", "PatientID", "--test", "0.34", "--stratify", "label")
    assert result.exit_code == 0, result.stderr
    folds = {r["case_id"]: r["fold"] for r in _rows(tmp_path / "folds.csv")}
    test = {case for case, fold in folds.items() if fold == "test"}
    assert len(test) == 2 and sorted(folds) == sorted(labels)
    common = ("train", "--task", "classify", "--images", crops, "--image-suffix", "_masked",
              "--labels", tmp_path / "patients.csv", "--id-column", "PatientID",
              "--folds", tmp_path / "folds.csv", "--model", "simple3d", "--width", "4",
              "--epochs", "1", "--steps", "1", "--batch-size", "2", "--normalize", "ct")
    result = cli(*common, "--cv", "--out", tmp_path / "cv")
    assert result.exit_code == 0, result.stderr
    oof = {r["case_id"] for r in _rows(tmp_path / "cv" / "oof.csv")}
    assert oof == set(labels) - test
    result = cli(*common, "--fold", "0", "--out", tmp_path / "one", "--json")
    assert result.exit_code == 0, result.stderr
    summary = " ".join(result.stderr.split())
    trained = sum(1 for f in folds.values() if f == "1")
    assert f"{trained} training / {sum(1 for f in folds.values() if f == '0')} validation cases" in summary
