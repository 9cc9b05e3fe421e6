"""Topology rules the families register: nnU-Net's pooling rule for U-Nets, and the rule of fixed-topology networks.

U-Net topology from spacing and patch size follows nnU-Net's ``get_pool_and_conv_props``. All sequences
are in array-axis order, the same order as the spacing given.

The rule, step by step: an axis may be pooled while its current feature-map size is at least twice
``min_feature_map_size`` and its current spacing is less than twice the smallest current spacing
among such axes; a step where only one axis qualifies needs that axis to be at least three times
``min_feature_map_size``. Each pooling step halves the size (rounding up) and doubles the spacing of
the pooled axes. A stage's conv kernel is 3 along an axis once that axis's spacing has come within a
factor 2 of the smallest spacing, else 1 (and stays 3 afterwards); the deepest stage always uses 3.
The patch is then padded up to a multiple of 2^(pooling steps) per axis.

A U-Net family's rule (``unet_topology``) makes one stage per pooling step, with features
min(32 * 2^i, 320 in 3D or 512 in 2D) and the family's own blocks per encoder and decoder stage.
A fixed-topology network keeps its default keyword arguments; its patch is padded to a multiple of the
``input_size_divisor`` of the network built with them, along every axis.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mambaseg.networks.registry import TopologyChoice, TopologyRule, create

MIN_FEATURE_MAP_SIZE = 4
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}


@dataclass(frozen=True)
class PoolingPlan:
    """Per-stage strides and kernels (the first stride is all ones), and the padded patch size."""

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisors(self) -> tuple[int, ...]:
        """Per axis, the product of the strides: every patch size must be a multiple of it."""
        return tuple(math.prod(axis) for axis in zip(*self.strides, strict=True))


def pad_to_multiple(shape: Sequence[int], divisors: Sequence[int]) -> tuple[int, ...]:
    """Round each size up to the next multiple of its divisor."""
    return tuple(int(math.ceil(s / d) * d) for s, d in zip(shape, divisors, strict=True))


def pooling_plan(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    min_feature_map_size: int = MIN_FEATURE_MAP_SIZE,
    max_pool: int = 999_999,
) -> PoolingPlan:
    """Strides, conv kernels and the padded patch size of a U-Net for this spacing and patch.

    Args:
        spacing: voxel spacing per axis (mm).
        patch_size: the patch size wanted; the returned one is padded to the pooling divisors.
        min_feature_map_size: the smallest edge a bottleneck feature map may have along a pooled axis.
        max_pool: the most pooling steps along one axis.
    """
    dims = len(spacing)
    if len(patch_size) != dims:
        raise ValueError(f"pooling_plan: spacing {tuple(spacing)} and patch size {tuple(patch_size)} differ in length")
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    n_pool = [0] * dims
    kernel = [1] * dims
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    while True:
        candidates = [a for a in range(dims) if current_size[a] >= 2 * min_feature_map_size]
        if not candidates:
            break
        finest = min(current_spacing[a] for a in candidates)
        candidates = [a for a in candidates if current_spacing[a] / finest < 2 and n_pool[a] < max_pool]
        if not candidates or (len(candidates) == 1 and current_size[candidates[0]] < 3 * min_feature_map_size):
            break
        finest_overall = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[a] / finest_overall < 2 else 1 for a, k in enumerate(kernel)]
        for a in candidates:
            n_pool[a] += 1
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
        strides.append(tuple(2 if a in candidates else 1 for a in range(dims)))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dims)
    padded = pad_to_multiple([int(s) for s in patch_size], [2**n for n in n_pool])
    return PoolingPlan(strides=tuple(strides), kernel_sizes=tuple(kernels), patch_size=padded)


@functools.lru_cache(maxsize=32)
def default_divisor(network: str, spatial_dims: int) -> int:
    """``input_size_divisor`` of ``network`` built with its default keyword arguments."""
    with torch.no_grad():
        return int(create(network, spatial_dims, 1, 2).input_size_divisor)


def fixed_topology(network: str) -> TopologyRule:
    """The rule of a fixed-topology network: default kwargs, the patch padded to its divisor along every axis."""

    def rule(spacing: Sequence[float], patch_size: Sequence[int]) -> TopologyChoice:
        divisors = (default_divisor(network, len(spacing)),) * len(spacing)
        padded = pad_to_multiple([max(1, p) for p in patch_size], divisors)
        return TopologyChoice({}, list(padded), divisors)

    return rule


def fixed_min_input_size(network: str) -> Callable[[int], tuple[int, ...]]:
    """The minimum input of a fixed-topology network: its default divisor along every axis."""

    def minimum(spatial_dims: int) -> tuple[int, ...]:
        return (default_divisor(network, spatial_dims),) * spatial_dims

    return minimum


def unet_features(n_stages: int, spatial_dims: int) -> list[int]:
    """nnU-Net's channels per stage: 32 * 2^i, capped at 320 in 3D and 512 in 2D."""
    return [min(BASE_FEATURES * 2**i, MAX_FEATURES[spatial_dims]) for i in range(n_stages)]


def unet_topology(
    network: str, blocks: Callable[[int], Sequence[int]], decoder_convs: Callable[[int], Sequence[int]]
) -> TopologyRule:
    """The rule of a U-Net family: nnU-Net's pooling, features and the family's blocks per stage.

    Args:
        network: the name errors mention.
        blocks: encoder blocks per stage, given the number of stages.
        decoder_convs: convs (or blocks) per decoder stage, deepest first, given the number of stages.
    """

    def rule(spacing: Sequence[float], patch_size: Sequence[int]) -> TopologyChoice:
        pooling = pooling_plan(spacing, patch_size)
        n = pooling.n_stages
        if n < 2:
            raise ValueError(
                f"{network}: patch {list(patch_size)} at spacing {list(spacing)} cannot be pooled once; "
                "a U-Net needs two stages"
            )
        kwargs: dict[str, Any] = {
            "n_stages": n,
            "features_per_stage": unet_features(n, len(spacing)),
            "strides": [list(s) for s in pooling.strides],
            "kernel_sizes": [list(k) for k in pooling.kernel_sizes],
            "n_blocks_per_stage": list(blocks(n)),
            "n_conv_per_stage_decoder": list(decoder_convs(n)),
        }
        return TopologyChoice(kwargs, list(pooling.patch_size), pooling.divisors)

    return rule
