"""--shard I/N: job-array tasks split a batch into disjoint shares that together cover it."""

import numpy as np
import pytest

from medtool.formats import save_volume
from medtool.volume import Volume


@pytest.fixture
def seven_volumes(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        array = np.full((3, 4, 5), -1000 + i, dtype=np.int16)
        save_volume(Volume(array, spacing=(2.0, 1.0, 1.0), meta={"units": "HU"}), folder / f"case_{i}.npy")
    return folder


@pytest.mark.parametrize("command", [("resample", "--spacing", "2", "2", "2"), ("hu", "--preset", "lung")])
def test_shards_are_disjoint_and_cover_the_batch(cli, seven_volumes, tmp_path, command):
    name, *options = command
    outputs = []
    for i in (1, 2, 3):
        out = tmp_path / f"out_{i}"
        result = cli(name, seven_volumes, out, *options, "--shard", f"{i}/3")
        assert result.exit_code == 0, result.stderr
        outputs.append({p.name for p in out.glob("*.npy")})
    assert sum(len(o) for o in outputs) == 7
    assert set().union(*outputs) == {f"case_{i}.npy" for i in range(7)}
    assert all(len(o) in (2, 3) for o in outputs)


def test_bad_shard_is_a_usage_error(cli, seven_volumes, tmp_path):
    result = cli("resample", seven_volumes, tmp_path / "o", "--spacing", "2", "2", "2", "--shard", "4/3")
    assert result.exit_code == 2 and "--shard" in result.stderr
