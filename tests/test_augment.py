"""Augmentation: image and mask move together, presets and options, points follow the affine."""

import numpy as np
import pytest
import torch

from medtool.augment import AugmentConfig, Augmenter, make_config, map_points
from medtool.errors import UsageError


def _blob_batch(dim: int, batch: int = 3):
    shape = (10, 20, 20) if dim == 3 else (24, 24)
    mask = torch.zeros(batch, *shape, dtype=torch.long)
    for b in range(batch):
        index = (b,) + tuple(slice(n // 4 + b, n // 2 + b + 2) for n in shape)
        mask[index] = 1 + b % 2
    image = mask[:, None].float() * 10
    return image, mask


def test_none_is_identity():
    image, mask = _blob_batch(3)
    out, out_mask = Augmenter(make_config("none"))(image, mask)
    assert torch.equal(out, image) and torch.equal(out_mask, mask)


@pytest.mark.parametrize("dim", [2, 3])
def test_flips_are_exact_and_shared(dim):
    image, mask = _blob_batch(dim)
    augmenter = Augmenter(AugmentConfig(flip=1.0))
    out, out_mask = augmenter(image, mask)
    axes = tuple(range(1, dim + 1))
    assert torch.equal(out_mask, mask.flip(axes))
    assert torch.allclose(out, image.flip(tuple(a + 1 for a in axes)), atol=1e-4)


def test_rotation_by_90_degrees_is_rot90():
    image, mask = _blob_batch(2, batch=1)
    augmenter = Augmenter(AugmentConfig(rotate=90.0, p_rotate=1.0))
    augmenter.sample_affine = lambda batch, dim: torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64)
    out, out_mask = augmenter(image, mask)
    # output offset v -> input offset A v: out[i, j] = in[-j, i] about the centre
    expected = torch.rot90(mask, 1, dims=(1, 2))
    assert torch.equal(out_mask, expected) or torch.equal(out_mask, torch.rot90(mask, -1, dims=(1, 2)))
    assert torch.allclose(out[:, 0], out_mask.float() * 10, atol=1e-4)


@pytest.mark.parametrize("dim", [2, 3])
def test_heavy_moves_image_and_mask_together(dim):
    image, mask = _blob_batch(dim, batch=4)
    config = make_config("heavy", {"p_rotate": 1.0, "p_scale": 1.0, "p_elastic": 1.0, "p_intensity": 0.0,
                                   "p_gamma": 0.0, "p_noise": 0.0, "p_blur": 0.0})
    out, out_mask = Augmenter(config, seed=3)(image, (mask > 0).long())
    assert not torch.equal(out_mask, (mask > 0).long())                 # it did something
    assert set(out_mask.unique().tolist()) <= {0, 1}                    # nearest: no new labels
    agree = ((out[:, 0] > 5) == (out_mask > 0)).float().mean()
    assert agree > 0.97                                                 # same transform
    assert out_mask.sum() > 0


def test_intensity_transforms_touch_the_image_only():
    image, mask = _blob_batch(3)
    config = AugmentConfig(noise=0.5, p_noise=1.0, gamma=(0.5, 0.5), p_gamma=1.0, p_blur=1.0,
                           intensity_scale=(2.0, 2.0), p_intensity=1.0)
    out, out_mask = Augmenter(config)(image, mask)
    assert torch.equal(out_mask, mask)
    assert not torch.allclose(out, image)


def test_blur_keeps_a_constant_image():
    image = torch.full((2, 1, 6, 8, 8), 3.0)
    out, _ = Augmenter(AugmentConfig(p_blur=1.0, blur=(1.0, 2.0)))(image)
    assert torch.allclose(out, image, atol=1e-5)


def test_points_follow_the_affine():
    shape = (32, 32)
    mask = torch.zeros(1, *shape, dtype=torch.long)
    mask[0, 8:11, 20:23] = 1          # centre (9, 21)
    augmenter = Augmenter(AugmentConfig(rotate=40, p_rotate=1.0, scale=(1.2, 1.2), p_scale=1.0, flip=0.5), seed=5)
    matrix = augmenter.sample_affine(1, 2)
    augmenter.sample_affine = lambda batch, dim: matrix
    _, out = augmenter(mask[:, None].float(), mask)
    where = torch.nonzero(out[0]).double().mean(0)
    predicted = map_points(torch.tensor([[9.0, 21.0]]), matrix[0], shape)[0]
    assert torch.allclose(where, predicted, atol=0.75)


def test_options_override_presets():
    config = make_config("light", ["rotate=30", "scale=0.8,1.3", "p-elastic=0.5"])
    assert config.rotate == 30 and config.scale == (0.8, 1.3) and config.p_elastic == 0.5
    with pytest.raises(UsageError, match="KEY=VALUE"):
        make_config("light", ["wobble=1"])
    with pytest.raises(UsageError, match="two numbers"):
        make_config("light", ["scale=2"])
    with pytest.raises(UsageError, match="choose one of"):
        make_config("extreme")


def test_same_seed_same_result():
    image, mask = _blob_batch(3)
    first = Augmenter(make_config("heavy"), seed=1)(image, mask)
    torch.manual_seed(0)
    second = Augmenter(make_config("heavy"), seed=1)(image, mask)
    assert torch.equal(first[1], second[1])
    assert np.isfinite(first[0].numpy()).all()
