"""The network registry: networks are created by name, never by import path.

A family module registers a builder next to its definition with ``@register("name", ...)``; the entry
carries everything the rest of the code must know about that network:

- ``topology``: the planner's rule, ``(spacing, wanted patch) -> TopologyChoice`` (network kwargs, padded
  patch, per-axis divisors); it raises ValueError when no network of the family fits the patch.
- ``memory``: its training-memory model, ``(spatial_dims, in_channels, num_classes, kwargs, patch) -> Footprint``
  (parameters and activation bytes per sample); the planner adds weights, optimiser states and overheads.
- ``optimizer``: the name of its default optimiser preset in the trainer config (``trainer.optimizers``).
- ``min_input_size``: ``spatial_dims -> per-axis minimum``; the planner never plans a smaller patch and
  ``check_input_size`` refuses a smaller input.
- ``vss_encoder``: whether it holds a VMamba ``VSSEncoder`` under ``encoder`` that pretrained weights fit.
- ``tiny``: the keyword arguments of a variant with a few thousand parameters used by fast tests.

Every built network exposes ``input_size_divisor: int``: each spatial size that is a multiple of it is accepted,
and ``registry_name``: the name it was created under.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn


@dataclass(frozen=True)
class TopologyChoice:
    """What a topology rule decides for a wanted patch: the network kwargs, the patch padded to fit, the divisors."""

    kwargs: dict[str, Any]
    patch_size: list[int]
    divisors: tuple[int, ...]
    """Per axis, the step by which the patch may grow or shrink (every accepted size is a multiple of it)."""


@dataclass(frozen=True)
class Footprint:
    """A network's size for the memory model: its parameters and the activation bytes one sample keeps for backward."""

    parameters: int
    activation_bytes_per_sample: float


class TopologyRule(Protocol):
    def __call__(self, spacing: Sequence[float], patch_size: Sequence[int]) -> TopologyChoice: ...


class MemoryModel(Protocol):
    def __call__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        kwargs: Mapping[str, Any],
        patch_size: Sequence[int],
    ) -> Footprint: ...


@dataclass(frozen=True)
class NetworkEntry:
    """A registered network and what the planner, the trainer and pretraining know about it (see the module doc)."""

    name: str
    builder: Callable[..., nn.Module]
    topology: TopologyRule
    memory: MemoryModel
    optimizer: str
    min_input_size: Callable[[int], tuple[int, ...]]
    vss_encoder: bool = False
    tiny: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


_REGISTRY: dict[str, NetworkEntry] = {}


def register(
    name: str,
    *,
    topology: TopologyRule,
    memory: MemoryModel,
    optimizer: str,
    min_input_size: Callable[[int], tuple[int, ...]],
    vss_encoder: bool = False,
    tiny: dict[str, Any] | None = None,
    summary: str = "",
) -> Callable:
    """Class or function decorator adding a network builder under ``name`` with its entry's fields."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        add_entry(
            NetworkEntry(
                name=name,
                builder=builder,
                topology=topology,
                memory=memory,
                optimizer=optimizer,
                min_input_size=min_input_size,
                vss_encoder=vss_encoder,
                tiny=dict(tiny or {}),
                summary=summary or (builder.__doc__ or "").strip(),
            )
        )
        return builder

    return add


def add_entry(entry: NetworkEntry) -> None:
    """Register ``entry``; a name may be registered once."""
    if entry.name in _REGISTRY:
        raise ValueError(f"network {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry


@contextmanager
def registered(entry: NetworkEntry) -> Iterator[NetworkEntry]:
    """Register ``entry`` for the duration of a ``with`` block (tests, notebooks), and remove it afterwards."""
    _load_families()
    add_entry(entry)
    try:
        yield entry
    finally:
        del _REGISTRY[entry.name]


def _load_families() -> None:
    from mambaseg.networks import families  # noqa: F401  (importing registers every family)


def list_networks() -> list[str]:
    """Names of every registered network, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def network_entry(name: str) -> NetworkEntry:
    """The entry registered under ``name``; ValueError naming the registered ones when there is none."""
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown network {name!r}; registered networks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_input_size(name: str, spatial_shape: Sequence[int]) -> None:
    """Raise ValueError when an input is smaller, along some axis, than the network ``name``'s minimum input size."""
    shape = tuple(int(s) for s in spatial_shape)
    minimum = network_entry(name).min_input_size(len(shape))
    if any(s < m for s, m in zip(shape, minimum, strict=True)):
        raise ValueError(f"{name}: the input's spatial size {shape} is smaller than its minimum input size {minimum}")


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
    network = entry.builder(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **kwargs)
    network.registry_name = name
    return network
