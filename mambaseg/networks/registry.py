"""The network registry: networks are created by name, never by import path.

A family module registers a builder with ``@register("name", tiny={...})``; ``tiny`` holds the
keyword arguments of a variant with a few thousand parameters used by fast tests.
Every built network exposes ``input_size_divisor: int``: each spatial size that is a multiple of it is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class NetworkEntry:
    name: str
    builder: Callable[..., nn.Module]
    tiny: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


_REGISTRY: dict[str, NetworkEntry] = {}


def register(name: str, tiny: dict[str, Any] | None = None, summary: str = "") -> Callable:
    """Class or function decorator adding a network builder under ``name``."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} is registered twice")
        _REGISTRY[name] = NetworkEntry(name, builder, dict(tiny or {}), summary or (builder.__doc__ or "").strip())
        return builder

    return add


def _load_families() -> None:
    from mambaseg.networks import families  # noqa: F401  (importing registers every family)


def list_networks() -> list[str]:
    """Names of every registered network, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def network_entry(name: str) -> NetworkEntry:
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown network {name!r}; registered networks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the network ``name`` for 2D or 3D inputs.

    Args:
        name: a name from ``list_networks()``.
        spatial_dims: 2 or 3.
        in_channels: input channels (image modalities).
        num_classes: output channels (classes including background).
        **kwargs: topology and options of that family; ``tiny=True`` selects the tiny test variant.
    """
    entry = network_entry(name)
    if spatial_dims not in (2, 3):
        raise ValueError(f"network {name!r}: spatial_dims must be 2 or 3, got {spatial_dims}")
    if kwargs.pop("tiny", False):
        kwargs = {**entry.tiny, **kwargs}
    return entry.builder(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **kwargs)
