import numpy as np
import pytest
from scipy.spatial.distance import pdist

from medtool.metrics import longest_axial_diameter


def test_rectangle_by_hand():
    mask = np.zeros((3, 10, 10), bool)
    mask[1, 2:5, 3:7] = True                 # rows 2..4, columns 3..6
    # farthest voxel centres: (2, 3) and (4, 6) -> (2 rows * 2 mm, 3 cols * 3 mm)
    assert longest_axial_diameter(mask, (5.0, 2.0, 3.0)) == pytest.approx(np.hypot(4.0, 9.0))


def test_largest_slice_wins_and_z_is_ignored():
    mask = np.zeros((3, 10, 10), bool)
    mask[0, 0, 0:3] = True                   # 2 mm
    mask[2, 0:8, 0] = True                   # 7 mm, a collinear line
    assert longest_axial_diameter(mask, (100.0, 1.0, 1.0)) == pytest.approx(7.0)


def test_empty_and_single_voxel():
    assert longest_axial_diameter(np.zeros((2, 4, 4), bool), (1, 1, 1)) == 0.0
    one = np.zeros((2, 4, 4), bool)
    one[1, 2, 2] = True
    assert longest_axial_diameter(one, (1, 1, 1)) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((4, 20, 20)) > 0.7
    spacing = (2.0, 0.7, 1.3)
    expected = max(pdist(np.argwhere(mask[k]) * [0.7, 1.3]).max() for k in range(4) if mask[k].sum() > 1)
    assert longest_axial_diameter(mask, spacing) == pytest.approx(expected)
