"""SegMamba (Xing et al., 2024) for 2D and 3D, as in ge-xing/SegMamba's ``model_segmamba/segmamba.py``.

Dimension letters: b batch, c channels, k classes; stage i works at 1 / 2^(i+1) of the input size.

Encoder: a stride-2 stem conv (kernel 7), then per stage a gated spatial conv (GSC) and ``depths[i]``
tri-orientated Mamba blocks, with instance norm + stride-2 conv between stages; each stage's output
goes through instance norm and a channel MLP (1x1 conv to 2c, GELU, 1x1 conv back). Decoder (UNETR
style, MONAI blocks): a residual block on the input and on every stage output but the last (each
widening to the next stage's channels), one on the last stage widening to ``hidden_size``, then
transposed-conv up blocks with skip concatenation back to full resolution, a residual block and a
1x1 head. The released network has 4 stages (48, 96, 192, 384) and hidden size 768; here the
number of stages is ``len(features_per_stage)`` and inputs must be multiples of 2^stages.

Deep supervision (not in the release) adds 1x1 heads on the up blocks at 1/2, 1/4, ... resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from monai.networks.layers.factories import Norm
from torch import nn

from mambaseg.networks.footprint import leaf_footprint
from mambaseg.networks.registry import register
from mambaseg.networks.topology import fixed_min_input_size, fixed_topology
from mambaseg.networks.unet import check_spatial_size
from mambaseg.nn.conv_blocks import Downsample
from mambaseg.nn.factories import conv_type
from mambaseg.nn.gsc import GatedSpatialConv
from mambaseg.nn.tri_orient import TriOrientedMambaBlock


class ChannelMlp(nn.Module):
    """1x1 conv to ``hidden`` channels, GELU, 1x1 conv back: (b, c, *spatial) -> (b, c, *spatial)."""

    def __init__(self, spatial_dims: int, channels: int, hidden: int) -> None:
        super().__init__()
        conv = conv_type(spatial_dims)
        self.fc1 = conv(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = conv(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SegMambaEncoder(nn.Module):
    """Stem, then GSC + tri-orientated Mamba blocks per stage; returns every stage's normalised, MLP'd output."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int],
        depths: Sequence[int],
        stem_kernel_size: int = 7,
        **mamba_kwargs,
    ) -> None:
        super().__init__()
        norm = Norm[Norm.INSTANCE, spatial_dims]
        stem = conv_type(spatial_dims)(in_channels, features[0], stem_kernel_size, 2, stem_kernel_size // 2)
        self.downsample = nn.ModuleList(
            [stem]
            + [
                Downsample(spatial_dims, features[i], features[i + 1], 2, norm(features[i]))
                for i in range(len(features) - 1)
            ]
        )
        self.gscs = nn.ModuleList(GatedSpatialConv(spatial_dims, f) for f in features)
        self.stages = nn.ModuleList(
            nn.Sequential(*[TriOrientedMambaBlock(f, spatial_dims, **mamba_kwargs) for _ in range(depth)])
            for f, depth in zip(features, depths, strict=True)
        )
        self.out_norms = nn.ModuleList(norm(f) for f in features)
        self.mlps = nn.ModuleList(ChannelMlp(spatial_dims, f, 2 * f) for f in features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(b, c_in, *spatial) -> one (b, c_i, *spatial / 2^(i+1)) per stage."""
        outs = []
        for down, gsc, stage, norm, mlp in zip(
            self.downsample, self.gscs, self.stages, self.out_norms, self.mlps, strict=True
        ):
            x = stage(gsc(down(x)))
            outs.append(mlp(norm(x)))
        return outs


C_LEAF = 1.0
"""Bytes per 4-byte leaf output element (``networks.footprint.leaf_footprint``), fitted to measured peaks of a
narrow variant at 32^3-64^3 (0.92-1.03): coarse."""


@register(
    "segmamba",
    topology=fixed_topology("segmamba"),
    memory=leaf_footprint("segmamba", C_LEAF),
    optimizer="sgd_poly",
    min_input_size=fixed_min_input_size("segmamba"),
    tiny={"features_per_stage": (2, 4), "depths": 1, "hidden_size": 4},
)
class SegMamba(nn.Module):
    """SegMamba: GSC + tri-orientated Mamba encoder with a UNETR-style decoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels k.
        features_per_stage: channels per encoder stage (release: 48, 96, 192, 384).
        depths: tri-orientated Mamba blocks per stage, or one number for all (release: 2).
        hidden_size: channels of the decoder's bottleneck block (release: 768).
        stem_kernel_size: kernel of the stride-2 stem conv (release: 7).
        deep_supervision: return one output per decoder resolution (full first) instead of one tensor.
        norm_name: MONAI norm name of the decoder blocks.
        d_state: Mamba state size.
        d_conv: Mamba causal conv width.
        expand: Mamba expansion.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        features_per_stage: Sequence[int] = (48, 96, 192, 384),
        depths: int | Sequence[int] = 2,
        hidden_size: int = 768,
        stem_kernel_size: int = 7,
        deep_supervision: bool = False,
        norm_name: str = "instance",
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        features = tuple(features_per_stage)
        n = len(features)
        depths = (depths,) * n if isinstance(depths, int) else tuple(depths)
        if n < 1 or len(depths) != n:
            raise ValueError(f"segmamba: depths {depths} needs one entry per stage of features_per_stage {features}")
        self.deep_supervision = deep_supervision
        self.divisors = (2**n,) * spatial_dims
        self.input_size_divisor = 2**n
        self.encoder = SegMambaEncoder(
            spatial_dims, in_channels, features, depths, stem_kernel_size, d_state=d_state, d_conv=d_conv, expand=expand
        )
        block = {"spatial_dims": spatial_dims, "kernel_size": 3, "norm_name": norm_name, "res_block": True}
        skip_in = (in_channels, *features[:-1])
        self.skip_blocks = nn.ModuleList(
            UnetrBasicBlock(in_channels=c_in, out_channels=c_out, stride=1, **block)
            for c_in, c_out in zip(skip_in, features, strict=True)
        )
        self.bottleneck = UnetrBasicBlock(in_channels=features[-1], out_channels=hidden_size, stride=1, **block)
        up_in = (*features[1:], hidden_size)
        self.ups = nn.ModuleList(
            UnetrUpBlock(in_channels=c_in, out_channels=c_out, upsample_kernel_size=2, **block)
            for c_in, c_out in zip(up_in, features, strict=True)
        )
        self.final = UnetrBasicBlock(in_channels=features[0], out_channels=features[0], stride=1, **block)
        self.out = UnetOutBlock(spatial_dims, features[0], num_classes)
        self.ds_heads = nn.ModuleList(UnetOutBlock(spatial_dims, f, num_classes) for f in features[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(b, c_in, *spatial) -> (b, k, *spatial), or a list of logits from full resolution down."""
        check_spatial_size("segmamba", x.shape[2:], self.divisors)
        outs = self.encoder(x)
        skips = [self.skip_blocks[0](x)] + [blk(o) for blk, o in zip(self.skip_blocks[1:], outs[:-1], strict=True)]
        y = self.bottleneck(outs[-1])
        decoded = []
        for up, skip in zip(reversed(self.ups), reversed(skips), strict=True):
            y = up(y, skip)
            decoded.append(y)
        logits = self.out(self.final(y))
        if not self.deep_supervision:
            return logits
        deeper = decoded[-2::-1]  # up-block outputs at 1/2, 1/4, ...
        return [logits] + [head(d) for head, d in zip(self.ds_heads, deeper, strict=True)]
