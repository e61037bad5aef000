"""Grad-CAM of a 3D classifier against pytorch-grad-cam, at full input size.

The same ``simple3d`` network (width 16, eval mode, CPU, 2 threads), the same 64 x 128 x 128
input, layer ``features.block3.conv``, target the logit of class 1: medtool's
:func:`medtool.gradcam.compute_cam` (trilinear upsampling on torch) against pytorch-grad-cam's
``GradCAM`` (which resizes 3D maps with a cubic scipy zoom). The layer-resolution maps are
compared (max difference after min-max) so a speed-up cannot come from doing less. No speed
target in the issue; the row shows what the whole map costs against the peer.
"""

from __future__ import annotations

import numpy as np

SHAPE = (64, 128, 128)


def run(repeat: int, timeit) -> list[dict]:
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from medtool import models
    from medtool.gradcam import classifier_target, compute_cam
    from medtool.models.cnn import LEVELS, plan_pooling

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = models.build("simple3d", {"dim": 3, "in_channels": 1, "num_classes": 2, "width": 16,
                                      "strides": plan_pooling(SHAPE, LEVELS["simple3d"])}).eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, *SHAPE)).astype(np.float32))
    layer = model.cam_layer

    def ours():
        return compute_cam(model, x, layer, classifier_target([1]))

    def peer():
        with GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])

    def minmax(a):
        a = a - a.min()
        return a / a.max()

    feature = ours().feature.numpy()[0]
    with GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])
        store = cam.activations_and_grads
        theirs = np.maximum(cam.get_cam_image(x, None, None, store.activations[0].numpy(),
                                              store.gradients[0].numpy())[0], 0)
    difference = float(np.abs(minmax(feature) - minmax(theirs)).max())
    medtool_s = timeit(ours, repeat=repeat)
    peer_s = timeit(peer, repeat=repeat)
    print(f"  layer maps equal to pytorch-grad-cam's within {difference:.2g} (after min-max)")
    return [{"case": f"gradcam simple3d {'x'.join(map(str, SHAPE))}", "peer": "pytorch-grad-cam GradCAM",
             "medtool_s": medtool_s, "peer_s": peer_s, "max_map_difference": difference}]
