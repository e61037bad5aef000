"""Several input channels of a case: their files, their grid, and each channel's normalisation,
checked against hand computations."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medtool.channels import InputChannels, onto_reference, parse_channels
from medtool.errors import InputError, UsageError
from medtool.formats import load_channels, save_volume
from medtool.intensity import normalize, normalize_channels, plan_foreground
from medtool.volume import Volume


def _volume(array, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(np.asarray(array, dtype=np.float32), spacing, origin, np.eye(3)[:, ::-1].copy(), {})


def test_zscore_inside_the_nonzero_voxels_equals_a_hand_computation():
    array = np.zeros((1, 2, 4), np.float32)
    array[0, 0, :3] = [1.0, 2.0, 3.0]           # the "brain"; the rest is background 0
    out = normalize(array, {"mode": "zscore", "foreground": "nonzero"})
    mean, std = 2.0, np.sqrt(2.0 / 3.0)        # of 1, 2, 3 (population std, as nnU-Net)
    np.testing.assert_allclose(out[0, 0, :3], (np.array([1.0, 2.0, 3.0]) - mean) / std, rtol=1e-6)
    assert np.all(out[0, 0, 3:] == 0) and np.all(out[0, 1] == 0)
    # over every voxel instead: 8 values 1, 2, 3 and five zeros
    whole = normalize(array, {"mode": "zscore"})
    values = array.ravel()
    np.testing.assert_allclose(whole.ravel(), (values - values.mean()) / values.std(), rtol=1e-5)


def test_percentile_clipping_comes_before_the_zscore():
    array = np.arange(1, 101, dtype=np.float32).reshape(1, 10, 10)
    out = normalize(array, {"mode": "zscore", "foreground": "nonzero", "clip": [10, 90]})
    low, high = np.percentile(np.arange(1, 101), [10, 90])      # 10.9 and 90.1
    clipped = np.clip(np.arange(1, 101, dtype=np.float64), low, high)
    np.testing.assert_allclose(out.ravel(), (clipped - clipped.mean()) / clipped.std(), rtol=1e-5)


def test_each_channel_has_its_own_normalisation_and_one_shared_foreground():
    ct = np.array([[[-1000.0, 400.0, -300.0, 0.0]]], np.float32)
    mri = np.array([[[0.0, 10.0, 20.0, 0.0]]], np.float32)
    out = normalize_channels([ct, mri], [{"mode": "ct", "window": [-1000.0, 400.0]},
                                         {"mode": "zscore", "foreground": "nonzero"}])
    assert out.shape == (2, 1, 1, 4)
    np.testing.assert_allclose(out[0].ravel(), [0.0, 1.0, 0.5, 1000 / 1400], rtol=1e-6)
    # the foreground is nonzero in any channel: voxels 0, 1, 2 (the CT is -1000 at voxel 0)
    inside = np.array([0.0, 10.0, 20.0])
    np.testing.assert_allclose(out[1].ravel()[:3], (inside - inside.mean()) / inside.std(), rtol=1e-6)
    assert out[1].ravel()[3] == 0
    with pytest.raises(ValueError, match="2 channels but 1"):
        normalize_channels([ct, mri], [{"mode": "none"}])


def test_the_foreground_rule_follows_the_box_of_the_nonzero_voxels():
    stripped = np.zeros((10, 10, 10))
    stripped[2:8, 2:8, 2:8] = 5.0                 # a box of 6^3 / 10^3 = 22 % of the image
    inside, why = plan_foreground([[stripped]])
    assert inside and "22%" in why
    noisy = stripped + 0.1                        # no voxel is exactly 0: the whole image counts
    inside, why = plan_foreground([[noisy]])
    assert not inside and "100%" in why
    # a second channel that is nonzero where the first is 0 widens the foreground
    other = np.zeros_like(stripped)
    other[0, 0, 0], other[9, 9, 9] = 1.0, 1.0
    assert not plan_foreground([[stripped, other]])[0]


def test_channel_files_are_siblings_and_a_missing_one_is_named(tmp_path):
    channels = InputChannels(("flair", "t1ce"), ("_flair", "_t1ce"))
    image = _volume(np.ones((2, 3, 3)))
    save_volume(image, tmp_path / "c1_flair.nii.gz")
    save_volume(image, tmp_path / "c1_t1ce.nii.gz")
    assert [p.name for p in channels.files(tmp_path / "c1_flair.nii.gz")] == ["c1_flair.nii.gz", "c1_t1ce.nii.gz"]
    save_volume(image, tmp_path / "c2_flair.nii.gz")
    with pytest.raises(InputError, match="channel t1ce is missing: no c2_t1ce.nii.gz beside it"):
        channels.files(tmp_path / "c2_flair.nii.gz")
    assert InputChannels.from_recipe({"channels": channels.as_dict()}) == channels
    assert InputChannels.from_recipe({}) is None
    with pytest.raises(UsageError, match="names flair twice"):
        parse_channels("flair,t1,flair")


def test_channels_are_brought_onto_the_first_ones_grid():
    first = _volume(np.arange(4 * 6 * 6).reshape(4, 6, 6))
    fine = first.with_array(np.asarray(first.array))            # same grid: kept as it is
    # the same region at half the in-plane spacing (12 x 12): resampled onto 6 x 6
    coarse = _volume(np.ones((4, 12, 12)) * 7.0, spacing=(2.0, 0.5, 0.5), origin=(-0.25, -0.25, 0.0))
    out = onto_reference([first, fine, coarse], ["a", "b", "c"])
    assert out[1] is fine and out[2].same_grid(first)
    np.testing.assert_allclose(out[2].array, 7.0)
    far = _volume(np.ones((4, 6, 6)), origin=(500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="does not overlap the first channel a in space"):
        onto_reference([first, far], ["a", "far.nii.gz"])


def test_a_4d_nifti_is_read_as_its_channels(tmp_path):
    data = np.stack([np.full((3, 4, 5), float(c)) for c in range(3)], axis=-1).astype(np.float32)  # x y z c
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "case.nii.gz")
    volumes = load_channels(tmp_path / "case.nii.gz")
    assert len(volumes) == 3 and volumes[0].shape == (5, 4, 3)        # (z, y, x)
    assert [float(v.array.mean()) for v in volumes] == [0.0, 1.0, 2.0]
    assert volumes[2].same_grid(volumes[0]) and volumes[0].spacing == pytest.approx((3.0, 2.0, 1.0))
    picked = InputChannels(("T2", "FLAIR"), four_d=True, indices=(2, 0)).read([tmp_path / "case.nii.gz"])
    assert [float(v.array.mean()) for v in picked] == [2.0, 0.0]
    with pytest.raises(InputError, match="holds 3 channels, the model takes 2"):
        InputChannels(("a", "b"), four_d=True).read([tmp_path / "case.nii.gz"])
