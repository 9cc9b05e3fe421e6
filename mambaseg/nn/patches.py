"""Patch embedding, merging and expanding for any ``spatial_dims``, on channels-last features.

Dimension letters: b batch, c channels, s the per-axis scale, *spatial the spatial axes.

Patch merging follows VMamba v0: the 2^spatial_dims neighbours of each 2x..x2 cell are concatenated along
channels with the first spatial axis varying fastest (in 2D: (0, 0), (1, 0), (0, 1), (1, 1) for offsets
along (h, w)), then ``norm`` and ``reduction`` to 2c. VMamba v2 embeds and down-samples with stride-2 3x..x3
convolutions, each followed by a LayerNorm (``ConvPatchEmbed``, ``ConvDownsample``). Patch expanding is
Swin-Unet's: a linear ``expand`` to s^spatial_dims x c_out channels, a pixel shuffle, then ``norm``.
"""

from __future__ import annotations

import torch
from torch import nn

from mambaseg.nn.factories import conv_type


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(b, c, *spatial) -> (b, *spatial, c)."""
    return x.movedim(1, -1)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(b, *spatial, c) -> (b, c, *spatial)."""
    return x.movedim(-1, 1)


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``proj`` (kernel = stride = patch size), then ``norm``.

    Args:
        spatial_dims: number of spatial axes.
        in_channels: input channels.
        embed_dim: output channels.
        patch_size: patch edge along every axis.
        norm: apply a LayerNorm to the tokens.
    """

    def __init__(self, spatial_dims: int, in_channels: int, embed_dim: int, patch_size: int, norm: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = conv_type(spatial_dims)(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c_in, *spatial) -> (b, *spatial / patch, embed_dim)."""
        bad = [s for s in x.shape[2:] if s % self.patch_size]
        if bad:
            raise ValueError(f"PatchEmbed: spatial size {tuple(x.shape[2:])} is not a multiple of {self.patch_size}")
        return self.norm(channels_last(self.proj(x)))


class ConvPatchEmbed(nn.Module):
    """VMamba v2's patch embedding: stride-2 3x..x3 convolutions, each followed by a LayerNorm.

    Patch size 4 (VMamba's): ``conv1`` to embed_dim / 2, ``norm1``, GELU, ``conv2`` to embed_dim, ``norm2``.
    Patch size 2: ``conv2`` from the input and ``norm2`` alone.

    Args:
        spatial_dims: number of spatial axes.
        in_channels: input channels.
        embed_dim: output channels.
        patch_size: 2 or 4.
    """

    def __init__(self, spatial_dims: int, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        if patch_size not in (2, 4):
            raise ValueError(f"ConvPatchEmbed: patch_size must be 2 or 4, got {patch_size}")
        self.patch_size = patch_size
        conv = conv_type(spatial_dims)
        self.conv1 = self.norm1 = self.act = None
        if patch_size == 4:
            self.conv1 = conv(in_channels, embed_dim // 2, kernel_size=3, stride=2, padding=1)
            self.norm1 = nn.LayerNorm(embed_dim // 2)
            self.act = nn.GELU()
            in_channels = embed_dim // 2
        self.conv2 = conv(in_channels, embed_dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c_in, *spatial) -> (b, *spatial / patch, embed_dim)."""
        if any(s % self.patch_size for s in x.shape[2:]):
            raise ValueError(
                f"ConvPatchEmbed: spatial size {tuple(x.shape[2:])} is not a multiple of {self.patch_size}"
            )
        if self.conv1 is not None:
            x = channels_first(self.act(self.norm1(channels_last(self.conv1(x)))))  # (b, embed_dim / 2, *spatial / 2)
        return self.norm2(channels_last(self.conv2(x)))


class ConvDownsample(nn.Module):
    """Halve every spatial axis and double the channels: a stride-2 3x..x3 ``conv``, then ``norm`` (VMamba v2's).

    Args:
        dim: input channels c; the output has 2c.
        spatial_dims: number of spatial axes.
    """

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.conv = conv_type(spatial_dims)(dim, 2 * dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, *spatial, c) -> (b, *spatial / 2, 2c)."""
        spatial = x.shape[1:-1]
        if len(spatial) != self.spatial_dims or any(s % 2 for s in spatial):
            raise ValueError(
                f"ConvDownsample: needs {self.spatial_dims} even spatial sizes, got shape {tuple(x.shape)}"
            )
        return self.norm(channels_last(self.conv(channels_first(x))))


class PatchMerging(nn.Module):
    """Halve every spatial axis and double the channels (VMamba v0's PatchMerging2D in N-D).

    Args:
        dim: input channels c; the output has 2c.
        spatial_dims: number of spatial axes.
    """

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.norm = nn.LayerNorm(2**spatial_dims * dim)
        self.reduction = nn.Linear(2**spatial_dims * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, *spatial, c) -> (b, *spatial / 2, 2c)."""
        b, *spatial, c = x.shape
        if len(spatial) != self.spatial_dims or any(s % 2 for s in spatial):
            raise ValueError(f"PatchMerging: needs {self.spatial_dims} even spatial sizes, got shape {tuple(x.shape)}")
        halves = [s // 2 for s in spatial]
        x = x.reshape(b, *[v for h in halves for v in (h, 2)], c)  # (b, h0, 2, h1, 2, ..., c)
        cells = [1 + 2 * i for i in range(self.spatial_dims)]
        offsets = [2 + 2 * i for i in reversed(range(self.spatial_dims))]  # last axis slowest, first fastest
        x = x.permute(0, *cells, *offsets, 2 * self.spatial_dims + 1)  # (b, *halves, 2, ..., 2, c)
        x = x.reshape(b, *halves, 2**self.spatial_dims * c)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """Multiply every spatial axis by ``scale``: ``expand`` (linear), pixel shuffle, ``norm``.

    Args:
        dim: input channels.
        out_dim: output channels.
        spatial_dims: number of spatial axes.
        scale: per-axis upsampling factor.
    """

    def __init__(self, dim: int, out_dim: int, spatial_dims: int, scale: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.scale = scale
        self.out_dim = out_dim
        self.expand = nn.Linear(dim, scale**spatial_dims * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, *spatial, c) -> (b, *spatial * scale, out_dim)."""
        b, *spatial, _ = x.shape
        n, s = self.spatial_dims, self.scale
        x = self.expand(x).reshape(b, *spatial, *[s] * n, self.out_dim)  # (b, *spatial, s, ..., s, c_out)
        interleaved = [a for i in range(n) for a in (1 + i, 1 + n + i)]
        x = x.permute(0, *interleaved, 2 * n + 1)  # (b, spatial0, s, spatial1, s, ..., c_out)
        return self.norm(x.reshape(b, *[v * s for v in spatial], self.out_dim))
