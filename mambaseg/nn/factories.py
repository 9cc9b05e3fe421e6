"""Layer factories indexed by ``spatial_dims``, so that one class builds 2D and 3D networks."""

from __future__ import annotations

from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUT = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}


def _pick(table: dict[int, type], what: str, spatial_dims: int) -> type:
    if spatial_dims not in table:
        raise ValueError(f"{what}: spatial_dims must be one of {sorted(table)}, got {spatial_dims}")
    return table[spatial_dims]


def conv_type(spatial_dims: int) -> type[nn.Module]:
    return _pick(_CONV, "conv", spatial_dims)


def conv_transpose_type(spatial_dims: int) -> type[nn.Module]:
    return _pick(_CONV_TRANSPOSE, "transposed conv", spatial_dims)


def dropout_type(spatial_dims: int) -> type[nn.Module]:
    return _pick(_DROPOUT, "dropout", spatial_dims)


def make_norm(name: str, spatial_dims: int, channels: int) -> nn.Module:
    """``instance`` (affine, as nnU-Net), ``batch``, ``group`` (8 groups or fewer) or ``layer`` (channels-first)."""
    if name == "instance":
        return _pick(_INSTANCE_NORM, "instance norm", spatial_dims)(channels, eps=1e-5, affine=True)
    if name == "batch":
        return _pick(_BATCH_NORM, "batch norm", spatial_dims)(channels)
    if name == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if name == "layer":
        return nn.GroupNorm(1, channels)
    raise ValueError(f"unknown norm {name!r}; choose instance, batch, group or layer")


def make_activation(name: str) -> nn.Module:
    """``leakyrelu`` (slope 0.01, as nnU-Net), ``relu``, ``gelu`` or ``silu``."""
    table = {
        "leakyrelu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "relu": lambda: nn.ReLU(inplace=True),
        "gelu": nn.GELU,
        "silu": nn.SiLU,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(table)}")
    return table[name]()
