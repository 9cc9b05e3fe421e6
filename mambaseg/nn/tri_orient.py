"""SegMamba's tri-orientated Mamba (its mamba_ssm fork's ``bimamba_type="v3"``) for any ``spatial_dims``.

Dimension letters: b batch, c channels (= m, the token width), l = prod(spatial) tokens,
d inner width (expand * m), n state size.

One ``in_proj`` and one ``out_proj`` are shared by three directions, each with its own conv1d,
x_proj, dt_proj, A_log and D (names as in the fork: no suffix forward, ``_b`` reversed, ``_s`` the
slice-interleaved scan). Each direction runs on the whole in_proj output (x and the gate z) laid out
in its scan order; the three gated outputs are put back in place and summed (not averaged), then
projected by out_proj. The orders come from ``scan_orders("tri", spatial_dims)``, so any spatial
size works; the fork's ``nslices`` is the size of the first spatial axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mambaseg.nn.mamba_layer import (
    causal_depthwise_conv,
    init_dt_proj,
    resolve_dt_rank,
    s4d_real_a_log,
    selective_ssm,
    skip_d,
)
from mambaseg.ops.scan_orders import scan_orders

DIRECTION_SUFFIXES = ("", "_b", "_s")


class TriOrientedMamba(nn.Module):
    """Mamba with forward, reversed and slice-interleaved scans over an N-D token grid.

    Args:
        d_model: token width m.
        spatial_dims: number of spatial axes of the token grid.
        d_state: SSM state size n.
        d_conv: causal convolution width.
        expand: inner width d = expand * m.
        dt_rank: rank of the time-step projections, or ``"auto"`` (ceil(m / 16)).
        conv_bias: bias in the conv1d layers.
        bias: bias in ``in_proj`` and ``out_proj``.
    """

    def __init__(
        self,
        d_model: int,
        spatial_dims: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_inner = int(expand * d_model)
        self.dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.orders = scan_orders("tri", spatial_dims)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        for sfx in DIRECTION_SUFFIXES:
            setattr(self, f"conv1d{sfx}", causal_depthwise_conv(self.d_inner, d_conv, conv_bias))
            setattr(self, f"x_proj{sfx}", nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False))
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            init_dt_proj(dt_proj)
            setattr(self, f"dt_proj{sfx}", dt_proj)
            setattr(self, f"A{sfx}_log", s4d_real_a_log(self.d_inner, d_state))
            setattr(self, f"D{sfx}", skip_d(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, tokens: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
        """(b, l, m) tokens in raster order over ``spatial_shape`` -> (b, l, m)."""
        b, length, _ = tokens.shape
        xz = self.in_proj(tokens).transpose(1, 2).reshape(b, 2 * self.d_inner, *spatial_shape)  # (b, 2d, *spatial)
        total = None
        for sfx, order in zip(DIRECTION_SUFFIXES, self.orders, strict=True):
            x, z = order.flatten(xz).chunk(2, dim=1)  # (b, d, l) each, in this order
            y = selective_ssm(
                x,
                z,
                getattr(self, f"conv1d{sfx}"),
                getattr(self, f"x_proj{sfx}"),
                getattr(self, f"dt_proj{sfx}"),
                getattr(self, f"A{sfx}_log"),
                getattr(self, f"D{sfx}"),
            )
            y = order.unflatten(y, spatial_shape)  # (b, d, *spatial)
            total = y if total is None else total + y
        out = total.reshape(b, self.d_inner, length).transpose(1, 2)  # (b, l, d)
        return self.out_proj(out.to(xz.dtype))  # (b, l, m)


class TriOrientedMambaBlock(nn.Module):
    """SegMamba's ``MambaLayer``: LayerNorm, tri-orientated Mamba over the flattened grid, residual.

    Args:
        dim: channels c.
        spatial_dims: 2 or 3.
        **mamba_kwargs: passed to ``TriOrientedMamba``.
    """

    def __init__(self, dim: int, spatial_dims: int, **mamba_kwargs) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.mamba = TriOrientedMamba(dim, spatial_dims, **mamba_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, *spatial) -> (b, c, *spatial)."""
        b, c, *spatial = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (b, l, c)
        out = self.mamba(self.norm(tokens), spatial)  # (b, l, c)
        return out.transpose(1, 2).reshape(b, c, *spatial) + x
