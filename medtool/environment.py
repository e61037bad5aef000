"""What ``medtool env`` reports: package versions, optional decoders and peers, devices."""

from __future__ import annotations

import platform
import shutil
from importlib import metadata
from typing import Any

from . import __version__

#: Packages whose versions matter for results, in report order.
PACKAGES = ("numpy", "scipy", "nibabel", "pydicom", "scikit-image", "torch", "torchvision",
            "typer", "rich")
#: Optional packages: pixel-data decoders for compressed DICOM, and peers used by tests.
OPTIONAL = ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle",
            "python-gdcm", "SimpleITK")
#: Command-line peers looked up on PATH.
PEER_PROGRAMS = ("dcm2niix",)


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or ``None``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def report(device) -> dict[str, Any]:
    """Versions and devices as a flat, JSON-ready dict."""
    import torch

    facts: dict[str, Any] = {"medtool": __version__, "python": platform.python_version(),
                             "platform": platform.platform()}
    for name in PACKAGES + OPTIONAL:
        facts[name] = package_version(name)
    for program in PEER_PROGRAMS:
        facts[program] = shutil.which(program)
    facts["cuda_available"] = torch.cuda.is_available()
    facts["cuda_build"] = torch.version.cuda
    facts["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    facts["device"] = str(device)
    return facts
