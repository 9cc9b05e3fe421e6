"""Residual-encoder U-Net with nnU-Net ResEnc semantics, and the U-Net topology shared by U-shaped families.

Dimension letters: b batch, c channels, k classes; ``spatial`` is the tuple of spatial sizes.

Topology keyword arguments are those nnU-Net's planner gives: ``n_stages``, ``features_per_stage``,
``strides`` (the first usually 1), ``kernel_sizes``, ``n_blocks_per_stage`` and
``n_conv_per_stage_decoder`` (deepest decoder stage first). Each may be an int for every stage, and
strides and kernels may be per axis. An input is accepted when each spatial size is a multiple of
the product of the strides along its axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mambaseg.networks.footprint import unet_footprint
from mambaseg.networks.registry import register
from mambaseg.networks.topology import unet_features, unet_topology
from mambaseg.nn.conv_blocks import (
    ConvNormAct,
    StackedConvBlocks,
    StackedResidualBlocks,
    Upsample,
    init_he,
    per_axis,
    zero_last_norm,
)
from mambaseg.nn.factories import conv_type

RESENC_BLOCKS = (1, 3, 4, 6)
STYLES = ("nnunet", "umamba")
C_CONV = 3.0
"""Bytes per counted conv element (``networks.footprint.unet_elements``), fitted to the measured peak memory of
forward + backward on the CPU (``planning.memory_probe``) of twelve unet_resenc and umamba_bot topologies from 4 to
6 stages and 8 to 320 features at 32^3 to 64^3 voxels, jointly with ``umamba.C_MAMBA``: the worst error is 15%."""

IntOrSeq = int | Sequence[int]


@dataclass(frozen=True)
class Topology:
    """A resolved U-Net topology: one entry per stage (per decoder stage for ``n_conv_decoder``)."""

    features: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    n_blocks: tuple[int, ...]
    n_conv_decoder: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.features)

    @property
    def divisors(self) -> tuple[int, ...]:
        """Per axis, the number every input size must be a multiple of."""
        return tuple(math.prod(axis) for axis in zip(*self.strides, strict=True))


def resenc_blocks(n_stages: int) -> tuple[int, ...]:
    """ResEnc M's encoder blocks per stage: 1, 3, 4, then 6."""
    return tuple(RESENC_BLOCKS[min(i, len(RESENC_BLOCKS) - 1)] for i in range(n_stages))


def resenc_decoder_convs(n_stages: int) -> tuple[int, ...]:
    """ResEnc's convs per decoder stage: one each."""
    return (1,) * (n_stages - 1)


def _per_stage(value: IntOrSeq, n_stages: int, what: str, network: str) -> tuple:
    if isinstance(value, int):
        return (value,) * n_stages
    value = tuple(value)
    if len(value) != n_stages:
        raise ValueError(f"{network}: {what} {value} has {len(value)} entries but the network has {n_stages} stages")
    return value


def infer_n_stages(n_stages: int | None, default: int, *per_stage: IntOrSeq | None) -> int:
    """``n_stages`` as given, else the length of the first per-stage sequence given, else ``default``."""
    if n_stages is not None:
        return n_stages
    for value in per_stage:
        if value is not None and not isinstance(value, int):
            return len(value)
    return default


def resolve_topology(
    network: str,
    spatial_dims: int,
    n_stages: int | None = None,
    features_per_stage: IntOrSeq | None = None,
    strides: int | Sequence[IntOrSeq] | None = None,
    kernel_sizes: int | Sequence[IntOrSeq] | None = None,
    n_blocks_per_stage: IntOrSeq | None = None,
    n_conv_per_stage_decoder: IntOrSeq | None = None,
) -> Topology:
    """Fill in nnU-Net ResEnc defaults and check every entry; errors name ``network`` and the bad value.

    Defaults: 6 stages in 3D and 7 in 2D, features min(32 * 2^i, 320 in 3D or 512 in 2D), strides
    1, 2, 2, ..., kernel 3, blocks 1, 3, 4, 6, 6, ... (ResEnc M), one conv per decoder stage.
    """
    n = infer_n_stages(
        n_stages, 6 if spatial_dims == 3 else 7, features_per_stage, strides, kernel_sizes, n_blocks_per_stage
    )
    if n < 2:
        raise ValueError(f"{network}: a U-Net needs at least 2 stages, got n_stages={n}")
    features = _per_stage(
        unet_features(n, spatial_dims) if features_per_stage is None else features_per_stage,
        n,
        "features_per_stage",
        network,
    )
    strides = _per_stage([1] + [2] * (n - 1) if strides is None else strides, n, "strides", network)
    kernels = _per_stage(3 if kernel_sizes is None else kernel_sizes, n, "kernel_sizes", network)
    blocks = _per_stage(
        resenc_blocks(n) if n_blocks_per_stage is None else n_blocks_per_stage, n, "n_blocks_per_stage", network
    )
    decoder = _per_stage(
        resenc_decoder_convs(n) if n_conv_per_stage_decoder is None else n_conv_per_stage_decoder,
        n - 1,
        "n_conv_per_stage_decoder",
        network,
    )
    if min(features) < 1 or min(blocks) < 1 or min(decoder) < 1:
        raise ValueError(
            f"{network}: features, blocks and decoder convs must be positive, got {features}, {blocks}, {decoder}"
        )
    return Topology(
        features=tuple(int(f) for f in features),
        strides=tuple(per_axis(s, spatial_dims, f"{network}: stride") for s in strides),
        kernel_sizes=tuple(per_axis(k, spatial_dims, f"{network}: kernel size") for k in kernels),
        n_blocks=tuple(int(b) for b in blocks),
        n_conv_decoder=tuple(int(d) for d in decoder),
    )


def check_spatial_size(network: str, spatial_shape: Sequence[int], divisors: Sequence[int]) -> None:
    """Raise ValueError unless each spatial size is a positive multiple of its divisor and the deepest stage,
    ``spatial / divisors``, holds more than one voxel (instance norm there needs more than one; nnU-Net's
    planner keeps at least 4 per pooled axis).
    """
    shape, divisors = tuple(int(s) for s in spatial_shape), tuple(int(d) for d in divisors)
    if len(shape) != len(divisors) or any(s < 1 or s % d for s, d in zip(shape, divisors, strict=False)):
        raise ValueError(f"{network}: each spatial size must be a multiple of {divisors}, got spatial shape {shape}")
    if math.prod(s // d for s, d in zip(shape, divisors, strict=True)) == 1:
        minimum = (2 * divisors[0], *divisors[1:])
        raise ValueError(
            f"{network}: the input's spatial size {shape} is below the minimum input size of this topology: its "
            f"deepest stage would hold a single voxel, where instance norm needs more than one. The smallest inputs "
            f"are multiples of {divisors} with twice that along one axis, such as {minimum}"
        )


class ResidualEncoder(nn.Module):
    """A stem and one stack of residual blocks per stage; returns the output of every stage.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        topology: the resolved topology.
        norm: a ``make_norm`` name.
        act: a ``make_activation`` name.
        style: ``"nnunet"``: one conv-norm-act stem and ``BasicBlockD`` stacks (ResidualEncoder of
            dynamic-network-architectures); ``"umamba"``: a residual stem of ``n_blocks[0]`` blocks, and each
            stack opens with a block whose skip is a strided 1x1 conv (U-Mamba's encoders).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        topology: Topology,
        norm: str = "instance",
        act: str = "leakyrelu",
        style: str = "nnunet",
    ) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"ResidualEncoder: style must be one of {STYLES}, got {style!r}")
        t = topology
        skip = "pool" if style == "nnunet" else "conv"
        if style == "nnunet":
            self.stem = ConvNormAct(spatial_dims, in_channels, t.features[0], t.kernel_sizes[0], 1, norm, act)
        else:
            self.stem = StackedResidualBlocks(
                t.n_blocks[0],
                spatial_dims,
                in_channels,
                t.features[0],
                t.kernel_sizes[0],
                1,
                norm,
                act,
                first_skip="conv",
            )
        channels = [t.features[0], *t.features]
        self.stages = nn.ModuleList(
            StackedResidualBlocks(
                t.n_blocks[s],
                spatial_dims,
                channels[s],
                t.features[s],
                t.kernel_sizes[s],
                t.strides[s],
                norm,
                act,
                first_skip=skip,
            )
            for s in range(t.n_stages)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(b, c_in, *spatial) -> one (b, c_s, *spatial_s) per stage, full resolution first."""
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Upsample, concatenate the skip, a conv stack, and a 1x1 segmentation head per decoder stage.

    Args:
        spatial_dims: 2 or 3.
        topology: the resolved topology.
        num_classes: output channels k.
        norm: a ``make_norm`` name.
        act: a ``make_activation`` name.
        style: ``"nnunet"``: transposed-conv upsampling and plain conv stacks (UNetDecoder of
            dynamic-network-architectures); ``"umamba"``: nearest upsampling with a 1x1 conv and residual stacks
            opening with a 1x1-conv skip (U-Mamba's UNetResDecoder).
    """

    def __init__(
        self,
        spatial_dims: int,
        topology: Topology,
        num_classes: int,
        norm: str = "instance",
        act: str = "leakyrelu",
        style: str = "nnunet",
    ) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"UNetDecoder: style must be one of {STYLES}, got {style!r}")
        t = topology
        ups, stages, heads = [], [], []
        for s in range(1, t.n_stages):
            below, skip, kernel = t.features[-s], t.features[-(s + 1)], t.kernel_sizes[-(s + 1)]
            n_convs = t.n_conv_decoder[s - 1]
            if style == "nnunet":
                ups.append(Upsample(spatial_dims, below, skip, t.strides[-s], mode="transposed"))
                stages.append(StackedConvBlocks(n_convs, spatial_dims, 2 * skip, skip, kernel, 1, norm, act))
            else:
                ups.append(Upsample(spatial_dims, below, skip, t.strides[-s], mode="nearest"))
                stages.append(
                    StackedResidualBlocks(
                        n_convs, spatial_dims, 2 * skip, skip, kernel, 1, norm, act, first_skip="conv"
                    )
                )
            heads.append(conv_type(spatial_dims)(skip, num_classes, 1))
        self.ups = nn.ModuleList(ups)
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    def forward(self, skips: Sequence[torch.Tensor], deep_supervision: bool) -> torch.Tensor | list[torch.Tensor]:
        """Stage outputs, full resolution first -> logits (b, k, *spatial), or one per decoder stage, full first."""
        x = skips[-1]
        outputs = []
        for s, (up, stage, head) in enumerate(zip(self.ups, self.stages, self.heads, strict=True)):
            x = stage(torch.cat([up(x), skips[-(s + 2)]], dim=1))
            if deep_supervision or s == len(self.stages) - 1:
                outputs.append(head(x))
        outputs.reverse()
        return outputs if deep_supervision else outputs[0]


def any_input_size(spatial_dims: int) -> tuple[int, ...]:
    """The minimum input of U-Net families: none beyond one voxel, since their topology rule adapts to the patch."""
    return (1,) * spatial_dims


@register(
    "unet_resenc",
    topology=unet_topology("unet_resenc", resenc_blocks, resenc_decoder_convs),
    memory=unet_footprint("unet_resenc", "nnunet", C_CONV),
    optimizer="sgd_poly",
    min_input_size=any_input_size,
    tiny={"n_stages": 3, "features_per_stage": (2, 4, 8), "n_blocks_per_stage": 1, "n_conv_per_stage_decoder": 1},
)
class ResEncUNet(nn.Module):
    """Residual-encoder U-Net as nnU-Net ResEnc (ResidualEncoderUNet of dynamic-network-architectures).

    A conv stem, ``BasicBlockD`` stacks per stage (the first block strided), a decoder of transposed
    convs, skip concatenation and conv stacks, and a 1x1 head per decoder stage. Instance norm,
    leaky ReLU, conv biases, He initialisation and zeroed last norms in residual blocks as nnU-Net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels k.
        n_stages: number of resolution stages.
        features_per_stage: channels per stage.
        strides: per stage, an int or one per axis.
        kernel_sizes: per stage, an int or one per axis.
        n_blocks_per_stage: residual blocks per encoder stage.
        n_conv_per_stage_decoder: convs per decoder stage, deepest first.
        deep_supervision: return one output per decoder stage (full resolution first) instead of one tensor.
        norm: a ``make_norm`` name.
        act: a ``make_activation`` name.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        n_stages: int | None = None,
        features_per_stage: IntOrSeq | None = None,
        strides: int | Sequence[IntOrSeq] | None = None,
        kernel_sizes: int | Sequence[IntOrSeq] | None = None,
        n_blocks_per_stage: IntOrSeq | None = None,
        n_conv_per_stage_decoder: IntOrSeq | None = None,
        deep_supervision: bool = False,
        norm: str = "instance",
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        self.topology = resolve_topology(
            "unet_resenc",
            spatial_dims,
            n_stages,
            features_per_stage,
            strides,
            kernel_sizes,
            n_blocks_per_stage,
            n_conv_per_stage_decoder,
        )
        self.deep_supervision = deep_supervision
        self.input_size_divisor = math.lcm(*self.topology.divisors)
        self.encoder = ResidualEncoder(spatial_dims, in_channels, self.topology, norm, act)
        self.decoder = UNetDecoder(spatial_dims, self.topology, num_classes, norm, act)
        self.apply(init_he)
        self.apply(zero_last_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(b, c_in, *spatial) -> (b, k, *spatial), or a list of logits from full resolution down."""
        check_spatial_size("unet_resenc", x.shape[2:], self.topology.divisors)
        return self.decoder(self.encoder(x), self.deep_supervision)
