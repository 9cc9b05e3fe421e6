"""U-Mamba (Ma, Li and Wang, 2024): a residual U-Net with Mamba layers, Bot and Enc variants in 2D and 3D.

Dimension letters: b batch, c channels, k classes, v voxels of a feature map.

As bowang-lab/U-Mamba's ``UMambaBot_3d.py`` / ``UMambaEnc_3d.py``: a residual encoder (residual
stem, each stage opening with a strided block whose skip is a 1x1 conv), a decoder of nearest
upsampling + 1x1 conv, skip concatenation and residual stacks, and a 1x1 head per decoder stage.
``umamba_bot`` puts one Mamba block (LayerNorm, Mamba over the flattened voxels; its output
replaces the features, there is no residual) after the last stage; ``umamba_enc`` puts one after
every stage. ``mamba=False`` leaves them out: the same network without Mamba, for ablations;
``umamba_bot_nomamba`` is that ablation of Bot as a network of its own (nnU-Net Revisited's "No-Mamba Base"),
planned, trained and reported like any other so that a benchmark shows what the Mamba layer itself adds.

Channel tokens (Enc only): where a stage's feature map has no more voxels than channels, U-Mamba
swaps the roles, so the channels are the sequence and each token holds all v voxels. That fixes
v, so it is decided at construction from ``patch_size`` (U-Mamba uses the plans' patch size); such
a network then accepts only that input size. Without ``patch_size`` every stage uses voxel tokens
and any size the strides allow is accepted.

Without explicit block counts the topology gets U-Mamba's overrides of nnU-Net's plans: two
blocks per encoder stage, one from stage ceil(n/2) on, and two per decoder stage but one for the
decoder stages from ceil(n/2) on (deepest first). Explicit values are used as given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from mambaseg.networks.footprint import unet_footprint
from mambaseg.networks.registry import TopologyChoice, register
from mambaseg.networks.topology import unet_topology
from mambaseg.networks.unet import (
    C_CONV,
    IntOrSeq,
    ResidualEncoder,
    UNetDecoder,
    any_input_size,
    check_spatial_size,
    infer_n_stages,
    resolve_topology,
)
from mambaseg.nn.conv_blocks import init_he, per_axis
from mambaseg.nn.mamba_layer import TokenMambaBlock

VARIANTS = ("bot", "enc")
TINY = {"n_stages": 3, "features_per_stage": (2, 4, 8), "n_blocks_per_stage": 1, "n_conv_per_stage_decoder": 1}
C_MAMBA = 96.0
"""Bytes per Mamba element (width x tokens of a Mamba layer), fitted jointly with ``unet.C_CONV``."""


def umamba_blocks(n_stages: int) -> tuple[int, ...]:
    """U-Mamba's encoder blocks per stage: 2, and 1 from stage ceil(n/2) on."""
    return tuple(2 if s < math.ceil(n_stages / 2) else 1 for s in range(n_stages))


def umamba_decoder_convs(n_stages: int) -> tuple[int, ...]:
    """U-Mamba's blocks per decoder stage (deepest first): 2, and 1 from stage ceil(n/2) on."""
    return tuple(2 if s < math.ceil(n_stages / 2) else 1 for s in range(n_stages - 1))


class UMamba(nn.Module):
    """U-Mamba, Bot or Enc variant, for 2D and 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels k.
        variant: ``"bot"`` (Mamba at the bottleneck) or ``"enc"`` (Mamba after every encoder stage).
        n_stages: number of resolution stages.
        features_per_stage: channels per stage.
        strides: per stage, an int or one per axis.
        kernel_sizes: per stage, an int or one per axis.
        n_blocks_per_stage: residual blocks per encoder stage (default: U-Mamba's rule).
        n_conv_per_stage_decoder: residual blocks per decoder stage, deepest first (default: U-Mamba's rule).
        deep_supervision: return one output per decoder stage (full resolution first) instead of one tensor.
        mamba: include the Mamba blocks (False: the no-Mamba ablation).
        patch_size: the training patch size; Enc then uses channel tokens where a stage has no more voxels
            than channels, and the network accepts only this size.
        d_state: Mamba state size.
        d_conv: Mamba causal conv width.
        expand: Mamba expansion.
        norm: a ``make_norm`` name.
        act: a ``make_activation`` name.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        variant: str = "bot",
        n_stages: int | None = None,
        features_per_stage: IntOrSeq | None = None,
        strides: int | Sequence[IntOrSeq] | None = None,
        kernel_sizes: int | Sequence[IntOrSeq] | None = None,
        n_blocks_per_stage: IntOrSeq | None = None,
        n_conv_per_stage_decoder: IntOrSeq | None = None,
        deep_supervision: bool = False,
        mamba: bool = True,
        patch_size: IntOrSeq | None = None,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        norm: str = "instance",
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"UMamba: variant must be one of {VARIANTS}, got {variant!r}")
        self.name = f"umamba_{variant}"
        n = infer_n_stages(
            n_stages, 6 if spatial_dims == 3 else 7, features_per_stage, strides, kernel_sizes, n_blocks_per_stage
        )
        self.topology = resolve_topology(
            self.name,
            spatial_dims,
            n,
            features_per_stage,
            strides,
            kernel_sizes,
            umamba_blocks(n) if n_blocks_per_stage is None else n_blocks_per_stage,
            umamba_decoder_convs(n) if n_conv_per_stage_decoder is None else n_conv_per_stage_decoder,
        )
        self.deep_supervision = deep_supervision
        self.input_size_divisor = math.lcm(*self.topology.divisors)
        self.patch_size = None if patch_size is None else per_axis(patch_size, spatial_dims, f"{self.name}: patch_size")
        if self.patch_size is not None:
            check_spatial_size(self.name, self.patch_size, self.topology.divisors)
        self.encoder = ResidualEncoder(spatial_dims, in_channels, self.topology, norm, act, style="umamba")
        self.mamba_layers = nn.ModuleDict()
        if mamba:
            voxels = self.stage_voxels()
            for s in [self.topology.n_stages - 1] if variant == "bot" else range(self.topology.n_stages):
                channels = self.topology.features[s]
                channel_tokens = variant == "enc" and voxels is not None and voxels[s] <= channels
                self.mamba_layers[str(s)] = TokenMambaBlock(
                    voxels[s] if channel_tokens else channels,
                    channel_tokens,
                    d_state=d_state,
                    d_conv=d_conv,
                    expand=expand,
                )
        self.decoder = UNetDecoder(spatial_dims, self.topology, num_classes, norm, act, style="umamba")
        self.apply(init_he)

    def stage_voxels(self) -> list[int] | None:
        """Voxels per stage output for ``patch_size``, or None without one."""
        if self.patch_size is None:
            return None
        size, voxels = self.patch_size, []
        for stride in self.topology.strides:
            size = tuple(i // s for i, s in zip(size, stride, strict=True))
            voxels.append(math.prod(size))
        return voxels

    @property
    def channel_token_stages(self) -> list[int]:
        """Stages whose Mamba block treats channels as tokens."""
        return [int(s) for s, layer in self.mamba_layers.items() if layer.channel_tokens]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(b, c_in, *spatial) -> (b, k, *spatial), or a list of logits from full resolution down."""
        check_spatial_size(self.name, x.shape[2:], self.topology.divisors)
        if self.channel_token_stages and tuple(x.shape[2:]) != self.patch_size:
            raise ValueError(
                f"{self.name}: built for patch_size {self.patch_size} (channel tokens at stages "
                f"{self.channel_token_stages}), so the spatial shape must equal it, got {tuple(x.shape[2:])}"
            )
        x = self.encoder.stem(x)
        skips = []
        for s, stage in enumerate(self.encoder.stages):
            x = stage(x)
            if str(s) in self.mamba_layers:
                x = self.mamba_layers[str(s)](x)
            skips.append(x)
        return self.decoder(skips, self.deep_supervision)


_bot_topology = unet_topology("umamba_bot", umamba_blocks, umamba_decoder_convs)
_enc_topology = unet_topology("umamba_enc", umamba_blocks, umamba_decoder_convs)


def _enc_topology_with_patch(spacing: Sequence[float], patch_size: Sequence[int]) -> TopologyChoice:
    """U-Mamba Enc's rule: the U-Net rule, and the padded patch as ``patch_size`` (it decides the channel tokens)."""
    choice = _enc_topology(spacing, patch_size)
    return replace(choice, kwargs={**choice.kwargs, "patch_size": choice.patch_size})


@register(
    "umamba_bot",
    topology=_bot_topology,
    memory=unet_footprint("umamba_bot", "umamba", C_CONV, C_MAMBA),
    optimizer="sgd_poly",
    min_input_size=any_input_size,
    tiny=TINY,
)
def umamba_bot(**kwargs: Any) -> UMamba:
    """U-Mamba Bot: a residual U-Net with a Mamba block at the bottleneck."""
    return UMamba(variant="bot", **kwargs)


@register(
    "umamba_enc",
    topology=_enc_topology_with_patch,
    memory=unet_footprint("umamba_enc", "umamba", C_CONV, C_MAMBA),
    optimizer="sgd_poly",
    min_input_size=any_input_size,
    tiny=TINY,
)
def umamba_enc(**kwargs: Any) -> UMamba:
    """U-Mamba Enc: a residual U-Net with a Mamba block after every encoder stage."""
    return UMamba(variant="enc", **kwargs)


@register(
    "umamba_bot_nomamba",
    topology=_bot_topology,
    memory=unet_footprint("umamba_bot_nomamba", "umamba", C_CONV),
    optimizer="sgd_poly",
    min_input_size=any_input_size,
    tiny=TINY,
)
def umamba_bot_nomamba(**kwargs: Any) -> UMamba:
    """U-Mamba Bot with its Mamba block replaced by identity: the ablation that isolates what the Mamba layer adds."""
    return UMamba(variant="bot", mamba=False, **kwargs)
