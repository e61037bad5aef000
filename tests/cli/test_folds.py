import csv
import json

from medtool.folds import TEST


def _read(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_folds_on_phantom_labels(cli, phantom_dir, tmp_path):
    out = tmp_path / "folds.csv"
    result = cli("folds", phantom_dir / "labels.csv", out, "--k", "2", "--group", "patient_id", "--json")
    assert result.exit_code == 0, result.stderr
    rows = _read(out)
    labels = _read(phantom_dir / "labels.csv")
    assert [r["case_id"] for r in rows] == [r["case_id"] for r in labels]
    fold = {r["case_id"]: r["fold"] for r in rows}
    patients = {}
    for row in labels:
        patients.setdefault(row["patient_id"], set()).add(fold[row["case_id"]])
    assert any(len([r for r in labels if r["patient_id"] == p]) > 1 for p in patients)  # a repeat patient
    assert all(len(f) == 1 for f in patients.values())
    assert set(fold.values()) == {"0", "1"}
    splits = json.loads((tmp_path / "splits_final.json").read_text())
    assert [sorted(s["val"]) for s in splits] == [sorted(c for c in fold if fold[c] == k) for k in "01"]
    payload = json.loads(result.stdout)                              # --json: the balance as JSON
    assert payload["cases"] == len(labels) and payload["folds"] == 2
    assert sum(row["cases"] for row in payload["balance"]) == len(labels)
    assert {str(row["fold"]) for row in payload["balance"]} == {"0", "1"}
    # existing outputs need --force
    again = cli("folds", phantom_dir / "labels.csv", out, "--k", "2")
    assert again.exit_code == 1 and "--force" in again.stderr


def test_folds_with_test_split_and_stratification(cli, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("case_id,patient_id,label\n" + "".join(
        f"c{i:02d},P{i // 2:02d},{int(i % 4 == 0)}\n" for i in range(40)))
    out = tmp_path / "folds.csv"
    result = cli("folds", table, out, "--k", "3", "--group", "patient_id", "--stratify", "label",
                 "--test", "0.25", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    rows = _read(out)
    assert 8 <= sum(r["fold"] == TEST for r in rows) <= 12
    assert "label=1" in result.stdout and "test" in result.stdout
    same = cli("folds", table, tmp_path / "again.csv", "--k", "3", "--group", "patient_id",
               "--stratify", "label", "--test", "0.25", "--seed", "3")
    assert same.exit_code == 0 and _read(tmp_path / "again.csv") == rows


def test_impossible_request_is_a_usage_error(cli, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("case_id,label\na,0\nb,0\nc,1\nd,0\ne,1\nf,0\n")
    result = cli("folds", table, tmp_path / "f.csv", "--k", "3", "--stratify", "label")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: class '1' has 2 cases") and "lower --k" in lines[0]
    assert not (tmp_path / "f.csv").exists()


def test_folds_on_the_rsna_box_table_one_row_per_patient(cli, tmp_path):
    """stage_2_train_labels.csv has one row per box: a patient is one case, positive when any
    of its rows is, and train --task detect takes the folds as they are."""
    from medtool.phantom import write_dataset

    data = tmp_path / "rsna"
    write_dataset(data, cases=1, seed=3, shape=32, cxr=12)
    table = data / "cxr_boxes.csv"
    rows = _read(table)
    assert len(rows) > len({r["patientId"] for r in rows})          # several boxes per patient
    result = cli("folds", table, tmp_path / "folds.csv", "--k", "2", "--id-column", "patientId",
                 "--stratify", "Target")
    assert result.exit_code == 0, result.stderr
    assert "rows of a case already listed merged into it (its Target is 1 when any row is 1)" in \
        " ".join(result.stderr.split())
    folds = _read(tmp_path / "folds.csv")
    assert sorted(r["case_id"] for r in folds) == sorted({r["patientId"] for r in rows})
    positive = {r["patientId"] for r in rows if r["Target"] == "1"}
    for fold in ("0", "1"):                                             # stratified by patient
        members = {r["case_id"] for r in folds if r["fold"] == fold}
        assert abs(len(members & positive) - len(positive) / 2) <= 0.5
    result = cli("train", "--task", "detect", "--images", data / "cxr", "--boxes", table,
                 "--folds", tmp_path / "folds.csv", "--fold", "0", "--model", "resnet18-fpn",
                 "--fpn-width", "8", "--size", "64", "--epochs", "1", "--steps", "1",
                 "--batch-size", "2", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    zero = sum(1 for r in folds if r["fold"] == "0")
    assert f"{len(folds) - zero} training / {zero} validation cases" in " ".join(result.stderr.split())


def test_brats_case_folders_are_one_case_each(cli, tmp_path):
    """<case>/<case>_flair.nii.gz ... <case>_seg.nii.gz: every file of a case folder is that case,
    so a patient's modalities and labels never land in different folds."""
    from tests.layout_fixtures import write_brats

    brats = write_brats(tmp_path, cases=4, unlabelled=0)
    result = cli("folds", brats, tmp_path / "folds.csv", "--k", "2")
    assert result.exit_code == 0, result.stderr
    rows = (tmp_path / "folds.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == [f"BraTS20_Training_{i:03d}" for i in range(4)]


def test_a_dataset_folder_gives_its_training_cases(cli, tmp_path):
    """An nnU-Net dataset (imagesTr/<case>_0000, labelsTr/<case>) gives the case ids train
    --dataset uses, so its folds flow into train --folds."""
    from tests.layout_fixtures import write_nnunet

    dataset = write_nnunet(tmp_path, cases=4)
    result = cli("folds", dataset, tmp_path / "folds.csv", "--k", "2")
    assert result.exit_code == 0, result.stderr
    rows = (tmp_path / "folds.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == [f"box_{i:03d}" for i in range(4)]
