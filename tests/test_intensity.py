"""How training normalises its inputs, and how ``auto`` decides (hand-made volumes)."""

import numpy as np
import pytest

from medtool.errors import InputError, UsageError
from medtool.hounsfield import HU_LIKE_LOWEST, guess_units
from medtool.intensity import CT_WINDOW, Normalization, normalize, plan_normalization
from medtool.volume import Volume


def volume(array, **meta):
    return Volume(np.asarray(array, dtype=np.float32).reshape(1, 1, -1), meta=meta)


HU = volume([-1024, -850, 40, 1200])            # a CT NIfTI of another tool: no units


def test_the_ct_window_and_the_z_score_by_hand():
    np.testing.assert_allclose(normalize(np.array([-2000.0, -1000.0, -300.0, 400.0, 900.0]),
                                         {"mode": "ct", "window": [-1000.0, 400.0]}),
                               [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(normalize(np.array([1.0, 3.0]), {"mode": "zscore"}), [-1.0, 1.0])
    np.testing.assert_allclose(normalize(np.array([5.0, 5.0]), {"mode": "zscore"}), [0.0, 0.0])


def test_a_foreign_file_whose_values_reach_air_is_hu():
    units, why = guess_units(HU)
    assert units == "HU" and "-1024" in why and "look like HU" in why
    assert guess_units(volume([HU_LIKE_LOWEST, 0]))[0] == "HU"
    assert guess_units(volume([HU_LIKE_LOWEST + 1, 0]))[0] is None       # z-scored, say
    assert guess_units(volume([0, 4095]))[0] is None                      # stored values or MRI
    assert guess_units(volume([0, 1], units="label")) == ("label", "units label in its metadata")


@pytest.mark.parametrize("image, mode, why", [
    (HU, "ct", "CT in HU: no units in the file"),
    (volume([0, 100], units="HU"), "ct", "CT in HU: units HU in its metadata"),
    (volume([0, 0.5], units="normalized"), "none", "normalised already"),
    (volume([0, 900], units="raw", modality="MR"), "zscore", "modality MR"),
])
def test_auto_follows_what_the_images_are(image, mode, why):
    planned = plan_normalization("auto", CT_WINDOW, [("a.nii.gz", image), ("b.nii.gz", image)])
    assert planned.spec["mode"] == mode and planned.why.startswith(why)
    assert planned.spec.get("window") == ([-1000.0, 400.0] if mode == "ct" else None)


@pytest.mark.parametrize("image, says", [
    (volume([0, 4095]), "all >= 0"),
    (volume([-3.1, 2.5]), "never as low as air"),
    (volume([0, 4095], units="raw", modality="CT"), "medtool hu"),
    (volume([0, 4095], units="raw"), "no modality"),
])
def test_auto_refuses_what_it_cannot_tell_and_names_the_option(image, says):
    with pytest.raises(InputError) as caught:
        plan_normalization("auto", CT_WINDOW, [("x.nii.gz", image)])
    assert says in str(caught.value) and "x.nii.gz" in str(caught.value)
    assert "--normalize zscore" in caught.value.hint and "--normalize ct" in caught.value.hint


def test_images_that_disagree_are_refused_naming_both():
    mri = volume([0, 900], units="raw", modality="MR")
    with pytest.raises(InputError, match="a.nii.gz is ct .* this one zscore") as caught:
        plan_normalization("auto", CT_WINDOW, [("a.nii.gz", HU), ("b.nii.gz", mri)])
    assert "b.nii.gz" in str(caught.value)


def test_a_given_mode_is_kept_and_x_rays_z_score():
    assert plan_normalization("zscore", CT_WINDOW, [("a", HU)]) == Normalization({"mode": "zscore"}, "given")
    assert plan_normalization("ct", (-160, 240), []).spec == {"mode": "ct", "window": [-160.0, 240.0]}
    xray = volume([0, 4095], units="raw")
    planned = plan_normalization("auto", CT_WINDOW, [("cxr.dcm", xray)], projection=True)
    assert planned.spec == {"mode": "zscore"} and "projection" in planned.why
    assert planned.describe() == "zscore (a projection image, not HU)"
    with pytest.raises(UsageError, match="--normalize minmax"):
        plan_normalization("minmax", CT_WINDOW, [("a", HU)])


def test_the_foreground_box_of_a_masked_image_by_hand():
    from medtool.intensity import constant_background, foreground_box

    masked = np.full((4, 6, 8), -1000, np.int16)
    masked[0:4, 2:4, 3:7] = -850          # lungs reach the first and last slices: corners decide
    masked[2, 3, 5] = 40
    assert constant_background(masked) == -1000.0
    assert foreground_box(masked) == (slice(0, 4), slice(2, 4), slice(3, 7))
    noisy = np.random.default_rng(0).normal(-1000, 20, (4, 6, 8))          # air around a CT
    assert constant_background(noisy) is None
    assert foreground_box(noisy) == (slice(0, 4), slice(0, 6), slice(0, 8))
    assert foreground_box(np.zeros((3, 3))) == (slice(0, 3), slice(0, 3))   # nothing but the outside
