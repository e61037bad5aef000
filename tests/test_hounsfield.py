"""Stored values to HU: per-slice rescale, padding, clipping, windows; hand-computed cases."""

import numpy as np
import pytest

from medtool.errors import InputError, UsageError
from medtool.hounsfield import HU_AIR, WINDOW_PRESETS, to_hu, window
from medtool.volume import Volume


def raw(array, **meta):
    return Volume(np.asarray(array), spacing=(2.0, 1.0, 1.0),
                  meta={"units": "raw", "modality": "CT", **meta})


def test_per_slice_intercepts_are_applied_slice_by_slice():
    stored = np.array([[[1024, 0]], [[2047, 1047]]], np.int16)       # two slices, 1x2 each
    volume = raw(stored, rescale={"slope": 1.0, "intercept": [-1024.0, -2047.0]})
    hu = to_hu(volume)
    assert hu.array.dtype == np.int16 and hu.units == "HU"
    np.testing.assert_array_equal(hu.array, [[[0, -1024]], [[0, -1000]]])
    assert "rescale" not in hu.meta and hu.meta["hu_from"]["rescale"]["intercept"] == [-1024.0, -2047.0]


def test_padding_value_and_range_become_air_in_stored_space():
    stored = np.array([[[-2000, 0, 5, 1064]]], np.int16)
    hu = to_hu(raw(stored, rescale={"slope": 1.0, "intercept": -1024.0},
                   padding={"value": 0, "range_limit": 5}))
    np.testing.assert_array_equal(hu.array, [[[HU_AIR, HU_AIR, HU_AIR, 40]]])


def test_out_of_field_and_clipping():
    stored = np.array([[[-3024, -2000, -1100, 40000]]], np.float32)   # already HU-valued floats
    hu = to_hu(raw(stored, rescale={"slope": 1.0, "intercept": 0.0}))
    np.testing.assert_array_equal(hu.array, [[[HU_AIR, HU_AIR, -1024, 32767]]])


def test_fractional_slope_rounds_to_whole_hu():
    hu = to_hu(raw(np.array([[[3, 2001]]], np.uint16), rescale={"slope": 0.5, "intercept": -1000.0}))
    np.testing.assert_array_equal(hu.array, [[[-998, 0]]])


def test_already_hu_is_not_converted_twice():
    volume = Volume(np.array([[[-1000, 40]]], np.int16), meta={"units": "HU", "modality": "CT"})
    assert to_hu(volume) is volume


def test_values_that_cannot_be_hu_are_refused():
    with pytest.raises(InputError, match="all values are >= 0"):
        to_hu(Volume(np.array([[[0, 1200]]], np.uint16)))
    assert to_hu(Volume(np.array([[[0, 1200]]], np.uint16)), rescale=(1.0, -1024.0)).array.min() == -1024


def test_negative_values_without_rescale_are_taken_as_hu():
    hu = to_hu(Volume(np.array([[[-1000.4, 39.6]]], np.float32)))
    np.testing.assert_array_equal(hu.array, [[[-1000, 40]]])


def test_not_ct_is_refused():
    with pytest.raises(InputError, match="modality is MR"):
        to_hu(Volume(np.zeros((1, 2, 2), np.int16), meta={"modality": "MR"}))


def test_window_and_normalize():
    volume = Volume(np.array([[[-1200, -1000, -300, 400, 900]]], np.int16), meta={"units": "HU"})
    clipped = window(volume, *WINDOW_PRESETS["mediastinum"])
    np.testing.assert_array_equal(clipped.array, [[[-160, -160, -160, 240, 240]]])
    normalized = window(volume, -1000, 400, normalize=True)
    assert normalized.array.dtype == np.float32 and normalized.units == "normalized"
    np.testing.assert_allclose(normalized.array, [[[0, 0, 0.5, 1, 1]]])
    with pytest.raises(UsageError):
        window(volume, 10, 10)
