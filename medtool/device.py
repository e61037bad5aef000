"""The ``--device`` option: parse it cheaply, resolve it to a torch device when needed."""

from __future__ import annotations

import re

from .errors import DeviceError, UsageError

#: Accepted spellings of ``--device``.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
DEVICE_HELP = "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"


def parse_device(spec: str) -> str:
    """Check the spelling of ``spec`` without importing torch; return it normalised."""
    text = spec.strip().lower()
    if not DEVICE_PATTERN.match(text):
        raise UsageError(f"--device {spec!r} is not one of {DEVICE_HELP}")
    return text


def resolve_device(spec: str):
    """The :class:`torch.device` for ``spec``; asking for CUDA where there is none is an error.

    Raises
    ------
    DeviceError
        ``cuda`` or ``cuda:N`` was asked for and this machine (or this torch build) has no such
        device.
    """
    import torch

    text = parse_device(spec)
    if text == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if text == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        built = torch.version.cuda or "none"
        raise DeviceError(
            f"--device {text}: no CUDA device is available (torch {torch.__version__}, CUDA build {built})",
            hint="use --device cpu or --device auto",
        )
    index = int(text.split(":")[1]) if ":" in text else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"--device {text}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}",
            hint="pick one of those",
        )
    return torch.device("cuda", index)
