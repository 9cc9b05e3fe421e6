"""Training-memory model per network family: what the planner fits patch and batch sizes into.

The estimate of one training step with batch size b is::

    total = parameters * 4 B * (1 weight + 1 gradient + OPTIMIZER_STATES) + STEP_OVERHEAD
            + b * (C_CONV * conv_elements + C_MAMBA * mamba_elements)

``conv_elements`` counts, per sample, the elements of the feature maps autograd keeps for the
backward pass, walking the network stage by stage (see ``unet_elements``): two maps per
conv-norm(-act), one for a residual sum, the upsampled map and the concatenation in the decoder, the
segmentation heads (deep supervision on). ``mamba_elements`` is, per Mamba layer, its width times
its number of tokens; the layer keeps about a dozen tensors of that size or twice it (projections,
causal conv, step sizes, scan output, gate).

The constants are bytes per counted element in float32, fitted to the measured peak memory of
forward + backward on the CPU (``memory_probe``) of twelve unet_resenc and umamba_bot topologies
from 4 to 6 stages and 8 to 320 features at 32^3 to 64^3 voxels: the worst error of the fit is 15%
(``tests/planning/test_memory.py`` checks 30%). ``STEP_OVERHEAD`` is the part of a step that does
not grow with the patch (the CPU runtime's working memory; a GPU has its context and workspaces
instead). Gradients are counted; the optimizer states (two per weight, as Adam) are added for
planning only, since the probe does not step an optimizer.

Networks with a fixed topology (Swin-UMamba, VM-UNet, SegMamba) are counted by a forward pass at
a small size with hooks summing every leaf module's output elements, times 4 B and a family
constant ``C_LEAF``; their activations grow linearly with the voxels. Those constants are coarse:
each was fitted to one or two measurements of a narrow variant at 32^3-64^3 (SegMamba 0.92-1.03,
Swin-UMamba 0.88-0.93, Swin-UMamba-D 2.1, VM-UNet 2.5).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mambaseg.networks import create
from mambaseg.networks.unet import Topology

BYTES_PER_VALUE = 4
OPTIMIZER_STATES = 2
STEP_OVERHEAD = 36 * 2**20
C_CONV = 3.0
C_MAMBA = 96.0
C_LEAF = {"segmamba": 1.0, "swin_umamba": 0.9, "swin_umamba_d": 2.1, "vmunet": 2.5}
UNET_FAMILIES = {"unet_resenc": "nnunet", "umamba_bot": "umamba", "umamba_enc": "umamba"}


@dataclass(frozen=True)
class MemoryEstimate:
    """Parameters and per-sample activation bytes of one network at one patch size."""

    parameters: int
    activation_bytes_per_sample: float

    def step_bytes(self, batch_size: int) -> float:
        """Gradients plus activations: what a forward + backward adds to the resident weights."""
        return self.parameters * BYTES_PER_VALUE + STEP_OVERHEAD + batch_size * self.activation_bytes_per_sample

    def total_bytes(self, batch_size: int) -> float:
        """Weights, gradients, optimizer states and activations of one training step."""
        fixed = self.parameters * BYTES_PER_VALUE * (2 + OPTIMIZER_STATES) + STEP_OVERHEAD
        return fixed + batch_size * self.activation_bytes_per_sample

    def max_batch_size(self, budget_bytes: float) -> int:
        """The largest batch size whose ``total_bytes`` fits the budget (0 when none does)."""
        free = budget_bytes - self.total_bytes(0)
        return max(0, math.floor(free / self.activation_bytes_per_sample))


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
        net = create(name, spatial_dims, in_channels, num_classes, **_thaw(kwargs_key))
    mamba_stages = tuple(int(s) for s in getattr(net, "mamba_layers", {}))
    return sum(p.numel() for p in net.parameters()), net.topology, mamba_stages


@functools.lru_cache(maxsize=64)
def _leaf_profile(
    name: str, spatial_dims: int, in_channels: int, num_classes: int, kwargs_key: str
) -> tuple[int, float]:
    """Parameters, and leaf-module output elements per input voxel from a forward pass at twice the divisor."""
    net = create(name, spatial_dims, in_channels, num_classes, **_thaw(kwargs_key))
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


def _freeze(kwargs: dict[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True)


def _thaw(key: str) -> dict[str, Any]:
    return json.loads(key)


def estimate_memory(
    network: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    kwargs: dict[str, Any],
    patch_size: Sequence[int],
) -> MemoryEstimate:
    """The memory model of ``network`` built with ``kwargs`` at ``patch_size`` (see the module doc)."""
    key = _freeze(kwargs)
    if network in UNET_FAMILIES:
        parameters, topology, mamba_stages = _unet_structure(network, spatial_dims, in_channels, num_classes, key)
        encoder, decoder, mamba = unet_elements(
            topology, patch_size, in_channels, num_classes, UNET_FAMILIES[network], mamba_stages
        )
        activations = C_CONV * (encoder + decoder) + C_MAMBA * mamba
    else:
        parameters, per_voxel = _leaf_profile(network, spatial_dims, in_channels, num_classes, key)
        activations = C_LEAF.get(network, max(C_LEAF.values())) * BYTES_PER_VALUE * per_voxel * math.prod(patch_size)
    return MemoryEstimate(parameters, float(activations))
