"""Region sets: BraTS's nested regions, custom specs, and the masks they make."""

import numpy as np
import pytest

from medtool.errors import UsageError
from medtool.metrics.regions import REGION_SETS, describe, parse_regions, region_mask


def test_named_sets_and_specs():
    assert parse_regions("brats") == {"wt": (1, 2, 3, 4), "tc": (1, 3, 4), "et": (4,)}
    assert parse_regions("BraTS2023") == {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
    assert parse_regions("wt=1+2+4, tc=1+4,et=4") == {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
    assert describe(REGION_SETS["brats"]).startswith("wt (whole tumour) = 1+2+3+4, tc (tumour core)")
    for bad in ("brat", "wt=", "wt=a+b", "wt=0+1", "wt=1,wt=2", "=1"):
        with pytest.raises(UsageError):
            parse_regions(bad)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, bool])
def test_region_mask_equals_isin(dtype):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2 if dtype is bool else 6, size=(4, 5, 6)).astype(dtype)
    for members in [(1,), (1, 3, 4), (2, 5)]:
        assert np.array_equal(region_mask(labels, members), np.isin(labels.astype(int), members))


def test_regions_are_nested_on_brats_labels():
    labels = np.arange(5, dtype=np.uint8)              # background, necrosis, edema, non-enhancing, enhancing
    masks = {name: region_mask(labels, members) for name, members in REGION_SETS["brats"].items()}
    assert masks["wt"].tolist() == [False, True, True, True, True]
    assert masks["tc"].tolist() == [False, True, False, True, True]
    assert masks["et"].tolist() == [False, False, False, False, True]
    assert not (masks["et"] & ~masks["tc"]).any() and not (masks["tc"] & ~masks["wt"]).any()
