from collections import Counter, defaultdict

import numpy as np
import pytest

from medtool.errors import InputError, UsageError
from medtool.folds import TEST, Cases, make_folds, read_cases


def _cohort(seed, patients=60):
    """Patients with 1-3 cases each; the label is mostly shared by a patient's cases."""
    rng = np.random.default_rng(seed)
    ids, labels, groups = [], [], []
    for p in range(patients):
        base = rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1])
        for _ in range(rng.integers(1, 4)):
            ids.append(f"case_{len(ids):03d}")
            labels.append(base if rng.random() < 0.9 else "a")
            groups.append(f"P{p:03d}")
    return Cases(ids, labels, groups)


@pytest.mark.parametrize("seed", range(3))
def test_grouped_stratified_no_leakage_and_balanced(seed):
    cases = _cohort(seed)
    split = make_folds(cases, k=5, seed=seed, test=0.2)
    assert set(split.folds) == set(cases.ids)
    fold_of_group = defaultdict(set)
    for case, group in zip(cases.ids, cases.groups):
        fold_of_group[group].add(split.folds[case])
    assert all(len(f) == 1 for f in fold_of_group.values())            # no patient in two folds
    # every fold and the test split near its share of each class: within the largest group
    total = Counter(cases.labels)
    label = dict(zip(cases.ids, cases.labels))
    n_test = len(split.members(TEST))
    assert abs(n_test - 0.2 * len(cases.ids)) <= 3
    for fold in range(5):
        members = split.members(fold)
        assert members
        counts = Counter(label[c] for c in members)
        for name, n in total.items():
            share = (len(cases.ids) - n_test) / len(cases.ids) / 5
            assert abs(counts[name] - n * share) <= 3.5, (fold, name, counts, total)


@pytest.mark.parametrize("seed", range(3))
def test_stratified_only_is_exact_like_stratified_kfold(seed):
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    labels = rng.choice(["x", "y", "z"], 103, p=[0.5, 0.3, 0.2]).tolist()
    ids = [f"c{i:03d}" for i in range(103)]
    split = make_folds(Cases(ids, labels), k=4, seed=seed)
    ours = [Counter(labels[i] for i in range(103) if split.folds[ids[i]] == f) for f in range(4)]
    theirs = [Counter(np.array(labels)[v].tolist())
              for _, v in StratifiedKFold(4).split(np.zeros(103), labels)]
    for name in "xyz":                         # each class spread as evenly as possible
        assert sorted(c[name] for c in ours) == sorted(c[name] for c in theirs)
    sizes = [sum(c.values()) for c in ours]
    assert max(sizes) - min(sizes) <= max(sum(c.values()) for c in theirs) - min(sum(c.values()) for c in theirs) + 1


def test_grouped_only_sizes_and_determinism():
    cases = _cohort(7)
    cases = Cases(cases.ids, None, cases.groups)
    a = make_folds(cases, k=3, seed=5)
    b = make_folds(Cases(cases.ids[::-1], None, cases.groups[::-1]), k=3, seed=5)
    assert a.folds == b.folds                  # row order does not matter
    assert make_folds(cases, k=3, seed=6).folds != a.folds
    sizes = [len(a.members(f)) for f in range(3)]
    assert max(sizes) - min(sizes) <= 3        # groups are at most 3 cases


def test_nnunet_splits():
    cases = Cases([f"c{i}" for i in range(10)])
    split = make_folds(cases, k=5, seed=0, test=0.2)
    splits = split.nnunet()
    assert len(splits) == 5
    test = set(split.members(TEST))
    assert len(test) == 2
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"])
        assert set(fold["train"]) | set(fold["val"]) == set(cases.ids) - test
    assert sorted(c for fold in splits for c in fold["val"]) == sorted(set(cases.ids) - test)


def test_impossible_requests_say_what_to_change():
    cases = Cases([f"c{i}" for i in range(6)], ["a"] * 4 + ["b"] * 2, ["g1", "g1", "g2", "g3", "g4", "g4"])
    with pytest.raises(UsageError, match=r"5 folds need at least 5 groups, there are 4.*--k 4 at most"):
        make_folds(Cases(cases.ids, None, cases.groups), k=5)
    with pytest.raises(UsageError, match="class 'b' has 2 cases, fewer than the 3 parts.*lower --k"):
        make_folds(Cases(cases.ids, cases.labels), k=3)
    with pytest.raises(UsageError, match="at least 2 folds"):
        make_folds(cases, k=1)
    with pytest.raises(UsageError, match="selects no case"):
        make_folds(Cases([f"c{i}" for i in range(20)]), k=2, test=0.01)


def test_read_cases_from_csv_and_folders(tmp_path):
    (tmp_path / "labels.csv").write_text("case_id,patient_id,label,size\nc1,P1,0,1.5\nc2,P1,1,2.5\nc3,P2,1,9\n")
    cases = read_cases(tmp_path / "labels.csv", stratify="label", group="patient_id")
    assert cases.ids == ["c1", "c2", "c3"] and cases.labels == ["0", "1", "1"]
    assert cases.groups == ["P1", "P1", "P2"]
    binned = read_cases(tmp_path / "labels.csv", stratify="size", bins=2)
    assert len(set(binned.labels)) == 2 and binned.labels[1] == binned.labels[2]   # median 2.5
    with pytest.raises(InputError, match="no column 'site'"):
        read_cases(tmp_path / "labels.csv", group="site")
    # several rows per case (the RSNA box table): one case, positive when any row is
    (tmp_path / "boxes.csv").write_text("patientId,x,Target,site\np1,,0,A\np2,10,1,A\np2,50,1,A\n"
                                        "p3,,0,B\np4,5,1,B\np4,,0,B\n")
    boxes = read_cases(tmp_path / "boxes.csv", stratify="Target", group="site", id_column="patientId")
    assert boxes.ids == ["p1", "p2", "p3", "p4"] and boxes.labels == ["0", "1", "0", "1"]
    assert boxes.groups == ["A", "A", "B", "B"] and boxes.merged == 2
    (tmp_path / "dup.csv").write_text("case_id,label,site\nc1,small,A\nc2,small,A\nc1,large,B\n")
    assert read_cases(tmp_path / "dup.csv").ids == ["c1", "c2"]
    with pytest.raises(InputError, match=r"line 4: case c1 has 2 values in column 'label' \(large, small; lines 2, 4\)"):
        read_cases(tmp_path / "dup.csv", stratify="label")
    with pytest.raises(InputError, match="case c1 has 2 values in column 'site'"):
        read_cases(tmp_path / "dup.csv", group="site")
    volumes = tmp_path / "vols"
    volumes.mkdir()
    for name in ("b.nii.gz", "a.npy", "a.json", "c.npz"):
        (volumes / name).write_text("")
    assert read_cases(volumes).ids == ["a", "b", "c"]
    # an image's derived files stay with it
    for name in ("a_masked.npy", "c_masked.npz", "b_ct.nii.gz"):
        (volumes / name).write_text("")
    derived = read_cases(volumes)
    assert derived.ids == ["a", "b", "b_ct", "c"] and derived.merged == 2
    assert read_cases(volumes, image_suffix="_ct").ids == ["a", "b", "c"]
    dicom = tmp_path / "ct"
    for name in ("case_2", "case_1"):
        (dicom / name).mkdir(parents=True)
        (dicom / name / "IM-0001.dcm").write_text("")
    assert read_cases(dicom).ids == ["case_1", "case_2"]
    with pytest.raises(UsageError, match="folder"):
        read_cases(dicom, group="patient_id")
