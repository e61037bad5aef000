"""Classification networks: output shapes in 2D and 3D, pooling plans, the Grad-CAM layer."""

import pytest
import torch

from medtool import models
from medtool.models.cnn import LEVELS, plan_pooling


@pytest.mark.parametrize("name", sorted(LEVELS))
@pytest.mark.parametrize("dim,shape", [(3, (12, 32, 32)), (2, (40, 40))])
def test_classifiers_build_by_name_in_2d_and_3d(name, dim, shape):
    config = {"dim": dim, "in_channels": 1, "num_classes": 3, "width": 4, "dropout": 0.1,
              "strides": plan_pooling(shape, LEVELS[name])}
    model = models.build(name, config).eval()
    assert name in models.names()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *shape)).shape == (2, 3)
    # the Grad-CAM layer is a convolution whose output still has a spatial extent
    layer = dict(model.named_modules())[model.cam_layer]
    assert isinstance(layer, torch.nn.Conv3d if dim == 3 else torch.nn.Conv2d)
    seen = {}
    layer.register_forward_hook(lambda module, args, output: seen.update(shape=output.shape))
    with torch.no_grad():
        model(torch.randn(1, 1, *shape))
    assert all(n > 1 for n in seen["shape"][2:])


def test_pooling_keeps_thin_axes():
    # 12 slices are halved once (to 6), then kept; 32 in-plane is halved three times
    assert plan_pooling((12, 32, 32), 3) == [[2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert plan_pooling((64, 64), 5) == [[2, 2], [2, 2], [2, 2], [2, 2], [1, 1]]


def test_resnet_depths_differ_in_blocks():
    config = {"dim": 3, "in_channels": 1, "num_classes": 2, "width": 4}
    ten, eighteen = models.build("resnet3d-10", config), models.build("resnet3d-18", config)
    assert len(ten.features.layer1) == 1 and len(eighteen.features.layer1) == 2
    assert sum(p.numel() for p in eighteen.parameters()) > sum(p.numel() for p in ten.parameters())
