"""Sliding-window inference against MONAI, plus training throughput.

The same 3D U-Net (width 16, depth 4, 4 classes, eval mode, CPU), the same 96 x 192 x 192 volume,
window 48 x 96 x 96, overlap 0.5, Gaussian blending (sigma 1/8 of the window), 4 windows per
batch: medtool's :func:`medtool.inference.sliding_window` against MONAI's
``sliding_window_inference``, in one run. The two results are compared (max abs difference of
the logits, share of equal arg-max labels) so a speed-up cannot come from doing less. Target:
ratio (MONAI s / medtool s) >= 1.0. On a CPU with native bfloat16 the row also times medtool
under ``--amp bf16`` (``medtool_bf16_s``) and how far its labels are from float32's.

Training throughput: ``fit`` on a synthetic 3D data set (4 cases 64 x 128 x 128, patch 32 x 64 x
64, batch 2, light augmentation) for 2 epochs of 10 steps; samples/s and the fraction of the
epoch spent waiting for the data loader are reported in the row (no peer).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (96, 192, 192)
WINDOW = (48, 96, 96)
OVERLAP = 0.5
BATCH = 4
CLASSES = 4


def _model():
    import torch

    from medtool.models.unet import UNet, plan_strides

    torch.manual_seed(0)
    return UNet(dim=3, in_channels=1, out_channels=CLASSES, width=16, depth=4,
                strides=plan_strides(WINDOW, 4)).eval()


def _training_throughput() -> dict:
    import torch

    from medtool.segmentation import SegmentOptions
    from medtool.train import TrainConfig, fit, make_task

    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.segdata import write_ball_dataset

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        images, masks = write_ball_dataset(root, cases=4, shape=(64, 128, 128), spacing=(1.0, 1.0, 1.0))
        options = SegmentOptions(images=str(images), masks=str(masks), dim=3, patch=[32, 64, 64], width=16,
                                 depth=4, augment="light", val_fraction=0.0)
        summary = fit(make_task("segment", options), TrainConfig(epochs=2, steps_per_epoch=10, batch_size=2),
                      root / "run", device=torch.device("cpu"), progress=False)
    return {"train_samples_per_s": round(summary["samples_per_s"], 2),
            "train_data_wait": round(summary["data_wait"], 4)}


def _bf16_row(fast, exact, timeit, repeat: int) -> dict:
    """``fast()`` (the sliding windows under ``--amp bf16``) on this CPU, if it has native
    bfloat16: its time and how far its logits and labels are from float32's ``exact`` (empty
    otherwise)."""
    from medtool.train import cpu_has_bf16

    if not cpu_has_bf16():
        return {}
    logits = fast()
    agreement = float((logits.argmax(0) == exact.argmax(0)).float().mean())
    seconds = timeit(fast, repeat=repeat)
    print(f"  --amp bf16 on this CPU: {seconds:.2f} s, labels equal to float32's on {agreement:.2%} of voxels")
    return {"medtool_bf16_s": seconds, "bf16_label_agreement": round(agreement, 5),
            "bf16_max_logit_difference": round(float((logits - exact).abs().max()), 4)}


def run(repeat: int, timeit) -> list[dict]:
    import torch
    from monai.inferers import sliding_window_inference

    from medtool.inference import sliding_window

    torch.set_num_threads(2)
    model = _model()
    image = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32)
    tensor = torch.from_numpy(image)[None]

    def ours(amp_dtype=None):
        return sliding_window(model, image, patch=WINDOW, out_channels=CLASSES, overlap=OVERLAP,
                              blend="gaussian", batch_size=BATCH, amp_dtype=amp_dtype)

    def monai():
        with torch.inference_mode():
            return sliding_window_inference(tensor, WINDOW, BATCH, model, overlap=OVERLAP, mode="gaussian",
                                            sigma_scale=0.125)[0]

    a, b = ours(), monai()
    agreement = float((a.argmax(0) == b.argmax(0)).float().mean())
    difference = float((a - b).abs().max())
    medtool_s = timeit(ours, repeat=repeat)
    peer_s = timeit(monai, repeat=repeat)
    bf16 = _bf16_row(lambda: ours(torch.bfloat16), a, timeit, repeat)
    started = time.perf_counter()
    training = _training_throughput()
    row = {"case": f"sliding window {'x'.join(map(str, SHAPE))}", "peer": "MONAI sliding_window",
           "medtool_s": medtool_s, "peer_s": peer_s, "label_agreement": round(agreement, 5),
           "max_logit_difference": round(difference, 5), **training,
           "training_bench_s": round(time.perf_counter() - started, 1), **bf16}
    print(f"  labels equal to MONAI's on {agreement:.2%} of voxels (max logit difference {difference:.3g}); "
          f"training {training['train_samples_per_s']} samples/s, waiting for data "
          f"{training['train_data_wait']:.1%} of the time")
    return [row]
