"""Scan orders: ways to flatten N-D features (b, c, *spatial) into sequences (b, c, l) and back.

Dimension letters: b batch, c channels, l = prod(spatial), k number of orders.

An order is data: a permutation of the spatial axes (slowest first, fastest last) applied after
flipping some axes. Reversing the whole sequence is flipping every axis; SegMamba's interleaved
slice scan (for each in-plane position, all slices) is the raster order with the first axis made
the fastest. Orders never assume a spatial size.

Named sets (``scan_orders(name, spatial_dims)``):
    raster         row-major order
    reversed       row-major, back to front
    bidirectional  raster and reversed
    cross          VMamba's cross scan: each axis the fastest once (cyclic permutations), forwards and
                   backwards; 4 orders in 2D (VMamba's SS2D), 6 in 3D
    tri            SegMamba's tri-orientated scan: raster, reversed, and the slice-interleaved order
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScanOrder:
    """One flattening: flip ``flips`` (spatial axes, 0-based), then lay the axes out as ``permutation``."""

    permutation: tuple[int, ...]
    flips: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if sorted(self.permutation) != list(range(len(self.permutation))):
            raise ValueError(f"ScanOrder: permutation {self.permutation} is not a permutation of the spatial axes")
        if any(f not in self.permutation for f in self.flips):
            raise ValueError(f"ScanOrder: flips {self.flips} name axes outside {self.permutation}")

    @property
    def spatial_dims(self) -> int:
        return len(self.permutation)

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, *spatial) -> (b, c, l) in this order."""
        self._check(x)
        if self.flips:
            x = x.flip([2 + a for a in self.flips])
        x = x.permute(0, 1, *[2 + a for a in self.permutation])
        return x.reshape(x.shape[0], x.shape[1], -1)

    def unflatten(self, seq: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
        """(b, c, l) in this order -> (b, c, *spatial); the inverse of ``flatten``."""
        permuted_shape = [spatial_shape[a] for a in self.permutation]
        x = seq.reshape(seq.shape[0], seq.shape[1], *permuted_shape)
        inverse = [self.permutation.index(a) for a in range(self.spatial_dims)]
        x = x.permute(0, 1, *[2 + a for a in inverse])
        if self.flips:
            x = x.flip([2 + a for a in self.flips])
        return x

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 + self.spatial_dims:
            raise ValueError(
                f"ScanOrder over {self.spatial_dims} spatial axes needs (b, c, *spatial) with "
                f"{2 + self.spatial_dims} dimensions, got shape {tuple(x.shape)}"
            )


def _raster(n: int) -> ScanOrder:
    return ScanOrder(tuple(range(n)))


def _reversed(n: int) -> ScanOrder:
    return ScanOrder(tuple(range(n)), tuple(range(n)))


def _cyclic(n: int, shift: int) -> tuple[int, ...]:
    """The permutation whose fastest axis is ``n - 1 - shift``: (0, 1, 2) -> (2, 0, 1) -> (1, 2, 0)."""
    return tuple((a - shift) % n for a in range(n))


def _cross(n: int) -> list[ScanOrder]:
    forward = [ScanOrder(_cyclic(n, s)) for s in range(n)]
    backward = [ScanOrder(o.permutation, tuple(range(n))) for o in forward]
    return forward + backward


def _tri(n: int) -> list[ScanOrder]:
    slice_interleaved = ScanOrder((*range(1, n), 0))
    return [_raster(n), _reversed(n), slice_interleaved]


_NAMED = {
    "raster": lambda n: [_raster(n)],
    "reversed": lambda n: [_reversed(n)],
    "bidirectional": lambda n: [_raster(n), _reversed(n)],
    "cross": _cross,
    "tri": _tri,
}

SCAN_ORDER_NAMES = tuple(_NAMED)


def scan_orders(name: str, spatial_dims: int) -> list[ScanOrder]:
    """The named set of orders for ``spatial_dims`` spatial axes (see the module docstring)."""
    if name not in _NAMED:
        raise ValueError(f"unknown scan order {name!r}; choose one of {SCAN_ORDER_NAMES}")
    if spatial_dims < 1:
        raise ValueError(f"scan orders need at least one spatial axis, got spatial_dims={spatial_dims}")
    return _NAMED[name](spatial_dims)


def flatten_orders(x: torch.Tensor, orders: Sequence[ScanOrder]) -> torch.Tensor:
    """(b, c, *spatial) -> (b, k, c, l): the features flattened in each of the k orders."""
    return torch.stack([o.flatten(x) for o in orders], dim=1)


def merge_orders(seqs: torch.Tensor, orders: Sequence[ScanOrder], spatial_shape: Sequence[int]) -> torch.Tensor:
    """(b, k, c, l) -> (b, c, *spatial): each sequence put back in place, then summed over the k orders."""
    if seqs.shape[1] != len(orders):
        raise ValueError(f"merge_orders: got {seqs.shape[1]} sequences for {len(orders)} orders")
    return sum(o.unflatten(seqs[:, i], spatial_shape) for i, o in enumerate(orders))
