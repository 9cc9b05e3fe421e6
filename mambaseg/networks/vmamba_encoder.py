"""The VSS encoder: VMamba's backbone (v0 or v2) for any ``spatial_dims``, and a classifier around it.

Dimension letters: b batch, c channels, *spatial the spatial axes.

``vss_version`` picks the layout of VMamba's releases:

- ``v0`` (the first releases, ``vssm_tiny`` ...): patch embedding by one convolution (kernel = stride = patch),
  gated SS2D blocks, patch merging. The state-dict keys are v0's (``patch_embed.proj``, ``patch_embed.norm``,
  ``layers.{i}.blocks.{j}.ln_1`` / ``.self_attention.*``, ``layers.{i}.downsample.reduction`` / ``.norm``), so
  v0 checkpoints load into ``VMambaClassifier`` as they are;
- ``v2`` (the ``vssm1`` releases, VMamba v2 and later): a two-convolution stem (``patch_embed.conv1`` / ``norm1`` /
  ``conv2`` / ``norm2``), blocks of an ungated SS2D without convolution bias followed by an MLP (``norm2``,
  ``mlp.fc1``, ``mlp.fc2``; d_state 1 in the releases), and convolutional down-sampling
  (``layers.{i}.downsample.conv`` / ``.norm``). ``networks.load_pretrained`` maps the official key names.

Networks hold a ``VSSEncoder`` under ``encoder.``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mambaseg.nn.patches import ConvDownsample, ConvPatchEmbed, PatchEmbed, PatchMerging
from mambaseg.nn.ss_nd import VSSStage, drop_path_rates, vss_init


@dataclass(frozen=True)
class VSSLayout:
    """What sets a VMamba layout apart: its patch embedding, its down-sampling and its block options.

    Attributes:
        embed: ``(spatial_dims, in_channels, embed_dim, patch_size) -> module``.
        downsample: ``(dim, spatial_dims) -> module`` halving every axis and doubling the channels.
        block: ``VSSBlock`` / ``SSND`` options besides d_state, ssm_ratio and orders.
    """

    embed: Callable[[int, int, int, int], nn.Module]
    downsample: Callable[[int, int], nn.Module]
    block: Mapping[str, Any]


VSS_LAYOUTS: dict[str, VSSLayout] = {
    "v0": VSSLayout(PatchEmbed, PatchMerging, {}),
    "v2": VSSLayout(ConvPatchEmbed, ConvDownsample, {"gated": False, "conv_bias": False, "mlp_ratio": 4.0}),
}
"""The layouts by ``vss_version``; v2's blocks are VMamba's SS2D of forward type ``v05_noz`` and an MLP of ratio 4."""


def vss_layout(name: str, owner: str) -> VSSLayout:
    """The layout ``name`` (``v0`` or ``v2``); ValueError naming ``owner`` and the value otherwise."""
    if name not in VSS_LAYOUTS:
        raise ValueError(f"{owner}: vss_version must be one of {sorted(VSS_LAYOUTS)}, got {name!r}")
    return VSS_LAYOUTS[name]


def stage_dims(dims: int | Sequence[int], num_stages: int) -> list[int]:
    """Channels per stage: an int is the first stage's, doubled at every stage."""
    if isinstance(dims, int):
        return [dims * 2**i for i in range(num_stages)]
    if len(dims) != num_stages:
        raise ValueError(f"got {len(dims)} stage widths {tuple(dims)} for {num_stages} stages")
    return list(dims)


class VSSEncoder(nn.Module):
    """Patch embedding, then VSS stages, each but the last ending in a down-sampling (patch merging in v0).

    Args:
        spatial_dims: number of spatial axes.
        in_channels: input channels.
        dims: channels per stage, or the first stage's (doubled per stage); each stage must double.
        depths: VSS blocks per stage.
        patch_size: edge of the embedding patches (2 or 4 in v2).
        d_state: state size of the selective scans.
        ssm_ratio: inner channels / channels in SS-ND.
        drop_path_rate: stochastic depth of the last block (rising linearly from 0).
        orders: scan-order set of SS-ND.
        vss_version: VMamba layout, ``v0`` or ``v2`` (see the module doc).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 9, 2),
        patch_size: int = 4,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        drop_path_rate: float = 0.2,
        orders: str = "cross",
        vss_version: str = "v0",
    ) -> None:
        super().__init__()
        layout = vss_layout(vss_version, "VSSEncoder")
        self.dims = dims = stage_dims(dims, len(depths))
        if any(b != 2 * a for a, b in zip(dims, dims[1:], strict=False)):
            raise ValueError(f"VSSEncoder: down-sampling doubles the channels, so dims {tuple(dims)} must double")
        self.spatial_dims = spatial_dims
        self.patch_size = patch_size
        self.vss_version = vss_version
        self.patch_embed = layout.embed(spatial_dims, in_channels, dims[0], patch_size)
        rates = drop_path_rates(depths, drop_path_rate)
        self.layers = nn.ModuleList(
            VSSStage(
                dim,
                spatial_dims,
                depth,
                rate,
                downsample=layout.downsample(dim, spatial_dims) if i < len(depths) - 1 else None,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                orders=orders,
                **layout.block,
            )
            for i, (dim, depth, rate) in enumerate(zip(dims, depths, rates, strict=True))
        )
        self.apply(vss_init)

    @property
    def stride(self) -> int:
        """Downsampling of the last stage relative to the input, per axis."""
        return self.patch_size * 2 ** (len(self.layers) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(b, c_in, *spatial) -> per stage, the blocks' output before merging (b, *spatial / stride_i, c_i)."""
        x = self.patch_embed(x)
        features = []
        for layer in self.layers:
            x = layer.forward_blocks(x)
            features.append(x)
            if layer.downsample is not None:
                x = layer.downsample(x)
        return features


class VMambaClassifier(VSSEncoder):
    """``VSSEncoder`` with VMamba's classification head: ``norm``, global average pooling, ``head``.

    Args:
        spatial_dims: number of spatial axes.
        in_channels: input channels.
        num_classes: output classes.
        **encoder_kwargs: options of ``VSSEncoder``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, **encoder_kwargs) -> None:
        super().__init__(spatial_dims, in_channels, **encoder_kwargs)
        self.norm = nn.LayerNorm(self.dims[-1])
        self.head = nn.Linear(self.dims[-1], num_classes)
        vss_init(self.norm)
        vss_init(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c_in, *spatial) -> class logits (b, num_classes)."""
        last = super().forward(x)[-1]  # (b, *spatial, c)
        pooled = self.norm(last).flatten(1, -2).mean(dim=1)  # (b, c)
        return self.head(pooled)


def check_input_size(network: str, spatial: Sequence[int], stride: int) -> None:
    """Raise ValueError unless every spatial size is a multiple of the network's total ``stride``."""
    if any(s % stride or s == 0 for s in spatial):
        raise ValueError(
            f"{network}: input spatial size {tuple(spatial)} does not fit its strides; every spatial size must be "
            f"a multiple of {stride} (e.g. {stride}, {2 * stride}, {3 * stride}, ...)"
        )
