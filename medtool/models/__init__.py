"""Networks by name: a registry that every task (segment, classify, detect) builds from.

A model is described by a name and a JSON-serialisable config; checkpoints store both, so
:func:`build` recreates the exact architecture before the weights are loaded. New families
register with :func:`register`::

    @register("resnet3d")
    def build_resnet3d(*, dim, in_channels, num_classes, **options): ...
"""

from __future__ import annotations

from typing import Any, Callable

#: name -> builder(**config) returning a torch.nn.Module.
REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a builder to :data:`REGISTRY` under ``name``."""

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        REGISTRY[name] = builder
        return builder

    return decorate


def build(name: str, config: dict[str, Any]):
    """The model ``name`` built from ``config`` (as stored in a checkpoint's recipe)."""
    from ..errors import UsageError

    _load_builtin()
    if name not in REGISTRY:
        raise UsageError(f"unknown model {name!r}", hint=f"choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**config)


def names() -> list[str]:
    """Registered model names."""
    _load_builtin()
    return sorted(REGISTRY)


def _load_builtin() -> None:
    from . import cnn, retinanet, unet  # noqa: F401  (register themselves)
