"""medtool.tables: the CSV tables commands share, and checks on the ids in them."""

import numpy as np
import pytest

from medtool.errors import InputError
from medtool.formats import save_volume
from medtool.tables import repeated
from medtool.volume import Volume


def test_repeated_lists_each_id_seen_more_than_once_sorted():
    assert repeated(["b", "a", "c", "b", "a", "b"]) == ["a", "b"]
    assert repeated(["x", "y"]) == [] and repeated([]) == []


def test_repeated_is_one_pass_at_rsna_size():
    ids = [f"id{i}" for i in range(30_000)] + ["id7"]
    assert repeated(ids) == ["id7"]                   # a quadratic count would take minutes


def test_a_case_id_in_two_formats_is_refused_by_name(tmp_path):
    from medtool.datasets import match_cases

    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    volume = Volume(np.zeros((2, 4, 4), np.int16), (1.0, 1.0, 1.0))
    save_volume(volume, tmp_path / "img" / "c0.npy")
    save_volume(volume, tmp_path / "img" / "c0.nii.gz")
    save_volume(volume, tmp_path / "mask" / "c0.npy")
    with pytest.raises(InputError, match="case ids found twice: c0"):
        match_cases(tmp_path / "img", tmp_path / "mask")


def test_an_index_that_holds_the_rows_already_is_not_rewritten(tmp_path):
    """upsert_csv of rows the index holds already leaves the file as it is (same inode: no
    rename over it); a changed row rewrites it."""
    from medtool.tables import read_table, upsert_csv

    index = tmp_path / "cases.csv"
    rows = [{"case_id": "b", "source": "x/b"}, {"case_id": "a", "source": "x/a"}]
    upsert_csv(index, ["case_id", "source"], rows)
    first = index.stat().st_ino
    upsert_csv(index, ["case_id", "source"], rows[:1])
    assert index.stat().st_ino == first
    upsert_csv(index, ["case_id", "source"], [{"case_id": "a", "source": "y/a"}])
    assert index.stat().st_ino != first
    assert [r["source"] for r in read_table(index).rows] == ["y/a", "x/b"]
