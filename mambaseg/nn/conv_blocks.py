"""Convolution blocks for any ``spatial_dims``: conv-norm-act, residual blocks, down- and upsampling.

The residual block follows nnU-Net's ``BasicBlockD`` (ResNet-D): conv-norm-act, conv-norm, add the
skip, act; the skip average-pools by the stride and projects with a 1x1 conv-norm when the shape
changes. ``skip="conv"`` gives U-Mamba's ``BasicResBlock`` instead: the skip is always a strided
1x1 conv with bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mambaseg.nn.factories import conv_transpose_type, conv_type, dropout_type, make_activation, make_norm

_AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def per_axis(value: int | Sequence[int], spatial_dims: int, what: str = "value") -> tuple[int, ...]:
    """An int repeated over the spatial axes, or a sequence checked to have one entry per axis."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ValueError(f"{what} {value} needs {spatial_dims} entries, one per spatial axis")
    return value


class ConvNormAct(nn.Module):
    """Conv, optional dropout, norm, optional activation (nnU-Net's ``ConvDropoutNormReLU``).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: per axis or one for all; padding keeps the size (before the stride).
        stride: per axis or one for all.
        norm: a ``make_norm`` name, or None for no norm.
        act: a ``make_activation`` name, or None for no activation.
        bias: conv bias.
        dropout: dropout probability after the conv (0 for none).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: str | None = "instance",
        act: str | None = "leakyrelu",
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kernel = per_axis(kernel_size, spatial_dims, "kernel_size")
        self.conv = conv_type(spatial_dims)(
            in_channels,
            out_channels,
            kernel,
            per_axis(stride, spatial_dims, "stride"),
            [k // 2 for k in kernel],
            bias=bias,
        )
        self.dropout = dropout_type(spatial_dims)(dropout) if dropout > 0 else nn.Identity()
        self.norm = make_norm(norm, spatial_dims, out_channels) if norm else nn.Identity()
        self.act = make_activation(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.dropout(self.conv(x))))


class StackedConvBlocks(nn.Sequential):
    """``n_convs`` ConvNormAct blocks; the first takes ``in_channels`` and the stride."""

    def __init__(
        self,
        n_convs: int,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: str = "instance",
        act: str = "leakyrelu",
        bias: bool = True,
    ) -> None:
        if n_convs < 1:
            raise ValueError(f"StackedConvBlocks needs at least one conv, got n_convs={n_convs}")
        super().__init__(
            *[
                ConvNormAct(
                    spatial_dims,
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel_size,
                    stride if i == 0 else 1,
                    norm,
                    act,
                    bias,
                )
                for i in range(n_convs)
            ]
        )


class ResidualBlock(nn.Module):
    """Two-conv residual block: ``BasicBlockD`` (``skip="pool"``) or U-Mamba's ``BasicResBlock`` (``skip="conv"``).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel of both convs.
        stride: stride of the first conv and the skip.
        norm: a ``make_norm`` name.
        act: a ``make_activation`` name.
        bias: bias of the two main convs.
        skip: ``"pool"``: identity, or avg-pool by the stride then 1x1 conv-norm (no bias) where the shape
            changes; ``"conv"``: always a strided 1x1 conv with bias, no norm.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: str = "instance",
        act: str = "leakyrelu",
        bias: bool = True,
        skip: str = "pool",
    ) -> None:
        super().__init__()
        stride = per_axis(stride, spatial_dims, "stride")
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, norm, act, bias)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, 1, norm, None, bias)
        self.act = make_activation(act)
        strided = any(s != 1 for s in stride)
        if skip == "conv":
            self.skip = conv_type(spatial_dims)(in_channels, out_channels, 1, stride)
        elif skip == "pool":
            ops: list[nn.Module] = []
            if strided:
                ops.append(_AVG_POOL[spatial_dims](stride, stride))
            if in_channels != out_channels:
                ops.append(ConvNormAct(spatial_dims, in_channels, out_channels, 1, 1, norm, None, bias=False))
            self.skip = nn.Sequential(*ops) if ops else nn.Identity()
        else:
            raise ValueError(f"ResidualBlock: skip must be 'pool' or 'conv', got {skip!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class StackedResidualBlocks(nn.Sequential):
    """``n_blocks`` residual blocks; the first takes ``in_channels``, the stride and ``first_skip``, the rest are
    ``BasicBlockD`` with identity skips."""

    def __init__(
        self,
        n_blocks: int,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: str = "instance",
        act: str = "leakyrelu",
        bias: bool = True,
        first_skip: str = "pool",
    ) -> None:
        if n_blocks < 1:
            raise ValueError(f"StackedResidualBlocks needs at least one block, got n_blocks={n_blocks}")
        super().__init__(
            *[
                ResidualBlock(
                    spatial_dims,
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel_size,
                    stride if i == 0 else 1,
                    norm,
                    act,
                    bias,
                    first_skip if i == 0 else "pool",
                )
                for i in range(n_blocks)
            ]
        )


class Downsample(nn.Module):
    """Strided-conv downsampling: optional norm, then a conv with kernel = stride = ``factor``.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        factor: per axis or one for all.
        norm: a norm module applied first (SegMamba's instance norm), or None.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        factor: int | Sequence[int] = 2,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        factor = per_axis(factor, spatial_dims, "factor")
        self.norm = norm if norm is not None else nn.Identity()
        self.conv = conv_type(spatial_dims)(in_channels, out_channels, factor, factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class Upsample(nn.Module):
    """Upsampling by ``factor``: a transposed conv with kernel = stride (``mode="transposed"``, nnU-Net), or
    nearest-neighbour interpolation followed by a 1x1 conv (``mode="nearest"``, U-Mamba).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        factor: per axis or one for all.
        mode: ``"transposed"`` or ``"nearest"``.
        bias: conv bias.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        factor: int | Sequence[int] = 2,
        mode: str = "transposed",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.factor = per_axis(factor, spatial_dims, "factor")
        self.mode = mode
        if mode == "transposed":
            self.conv = conv_transpose_type(spatial_dims)(
                in_channels, out_channels, self.factor, self.factor, bias=bias
            )
        elif mode == "nearest":
            self.conv = conv_type(spatial_dims)(in_channels, out_channels, 1, bias=bias)
        else:
            raise ValueError(f"Upsample: mode must be 'transposed' or 'nearest', got {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=[float(f) for f in self.factor], mode="nearest")
        return self.conv(x)


def init_he(module: nn.Module, neg_slope: float = 1e-2) -> None:
    """nnU-Net's ``InitWeights_He``: Kaiming-normal weights and zero biases for 2D/3D (transposed) convs.

    Use as ``network.apply(init_he)``. Conv1d (as in Mamba layers) is left alone.
    """
    if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        nn.init.kaiming_normal_(module.weight, a=neg_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def zero_last_norm(module: nn.Module) -> None:
    """nnU-Net ResEnc's ``init_last_bn_before_add_to_0``: a residual block starts as its skip.

    Use as ``network.apply(zero_last_norm)``; zeroes the affine parameters of each block's second norm.
    """
    if isinstance(module, ResidualBlock):
        norm = module.conv2.norm
        if getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)
            nn.init.zeros_(norm.bias)
