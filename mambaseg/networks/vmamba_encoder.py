"""The VSS encoder: VMamba's (v0) backbone for any ``spatial_dims``, and a classifier around it.

Dimension letters: b batch, c channels, *spatial the spatial axes.

The state-dict keys are VMamba v0's (``patch_embed.proj``, ``patch_embed.norm``,
``layers.{i}.blocks.{j}.ln_1`` / ``.self_attention.*``, ``layers.{i}.downsample.*``), so the official
classification checkpoints load into ``VMambaClassifier`` as they are and into networks that hold a
``VSSEncoder`` under ``encoder.``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mambaseg.nn.patches import PatchEmbed, PatchMerging
from mambaseg.nn.ss_nd import VSSStage, drop_path_rates, vss_init


def stage_dims(dims: int | Sequence[int], num_stages: int) -> list[int]:
    """Channels per stage: an int is the first stage's, doubled at every stage."""
    if isinstance(dims, int):
        return [dims * 2**i for i in range(num_stages)]
    if len(dims) != num_stages:
        raise ValueError(f"got {len(dims)} stage widths {tuple(dims)} for {num_stages} stages")
    return list(dims)


class VSSEncoder(nn.Module):
    """Patch embedding, then VSS stages, each but the last ending in patch merging.

    Args:
        spatial_dims: number of spatial axes.
        in_channels: input channels.
        dims: channels per stage, or the first stage's (doubled per stage); each stage must double.
        depths: VSS blocks per stage.
        patch_size: edge of the embedding patches.
        d_state: state size of the selective scans.
        ssm_ratio: inner channels / channels in SS-ND.
        drop_path_rate: stochastic depth of the last block (rising linearly from 0).
        orders: scan-order set of SS-ND.
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
    ) -> None:
        super().__init__()
        self.dims = dims = stage_dims(dims, len(depths))
        if any(b != 2 * a for a, b in zip(dims, dims[1:], strict=False)):
            raise ValueError(f"VSSEncoder: patch merging doubles the channels, so dims {tuple(dims)} must double")
        self.spatial_dims = spatial_dims
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(spatial_dims, in_channels, dims[0], patch_size)
        rates = drop_path_rates(depths, drop_path_rate)
        self.layers = nn.ModuleList(
            VSSStage(
                dim,
                spatial_dims,
                depth,
                rate,
                downsample=PatchMerging(dim, spatial_dims) if i < len(depths) - 1 else None,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                orders=orders,
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
    """``VSSEncoder`` with VMamba v0's classification head: ``norm``, global average pooling, ``head``.

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
