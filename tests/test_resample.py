"""Resampling geometry and values, checked by hand and against SimpleITK and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medtool.errors import InputError, UsageError
from medtool.resample import Grid, is_mask, resample, resample_to, target_grid, z_slab
from medtool.volume import AXIAL_DIRECTION, Volume

from .conftest import rotation

sitk = pytest.importorskip("SimpleITK")


def _to_sitk(volume: Volume):
    image = sitk.GetImageFromArray(np.asarray(volume.array))
    image.SetSpacing(tuple(volume.spacing[::-1]))
    image.SetOrigin(tuple(volume.origin))
    image.SetDirection(tuple(np.asarray(volume.direction)[:, ::-1].ravel()))
    return image


def _sitk_resample(volume: Volume, grid: Grid, interpolator, pad: float) -> np.ndarray:
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in grid.shape[::-1]])
    f.SetOutputSpacing(tuple(grid.spacing[::-1]))
    f.SetOutputOrigin(tuple(grid.origin))
    f.SetOutputDirection(tuple(np.asarray(grid.direction)[:, ::-1].ravel()))
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(pad)
    return sitk.GetArrayFromImage(f.Execute(_to_sitk(volume)))


@pytest.fixture
def image() -> Volume:
    rng = np.random.default_rng(1)
    return Volume(rng.normal(size=(7, 9, 11)).astype(np.float32), spacing=(2.5, 0.7, 0.9),
                  origin=(-10.0, 5.0, 3.0), meta={"units": "normalized"})


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.3, 0.5, 1.7)])
@pytest.mark.parametrize("order, interpolator", [(0, "sitkNearestNeighbor"), (1, "sitkLinear"),
                                                 (3, "sitkBSpline")])
def test_same_direction_matches_simpleitk(image, spacing, order, interpolator):
    out = resample(image, spacing=spacing, order=order, antialias=False, pad=-5.0)
    reference = _sitk_resample(image, Grid.of(out), getattr(sitk, interpolator), -5.0)
    assert out.shape == reference.shape
    assert np.abs(out.array - reference).max() < 2e-6


@pytest.mark.parametrize("order, interpolator", [(0, "sitkNearestNeighbor"), (1, "sitkLinear"),
                                                 (3, "sitkBSpline")])
def test_oblique_target_matches_simpleitk(image, order, interpolator):
    direction = rotation("x", 17.0) @ rotation("z", -31.0) @ AXIAL_DIRECTION
    grid = Grid((8, 10, 12), (1.1, 0.8, 0.6), (-9.0, 4.0, 2.0), direction)
    out = resample_to(image, grid, order=order, pad=-5.0, antialias=False)
    reference = _sitk_resample(image, grid, getattr(sitk, interpolator), -5.0)
    inside = reference != -5.0
    assert 0.2 < inside.mean() < 0.9          # partly outside: the pad region is checked too
    assert np.array_equal(out.array == -5.0, ~inside)
    assert np.abs(out.array - reference).max() < 2e-6


def test_oblique_input_onto_axial_grid_matches_simpleitk(oblique_volume):
    grid = Grid((6, 8, 8), (2.0, 1.0, 1.0), tuple(np.asarray(oblique_volume.origin) - 2), AXIAL_DIRECTION)
    source = oblique_volume.with_array(oblique_volume.array.astype(np.float32))
    out = resample_to(source, grid, order=1, pad=0.0, antialias=False)
    reference = _sitk_resample(source, grid, sitk.sitkLinear, 0.0)
    assert np.abs(out.array - reference).max() < 1e-3


@pytest.mark.parametrize("oblique", [False, True])
def test_z_slabs_resample_to_the_same_slices(image, oblique):
    direction = rotation("x", 17.0) @ AXIAL_DIRECTION if oblique else AXIAL_DIRECTION
    grid = Grid((9, 10, 12), (1.1, 0.8, 0.6), (-9.0, 4.0, 2.0), direction)
    whole = resample_to(image, grid, order=1, pad=-5.0).array
    pieces = [resample_to(image, z_slab(grid, z0, min(9, z0 + 4)), order=1, pad=-5.0).array
              for z0 in range(0, 9, 4)]
    assert [p.shape[0] for p in pieces] == [4, 4, 1]
    assert np.array_equal(np.concatenate(pieces), whole)
    with pytest.raises(UsageError):
        z_slab(grid, 5, 10)


def test_new_shape_keeps_extent_and_centre():
    volume = Volume(np.zeros((5, 7, 9), np.int16), spacing=(3.0, 0.7, 0.9), origin=(1.0, 2.0, 3.0),
                    meta={"units": "HU"})
    grid = target_grid(volume, spacing=(1.0, 1.0, 1.0))
    assert grid.shape == (15, 5, 8)           # round(15), round(4.9), round(8.1)
    centre_in = volume.world([(5 - 1) / 2, (7 - 1) / 2, (9 - 1) / 2])
    out = Volume(np.zeros(grid.shape), grid.spacing, grid.origin, grid.direction)
    centre_out = out.world([(15 - 1) / 2, (5 - 1) / 2, (8 - 1) / 2])
    assert np.allclose(centre_in, centre_out)


def test_round_trip_like_lands_on_the_original_grid():
    rng = np.random.default_rng(2)
    labels = Volume(rng.integers(0, 3, size=(5, 7, 9)).astype(np.uint8), spacing=(2.0, 1.0, 1.5),
                    origin=(4.0, -3.0, 7.0), meta={"units": "label"})
    fine = resample(labels, spacing=(1.0, 0.5, 0.75))
    assert fine.shape == (10, 14, 18) and fine.array.dtype == np.uint8
    back = resample(fine, like=labels)
    assert back.same_grid(labels, atol=1e-9)
    assert np.array_equal(back.array, labels.array)   # nearest: every label lands back


def test_round_trip_image_is_close(image):
    smooth = image.with_array(ndimage.gaussian_filter(image.array, 2.0))
    fine = resample(smooth, spacing=(1.25, 0.35, 0.45))
    back = resample(fine, like=smooth)
    assert back.same_grid(smooth, atol=1e-9)
    assert np.abs(back.array - smooth.array).max() < 0.05 * np.ptp(smooth.array)


def test_shape_sets_in_plane_size_and_spacing():
    volume = Volume(np.zeros((4, 10, 20), np.float32), spacing=(2.0, 0.5, 0.5))
    out = resample(volume, shape=(5, 8))
    assert out.shape == (4, 5, 8)
    assert np.allclose(out.spacing, (2.0, 1.0, 1.25))


def test_crop_z_keeps_centre_slices_exactly_and_pads():
    array = np.arange(9 * 3 * 3, dtype=np.int16).reshape(9, 3, 3)
    volume = Volume(array, spacing=(2.0, 1.0, 1.0), meta={"units": "HU"})
    cropped = resample(volume, crop_z=4)
    assert np.array_equal(cropped.array, array[2:6])
    assert np.allclose(cropped.origin, volume.world([2, 0, 0]))
    padded = resample(volume, crop_z=11)
    assert np.array_equal(padded.array[1:10], array)
    assert np.all(padded.array[[0, 10]] == -1000)        # HU images pad with air


def test_antialias_is_gaussian_then_sampling():
    rng = np.random.default_rng(3)
    volume = Volume(rng.normal(size=(6, 24, 24)).astype(np.float32), spacing=(1.0, 0.5, 0.5))
    out = resample(volume, spacing=(1.0, 1.5, 1.5))
    sigma = (1.5 / 0.5 - 1) / 2                        # scikit-image's rule: 1 voxel
    smoothed = volume.with_array(ndimage.gaussian_filter(volume.array, (0, sigma, sigma),
                                                         mode="nearest", truncate=4.0))
    expected = resample(smoothed, spacing=(1.0, 1.5, 1.5), antialias=False)
    assert np.abs(out.array - expected.array).max() < 1e-5
    assert out.array.std() < 0.6 * resample(volume, spacing=(1.0, 1.5, 1.5), antialias=False).array.std()


def test_integer_images_are_rounded_and_masks_detected():
    hu = Volume(np.array([[[0, 1]]], dtype=np.int16).repeat(2, 0), spacing=(1, 1, 2),
                meta={"units": "HU"})
    out = resample(hu, spacing=(1, 1, 1))
    assert out.array.dtype == np.int16 and not is_mask(hu)
    assert set(np.unique(out.array)) <= {0, 1}
    assert is_mask(Volume(np.zeros((2, 2, 2), np.uint8)))
    assert is_mask(Volume(np.zeros((2, 2, 2), bool)))
    with pytest.raises(UsageError):
        resample(Volume(np.zeros((2, 2, 2), np.uint8)), spacing=(1, 1, 1), order=1)


def test_2d_and_bad_options_are_errors():
    with pytest.raises(InputError):
        resample(Volume(np.zeros((4, 4))), spacing=(1, 1, 1))
    with pytest.raises(UsageError):
        resample(Volume(np.zeros((2, 2, 2))), spacing=(1, 0, 1))
