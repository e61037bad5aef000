"""Region sets: BraTS's nested regions, custom specs, and the masks they make."""

import numpy as np
import pytest

from medtool.errors import UsageError
from medtool.metrics.regions import (REGION_SETS, describe, labels_from_regions, paint_order, parse_regions,
                                     region_mask, region_masks)


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


def test_paint_order_is_nnunets_regions_class_order():
    assert paint_order(parse_regions("brats")) == [("wt", 2), ("tc", 1), ("et", 4)]
    assert paint_order(parse_regions("brats2023")) == [("wt", 2), ("tc", 1), ("et", 3)]
    # the order given does not matter: the region of most labels paints first
    assert paint_order({"et": (4,), "wt": (1, 2, 4), "tc": (1, 4)}) == [("wt", 2), ("tc", 1), ("et", 4)]


@pytest.mark.parametrize("name, values", [("brats", (0, 1, 2, 4)), ("brats2023", (0, 1, 2, 3))])
def test_labels_become_regions_and_back_exactly(name, values):
    """BraTS 2017-2021 labels (1, 2, 4) and 2023 labels (1, 2, 3) survive the round trip."""
    regions = parse_regions(name)
    labels = np.random.default_rng(3).choice(np.array(values, np.uint8), size=(6, 7, 8))
    masks = region_masks(labels, regions)
    assert masks.shape == (3, 6, 7, 8)
    expected = [np.isin(labels, members) for members in regions.values()]
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected))
    assert np.array_equal(labels_from_regions(masks, regions), labels)


def test_2015_labels_3_and_1_come_back_as_the_core():
    """BRATS 2015's non-enhancing 3 and necrosis 1 are both only in tc: one label (1) again."""
    labels = np.array([0, 1, 2, 3, 4], np.uint8)
    back = labels_from_regions(region_masks(labels, parse_regions("brats")), parse_regions("brats"))
    assert back.tolist() == [0, 1, 2, 1, 4]
