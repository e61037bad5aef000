import pytest
import torch

from medtool.device import parse_device, resolve_device
from medtool.errors import DeviceError, UsageError


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:1", " CPU "])
def test_spellings(spec):
    assert parse_device(spec) == spec.strip().lower()


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "mps0", ""])
def test_bad_spellings(spec):
    with pytest.raises(UsageError):
        parse_device(spec)


def test_auto_and_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda")


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(DeviceError, match="1 CUDA device"):
        resolve_device("cuda:1")
