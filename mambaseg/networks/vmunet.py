"""VM-UNet: a VSS encoder and a mirrored VSS decoder with additive skips.

Dimension letters: b batch, c channels, k classes, *spatial the spatial axes.

After Ruan et al., "VM-UNet: Vision Mamba UNet for medical image segmentation" (2024). Decoder stage i
(deepest first) adds the encoder's input to its mirror stage, expands the patches (every stage but the
first), then runs VSS blocks; a final x``patch_size`` expansion and a 1x1 convolution give the logits.
``vss_version`` picks VMamba's v0 or v2 layout for the encoder and the decoder's VSS blocks alike, so that
pretrained encoder blocks also initialise their mirrored decoder blocks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from mambaseg.networks.footprint import leaf_footprint
from mambaseg.networks.registry import register
from mambaseg.networks.topology import fixed_min_input_size, fixed_topology
from mambaseg.networks.vmamba_encoder import VSSEncoder, check_input_size, vss_layout
from mambaseg.nn.factories import conv_type
from mambaseg.nn.patches import PatchExpand, channels_first
from mambaseg.nn.ss_nd import VSSStage, drop_path_rates, vss_init

_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")


C_LEAF = 2.5
"""Bytes per 4-byte leaf output element (``networks.footprint.leaf_footprint``), fitted to one measured peak of a
narrow variant: coarse."""


@register(
    "vmunet",
    topology=fixed_topology("vmunet"),
    memory=leaf_footprint("vmunet", C_LEAF),
    optimizer="adamw_vmunet",
    min_input_size=fixed_min_input_size("vmunet"),
    vss_encoder=True,
    tiny={"dims": 4, "depths": (1, 1), "decoder_depths": (1, 1), "d_state": 4},
)
class VMUNet(nn.Module):
    """VM-UNet for 2D or 3D inputs.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        dims: channels per encoder stage, or the first stage's (doubled per stage); the decoder mirrors them.
        depths: VSS blocks per encoder stage.
        decoder_depths: VSS blocks per decoder stage, deepest first.
        patch_size: edge of the embedding patches (and of the final expansion).
        d_state: state size of the selective scans.
        ssm_ratio: inner channels / channels of the selective scans.
        drop_path_rate: stochastic depth of the encoder's last and the decoder's first block.
        orders: scan-order set of the VSS blocks.
        deep_supervision: also return 1x1-convolution outputs of the decoder stages, full resolution first.
        vss_version: VMamba layout of the encoder and of the decoder's blocks, ``v0`` or ``v2``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        decoder_depths: Sequence[int] = (2, 2, 2, 1),
        patch_size: int = 4,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        drop_path_rate: float = 0.2,
        orders: str = "cross",
        deep_supervision: bool = False,
        vss_version: str = "v0",
    ) -> None:
        super().__init__()
        if len(decoder_depths) != len(depths):
            raise ValueError(
                f"vmunet: decoder_depths {tuple(decoder_depths)} need one entry per stage of {tuple(depths)}"
            )
        block = vss_layout(vss_version, "vmunet").block
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
        up_dims = self.encoder.dims[::-1]  # deepest first
        rates = drop_path_rates(decoder_depths, drop_path_rate, falling=True)
        self.layers_up = nn.ModuleList(
            VSSStage(dim, spatial_dims, depth, rate, d_state=d_state, ssm_ratio=ssm_ratio, orders=orders, **block)
            for dim, depth, rate in zip(up_dims, decoder_depths, rates, strict=True)
        )
        self.upsamples = nn.ModuleList(
            PatchExpand(a, b, spatial_dims) for a, b in zip(up_dims, up_dims[1:], strict=False)
        )
        out_dim = max(1, up_dims[-1] // patch_size)
        self.final_up = PatchExpand(up_dims[-1], out_dim, spatial_dims, scale=patch_size)
        conv = conv_type(spatial_dims)
        self.final_conv = conv(out_dim, num_classes, kernel_size=1)
        self.ds_heads = nn.ModuleList(conv(c, num_classes, kernel_size=1) for c in up_dims[:0:-1])  # finest first
        for module in (self.layers_up, self.upsamples, self.final_up):
            module.apply(vss_init)

    def pretrained_targets(self, key: str) -> list[str]:
        """Where the VMamba encoder key ``key`` goes: the encoder, and for VSS blocks also the mirrored decoder stage.

        As VM-UNet's own ``load_from``: encoder stage i's block j also initialises decoder stage (S - 1 - i)'s
        block j when that block exists.
        """
        targets = [f"encoder.{key}"]
        match = _BLOCK_KEY.match(key)
        if match:
            stage, block, rest = int(match[1]), int(match[2]), match[3]
            mirror = len(self.layers_up) - 1 - stage
            if 0 <= mirror < len(self.layers_up) and block < len(self.layers_up[mirror].blocks):
                targets.append(f"layers_up.{mirror}.blocks.{block}.{rest}")
        return targets

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(b, c_in, *spatial) -> (b, k, *spatial), or a list of outputs from full resolution down."""
        check_input_size("vmunet", x.shape[2:], self.input_size_divisor)
        x = self.encoder.patch_embed(x)  # (b, *spatial / patch, c_0)
        skips = []
        for layer in self.encoder.layers:
            skips.append(x)
            x = layer(x)
        stage_outputs = []
        for i, stage in enumerate(self.layers_up):
            if i > 0:
                x = self.upsamples[i - 1](x + skips[-i])
            x = stage(x)  # (b, *spatial_i, c_i)
            stage_outputs.append(x)
        final = self.final_conv(channels_first(self.final_up(x)))  # (b, k, *spatial)
        if not self.deep_supervision:
            return final
        finest_first = stage_outputs[:0:-1]
        return [final, *(head(channels_first(y)) for head, y in zip(self.ds_heads, finest_first, strict=True))]
