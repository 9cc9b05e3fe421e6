"""Swin-UMamba (a VSS encoder with a CNN decoder) and Swin-UMamba† (``swin_umamba_d``, a VSS decoder).

Dimension letters: b batch, c channels, k classes, *spatial the spatial axes.

After Liu et al., "Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining" (MICCAI 2024). Both hold
their encoder as ``encoder`` (a ``VSSEncoder``, VMamba v0's layout or, with ``vss_version="v2"``, v2's), so
VMamba checkpoints load with ``mambaseg.networks.load_pretrained``. Swin-UMamba's own stem (stride 2, to
``feature_size`` channels) replaces the first half of VMamba's patch embedding: in v0 the checkpoint's patch
projection is not taken; in v2 its first convolution and norm are not, and its second convolution is taken when
``feature_size`` is half the first stage's width (48 for the tiny and small releases, 64 for base).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn

from mambaseg.networks.footprint import leaf_footprint
from mambaseg.networks.registry import register
from mambaseg.networks.topology import fixed_min_input_size, fixed_topology
from mambaseg.networks.vmamba_encoder import VSSEncoder, check_input_size, vss_layout
from mambaseg.nn.factories import conv_type, make_norm
from mambaseg.nn.patches import PatchExpand, channels_first
from mambaseg.nn.ss_nd import VSSStage, drop_path_rates, vss_init

_TINY = {"dims": 4, "depths": (1, 1), "d_state": 4}
C_LEAF = 0.9
"""Bytes per 4-byte leaf output element of Swin-UMamba (``networks.footprint.leaf_footprint``), fitted to measured
peaks of a narrow variant at 32^3-64^3 (0.88-0.93): coarse."""
C_LEAF_D = 2.1
"""The same for Swin-UMamba† (one measurement, 2.1): coarse."""


def _stem_skip(vss_version: str, feature_size: int, first_dim: int) -> tuple[str, ...]:
    """Checkpoint keys (``VSSEncoder`` names) Swin-UMamba does not take: the patch embedding its stem replaces."""
    if vss_version == "v0":
        return ("patch_embed.proj.",)  # VMamba embeds RGB with patch 4; here the stem's channels with patch 2
    first_half = ("patch_embed.conv1.", "patch_embed.norm1.")
    return first_half if feature_size == first_dim // 2 else (*first_half, "patch_embed.conv2.weight")


@register(
    "swin_umamba",
    topology=fixed_topology("swin_umamba"),
    memory=leaf_footprint("swin_umamba", C_LEAF),
    optimizer="adamw_swin_umamba",
    min_input_size=fixed_min_input_size("swin_umamba"),
    vss_encoder=True,
    tiny={**_TINY, "feature_size": 4},
)
class SwinUMamba(nn.Module):
    """Swin-UMamba: stem, VSS encoder (patch 2), UNETR-style residual CNN decoder with deep supervision.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        feature_size: channels of the stem and of the full-resolution decoder level.
        dims: channels per encoder stage, or the first stage's (doubled per stage).
        depths: VSS blocks per encoder stage.
        d_state: state size of the selective scans.
        ssm_ratio: inner channels / channels of the selective scans.
        drop_path_rate: stochastic depth of the encoder's last block.
        norm_name: MONAI norm of the CNN blocks.
        orders: scan-order set of the VSS blocks.
        deep_supervision: return one output per decoder level, full resolution first.
        vss_version: VMamba layout of the encoder, ``v0`` or ``v2`` (``networks.vmamba_encoder``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        feature_size: int = 48,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 9, 2),
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        drop_path_rate: float = 0.2,
        norm_name: str = "instance",
        orders: str = "cross",
        deep_supervision: bool = False,
        vss_version: str = "v0",
    ) -> None:
        super().__init__()
        vss_layout(vss_version, "swin_umamba")
        self.deep_supervision = deep_supervision
        conv = conv_type(spatial_dims)
        self.stem = nn.Sequential(
            conv(in_channels, feature_size, kernel_size=7, stride=2, padding=3),
            make_norm("instance", spatial_dims, feature_size),
        )
        self.encoder = VSSEncoder(
            spatial_dims,
            feature_size,
            dims,
            depths,
            patch_size=2,
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            drop_path_rate=drop_path_rate,
            orders=orders,
            vss_version=vss_version,
        )
        self.pretrained_skip = _stem_skip(vss_version, feature_size, self.encoder.dims[0])
        self.input_size_divisor = 2 * self.encoder.stride
        feats = [feature_size, *self.encoder.dims]  # channels per level, full resolution first
        stages = len(depths)

        def basic(c_in: int, c_out: int) -> nn.Module:
            return UnetrBasicBlock(spatial_dims, c_in, c_out, 3, 1, norm_name, res_block=True)

        def up(c_in: int, c_out: int) -> nn.Module:
            return UnetrUpBlock(spatial_dims, c_in, c_out, 3, 2, norm_name, res_block=True)

        self.skips = nn.ModuleList(
            [basic(in_channels, feature_size)] + [basic(feats[i], feats[i + 1]) for i in range(stages)]
        )
        self.ups = nn.ModuleList(
            [up(feats[-1], feats[-1])] + [up(feats[j + 1], feats[j]) for j in reversed(range(stages))]
        )
        self.head_block = basic(feature_size, feature_size)
        self.out_layers = nn.ModuleList(UnetOutBlock(spatial_dims, feats[i], num_classes) for i in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(b, c_in, *spatial) -> (b, k, *spatial), or a list of outputs from full resolution down."""
        check_input_size("swin_umamba", x.shape[2:], self.input_size_divisor)
        stem = self.stem(x)  # (b, feature_size, *spatial / 2)
        stages = [channels_first(f) for f in self.encoder(stem)]  # (b, c_i, *spatial / 2^(i + 2))
        skips = [block(level) for block, level in zip(self.skips, [x, stem, *stages[:-1]], strict=True)]
        y = stages[-1]
        decoded = []
        for block, skip in zip(self.ups, reversed(skips), strict=True):
            y = block(y, skip)
            decoded.append(y)
        levels = [self.head_block(decoded[-1]), *decoded[-2::-1]]  # full resolution first
        if not self.deep_supervision:
            return self.out_layers[0](levels[0])
        return [head(level) for head, level in zip(self.out_layers, levels, strict=False)]


@register(
    "swin_umamba_d",
    topology=fixed_topology("swin_umamba_d"),
    memory=leaf_footprint("swin_umamba_d", C_LEAF_D),
    optimizer="adamw_swin_umamba",
    min_input_size=fixed_min_input_size("swin_umamba_d"),
    vss_encoder=True,
    tiny={**_TINY, "decoder_depth": 1},
)
class SwinUMambaD(nn.Module):
    """Swin-UMamba†: VSS encoder (patch 4) and a VSS decoder (patch expanding, skip fusion, VSS blocks).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        dims: channels per encoder stage, or the first stage's (doubled per stage).
        depths: VSS blocks per encoder stage.
        decoder_depth: VSS blocks per decoder stage.
        patch_size: edge of the embedding patches (and of the final expansion).
        d_state: state size of the selective scans.
        ssm_ratio: inner channels / channels of the selective scans.
        drop_path_rate: stochastic depth of the encoder's last and the decoder's first block.
        orders: scan-order set of the VSS blocks.
        deep_supervision: return one output per decoder level, full resolution first.
        vss_version: VMamba layout of the encoder and of the decoder's blocks, ``v0`` or ``v2``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 9, 2),
        decoder_depth: int = 2,
        patch_size: int = 4,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        drop_path_rate: float = 0.2,
        orders: str = "cross",
        deep_supervision: bool = False,
        vss_version: str = "v0",
    ) -> None:
        super().__init__()
        block = vss_layout(vss_version, "swin_umamba_d").block
        self.deep_supervision = deep_supervision
        self.encoder = VSSEncoder(
            spatial_dims,
            in_channels,
            dims,
            depths,
            patch_size,
            d_state,
            ssm_ratio,
            drop_path_rate=drop_path_rate,
            orders=orders,
            vss_version=vss_version,
        )
        self.input_size_divisor = self.encoder.stride
        d = self.encoder.dims
        targets = list(reversed(range(len(d) - 1)))  # decoder stage i works at encoder level targets[i]
        rates = drop_path_rates([decoder_depth] * len(targets), drop_path_rate, falling=True)
        conv = conv_type(spatial_dims)
        self.expand_layers = nn.ModuleList(PatchExpand(d[t + 1], d[t], spatial_dims) for t in targets)
        self.expand_layers.append(PatchExpand(d[0], d[0], spatial_dims, scale=patch_size))
        self.concat_back_dim = nn.ModuleList(nn.Linear(2 * d[t], d[t]) for t in targets)
        self.stages = nn.ModuleList(
            VSSStage(
                d[t], spatial_dims, decoder_depth, rate, d_state=d_state, ssm_ratio=ssm_ratio, orders=orders, **block
            )
            for t, rate in zip(targets, rates, strict=True)
        )
        self.seg_layers = nn.ModuleList(conv(d[t], num_classes, kernel_size=1) for t in [*targets, 0])
        for module in (self.expand_layers, self.concat_back_dim, self.stages):
            module.apply(vss_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(b, c_in, *spatial) -> (b, k, *spatial), or a list of outputs from full resolution down."""
        check_input_size("swin_umamba_d", x.shape[2:], self.input_size_divisor)
        features = self.encoder(x)  # channels last, finest first
        y = features[-1]
        outputs = []
        decoder = zip(self.expand_layers, self.concat_back_dim, self.stages, features[-2::-1], strict=False)
        for i, (expand, fuse, stage, skip) in enumerate(decoder):
            y = stage(fuse(torch.cat([expand(y), skip], dim=-1)))  # (b, *spatial_i, c_i)
            if self.deep_supervision:
                outputs.append(self.seg_layers[i](channels_first(y)))
        final = self.seg_layers[-1](channels_first(self.expand_layers[-1](y)))  # (b, k, *spatial)
        return [final, *reversed(outputs)] if self.deep_supervision else final
