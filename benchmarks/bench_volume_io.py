"""Writing a 512 x 512 x 300 CT volume: medtool's save_volume against plain numpy / nibabel.

The peers write the array alone (np.save; nibabel with the same RAS affine, same gzip level);
medtool also writes the sidecar / JSON header extension, atomically. The ratio shows our
overhead (1.0 = none).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from medtool.formats import save_volume
from medtool.volume import Volume, to_nifti

SHAPE = (300, 512, 512)


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    # CT-like content (compressibility matters for .nii.gz): smooth body plus noise
    _z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 230.0) ** 2 < 1
    array = np.where(body, 40, -1000).astype(np.int16) + rng.normal(0, 20, SHAPE).astype(np.int16)
    return Volume(array, spacing=(1.25, 0.7, 0.7), origin=(-179.0, -200.0, -300.0),
                  meta={"units": "HU", "modality": "CT"}, history=[{"command": "benchmark"}])


def run(*, repeat: int, timeit) -> list[dict]:
    volume = _volume()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)

        def ours_npy():
            save_volume(volume, folder / "ours.npy", force=True)

        def peer_npy():
            np.save(folder / "peer.npy", volume.array)

        rows.append({"case": "write 512x512x300 int16 .npy", "peer": "numpy.save",
                     "medtool_s": timeit(ours_npy, repeat=repeat),
                     "peer_s": timeit(peer_npy, repeat=repeat)})

        data, affine = to_nifti(volume)

        def ours_nii():
            save_volume(volume, folder / "ours.nii.gz", force=True)

        def peer_nii():
            nib.save(nib.Nifti1Image(data, affine), folder / "peer.nii.gz")

        rows.append({"case": "write 512x512x300 int16 .nii.gz", "peer": "nibabel.save",
                     "medtool_s": timeit(ours_nii, repeat=repeat),
                     "peer_s": timeit(peer_nii, repeat=repeat)})
    return rows
