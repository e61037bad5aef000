"""U-Net shapes, options and the model registry."""

import pytest
import torch

from medtool import models
from medtool.errors import UsageError
from medtool.models.unet import UNet, plan_strides


def test_plan_strides_keeps_short_axes():
    # a thin 3D patch is not halved along z below 4 voxels
    assert plan_strides([8, 64, 64], 4) == [[2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert plan_strides([4, 64, 64], 3) == [[1, 2, 2], [1, 2, 2]]
    assert plan_strides([32, 32], 3) == [[2, 2], [2, 2]]


@pytest.mark.parametrize("dim,upsample,norm,residual", [
    (2, "transpose", "instance", False), (2, "interpolate", "batch", True),
    (3, "transpose", "batch", True), (3, "interpolate", "instance", False)])
def test_unet_output_matches_input(dim, upsample, norm, residual):
    shape = (16, 16) if dim == 2 else (8, 16, 16)
    model = UNet(dim=dim, in_channels=2, out_channels=3, width=4, depth=3, norm=norm,
                 residual=residual, upsample=upsample, dropout=0.1,
                 strides=plan_strides(shape, 3))
    out = model(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3, *shape)
    assert model.divisor == ((4, 4) if dim == 2 else (2, 4, 4))


@pytest.mark.parametrize("dim", [2, 3])
def test_channels_last_computes_the_same_function(dim):
    shape = (16, 16) if dim == 2 else (8, 16, 16)
    config = dict(dim=dim, in_channels=1, out_channels=2, width=4, depth=3, strides=plan_strides(shape, 3))
    torch.manual_seed(0)
    plain = UNet(**config).eval()
    last = UNet(**config, channels_last=True).eval()
    last.load_state_dict(plain.state_dict())          # checkpoints load across layouts
    layout = torch.channels_last_3d if dim == 3 else torch.channels_last
    assert last.encoder[1].conv1.weight.is_contiguous(memory_format=layout)
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        assert torch.allclose(plain(x), last(x), atol=1e-5)
    last.train()
    last(x).sum().backward()                           # and it trains
    assert all(p.grad is not None for p in last.parameters() if p.requires_grad)


@pytest.mark.parametrize("dim", [2, 3])
def test_instance_norm_is_torchs_and_loads_its_weights(dim):
    """The instance norm (a group norm of one channel per group) computes InstanceNorm's function,
    gradients included, and takes the weights of checkpoints written with InstanceNorm."""
    from torch import nn

    from medtool.models.unet import _norm

    torch.manual_seed(0)
    reference = (nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d)(6, affine=True)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2)
        reference.bias.uniform_(-1, 1)
    norm = _norm(dim, "instance", 6)
    norm.load_state_dict(reference.state_dict())
    x = (torch.randn(3, 6, *[5] * dim) * 4 + 2).requires_grad_()
    ours, theirs = norm(x), reference(x)
    assert torch.allclose(ours, theirs, atol=1e-5)
    grad = torch.randn_like(ours)
    (ours_grad,), (their_grad,) = torch.autograd.grad(ours, x, grad), torch.autograd.grad(theirs, x, grad)
    assert torch.allclose(ours_grad, their_grad, atol=1e-4)


def test_deep_supervision_only_while_training():
    model = UNet(dim=3, in_channels=1, out_channels=2, width=4, depth=4, deep_supervision=True)
    x = torch.randn(1, 1, 16, 16, 16)
    outputs = model(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 16, 16), (8, 8, 8), (4, 4, 4)]
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 2, 16, 16, 16)
        # the evaluation output is the first (full-resolution) training head
        model.train()
        torch.manual_seed(0)
        first = model(x)[0]
    assert first.shape == (1, 2, 16, 16, 16)


def test_registry_builds_by_name_and_rejects_unknown():
    model = models.build("unet", {"dim": 2, "in_channels": 1, "out_channels": 1, "width": 4, "depth": 2})
    assert isinstance(model, UNet)
    assert "unet" in models.names()
    with pytest.raises(UsageError, match="unknown model"):
        models.build("nope", {})


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="norm"):
        UNet(dim=2, in_channels=1, out_channels=1, norm="group")
    with pytest.raises(ValueError, match="strides"):
        UNet(dim=3, in_channels=1, out_channels=1, depth=3, strides=[[2, 2, 2]])
