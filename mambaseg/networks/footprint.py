"""Parts of the families' memory models: the byte size of a value, and the leaf-activation count of fixed networks.

A memory model (``NetworkEntry.memory``) returns a ``Footprint``: parameters, and the bytes of activations one
sample keeps for the backward pass (the planner adds gradients, optimiser states and overheads).

U-Net families (``unet_footprint``) count, per sample, the elements of the feature maps autograd keeps for the
backward pass, walking the network stage by stage (see ``unet_elements``): two maps per conv-norm(-act), one for
a residual sum, the upsampled map and the concatenation in the decoder, the segmentation heads (deep
supervision on). Mamba elements are, per Mamba layer, its width times its number of tokens; the layer keeps
about a dozen tensors of that size or twice it (projections, causal conv, step sizes, scan output, gate).
The activation bytes are ``c_conv * conv_elements + c_mamba * mamba_elements``, the constants living with the
families (fitted to measured peaks: see ``networks.unet`` and ``networks.umamba``).

Networks with a fixed topology are counted by a forward pass at twice their divisor with hooks summing every
leaf module's output elements, times ``BYTES_PER_VALUE`` and a family constant ``c_leaf`` fitted to the measured
peak memory (``mambaseg.planning.memory_probe``); their activations grow linearly with the voxels.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mambaseg.networks.registry import Footprint, MemoryModel, create

if TYPE_CHECKING:
    from mambaseg.networks.unet import Topology

BYTES_PER_VALUE = 4


def freeze_kwargs(kwargs: Mapping[str, Any]) -> str:
    """Keyword arguments as a hashable key for caches (``thaw_kwargs`` inverts it)."""
    return json.dumps(dict(kwargs), sort_keys=True)


def thaw_kwargs(key: str) -> dict[str, Any]:
    return json.loads(key)


@functools.lru_cache(maxsize=64)
def _leaf_profile(
    name: str, spatial_dims: int, in_channels: int, num_classes: int, kwargs_key: str
) -> tuple[int, float]:
    """Parameters, and leaf-module output elements per input voxel from a forward pass at twice the divisor."""
    net = create(name, spatial_dims, in_channels, num_classes, **thaw_kwargs(kwargs_key))
    side = 2 * net.input_size_divisor
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        for o in output if isinstance(output, (list, tuple)) else [output]:
            if isinstance(o, torch.Tensor):
                total += o.numel()

    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    with torch.no_grad():
        net(torch.zeros(1, in_channels, *(side,) * spatial_dims))
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for p in net.parameters()), total / side**spatial_dims


def leaf_footprint(network: str, c_leaf: float) -> MemoryModel:
    """The memory model of a fixed-topology network: ``c_leaf`` x 4 B x leaf output elements per voxel x voxels."""

    def estimate(
        spatial_dims: int, in_channels: int, num_classes: int, kwargs: Mapping[str, Any], patch_size: Sequence[int]
    ) -> Footprint:
        key = freeze_kwargs(kwargs)
        parameters, per_voxel = _leaf_profile(network, spatial_dims, in_channels, num_classes, key)
        return Footprint(parameters, float(c_leaf * BYTES_PER_VALUE * per_voxel * math.prod(patch_size)))

    return estimate


def stage_voxels(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """Voxels of each stage's feature map: the patch divided by the strides so far."""
    size, voxels = list(patch_size), []
    for stride in strides:
        size = [s // k for s, k in zip(size, stride, strict=True)]
        voxels.append(math.prod(size))
    return voxels


def unet_elements(
    topology: Topology,
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    style: str,
    mamba_stages: Sequence[int] = (),
) -> tuple[int, int, int]:
    """Per-sample (encoder conv elements, decoder conv elements, mamba elements) of a ``networks.unet`` U-Net.

    Args:
        topology: the resolved topology.
        patch_size: the input's spatial size.
        in_channels: input channels.
        num_classes: output channels.
        style: ``"nnunet"`` (ResEnc: conv stem, pooled skips, transposed-conv upsampling) or ``"umamba"``
            (residual stem, 1x1-conv skips, nearest upsampling and residual decoder stacks).
        mamba_stages: stages followed by a Mamba layer over their voxels.
    """
    f, v = topology.features, stage_voxels(patch_size, topology.strides)
    block = 5  # conv-norm-act, conv-norm, sum-act
    if style == "nnunet":
        conv = 2 * f[0] * v[0]
    else:
        conv = (block * topology.n_blocks[0] + 1) * f[0] * v[0]
    for s in range(topology.n_stages):
        c_in = f[s - 1] if s else f[0]
        conv += block * topology.n_blocks[s] * f[s] * v[s]
        if style == "umamba":
            conv += f[s] * v[s]
        else:
            conv += (c_in if s else 0) * v[s] + (2 * f[s] * v[s] if c_in != f[s] else 0)
    encoder, conv = conv, 0
    for d, s in enumerate(range(topology.n_stages - 2, -1, -1)):
        n_conv = topology.n_conv_decoder[d]
        conv += (f[s + 1] + f[s]) * v[s] if style == "umamba" else f[s] * v[s]
        conv += 2 * f[s] * v[s] + num_classes * v[s]
        conv += (block * n_conv + 1 if style == "umamba" else 2 * n_conv) * f[s] * v[s]
    mamba = sum(f[s] * v[s] for s in mamba_stages)
    return encoder, conv, mamba


@functools.lru_cache(maxsize=256)
def _unet_structure(
    name: str, spatial_dims: int, in_channels: int, num_classes: int, kwargs_key: str
) -> tuple[int, Topology, tuple[int, ...]]:
    """Parameters, topology and Mamba stages of a U-Net family network, built on the meta device."""
    with torch.device("meta"):
        net = create(name, spatial_dims, in_channels, num_classes, **thaw_kwargs(kwargs_key))
    mamba_stages = tuple(int(s) for s in getattr(net, "mamba_layers", {}))
    return sum(p.numel() for p in net.parameters()), net.topology, mamba_stages


def unet_footprint(network: str, style: str, c_conv: float, c_mamba: float = 0.0) -> MemoryModel:
    """The memory model of a U-Net family network (``style`` as in ``unet_elements``), bytes per counted element."""

    def estimate(
        spatial_dims: int, in_channels: int, num_classes: int, kwargs: Mapping[str, Any], patch_size: Sequence[int]
    ) -> Footprint:
        key = freeze_kwargs(kwargs)
        parameters, topology, mamba_stages = _unet_structure(network, spatial_dims, in_channels, num_classes, key)
        encoder, decoder, mamba = unet_elements(topology, patch_size, in_channels, num_classes, style, mamba_stages)
        return Footprint(parameters, float(c_conv * (encoder + decoder) + c_mamba * mamba))

    return estimate
