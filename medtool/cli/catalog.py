"""The commands of ``medtool``: their order in ``--help`` and their one-line purposes.

The root group lists commands from this table and imports a command's module only when that
command runs (or its own help is asked for), so ``medtool --help`` and a command's start-up
never pay for the other commands' modules.
"""

from __future__ import annotations

#: Every command in the order of ``medtool --help`` (data, the pipeline, then helpers):
#: name -> one-line purpose; the module is ``medtool/cli/<name>.py`` with ``register(app)``.
COMMANDS: dict[str, str] = {
    "phantom": "Write synthetic chest CT (DICOM) and X-rays, or brain MRI, with exact truth.",
    "dicom2npy": "Convert DICOM series into volumes (.npy/.npz/.nii.gz).",
    "anonymize": "De-identify DICOM files (PS3.15 basic profile), series kept intact.",
    "hu": "Convert raw scanner values to Hounsfield units.",
    "lungmask": "Segment the lungs (1 right, 2 left) in HU volumes.",
    "resample": "Resample volumes to a new spacing or onto another volume's grid.",
    "attach": "Give arrays without geometry (coursework masks) their image's geometry.",
    "todicom": "Write label volumes as DICOM SEG or RTSTRUCT of their source series.",
    "view": "Render slices of a volume (with masks or heat maps) to PNG.",
    "folds": "Split cases into leakage-free cross-validation folds.",
    "export": "Write images and masks as an nnU-Net v2 raw dataset.",
    "train": "Train a model (segment: U-Net 2D/3D; classify: 2D/3D CNN; detect: RetinaNet).",
    "predict": "Run a trained model (masks on the input grid, a class CSV, or an RSNA box CSV).",
    "score": "Score predictions against truth (Dice, HD95, mAP, AUC, ...).",
    "gradcam": "Grad-CAM attention maps on the input volume's grid.",
    "info": "Show shape, geometry, value range and history of volumes, or the series in DICOM folders.",
    "env": "Show versions, DICOM decoders, peers and compute devices.",
}
