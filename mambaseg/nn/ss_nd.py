"""SS-ND, VMamba's selective-scan 2D block (SS2D) for any number of spatial axes, and the VSS block.

Dimension letters: b batch, c model channels (``d_model``), d inner channels (``d_inner``), k scan orders,
n state size, r rank of the time-step projection, l = prod(spatial) sequence length, h MLP hidden channels.

Parameter names follow VMamba v0 (``in_proj``, ``conv2d``, ``x_proj_weight``, ``dt_projs_weight``,
``dt_projs_bias``, ``A_logs``, ``Ds``, ``out_norm``, ``out_proj``; ``ln_1`` and ``self_attention`` in the
block), so its checkpoints line up; the depthwise convolution keeps the name ``conv2d`` in 3D too. VMamba v2's
block (the ``vssm1`` releases: SS2D of forward type ``v05_noz``, then an MLP) is the same block with
``gated=False``, ``conv_bias=False`` and ``mlp_ratio=4``: its ``norm2``, ``mlp.fc1`` and ``mlp.fc2`` keep v2's names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn

from mambaseg.nn.factories import conv_type
from mambaseg.nn.mamba_layer import dt_bias_init, resolve_dt_rank, s4d_real_a_log, skip_d
from mambaseg.ops import selective_scan
from mambaseg.ops.scan_orders import ScanOrder, flatten_orders, merge_orders, scan_orders


def vss_init(module: nn.Module) -> None:
    """VMamba's initialisation of linear layers (truncated normal, std 0.02) and layer norms; use with ``apply``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SSND(nn.Module):
    """Selective scan over K orders of an N-D feature map, channels last (VMamba's SS2D).

    Args:
        d_model: channels in and out.
        spatial_dims: number of spatial axes.
        d_state: state size n.
        ssm_ratio: d_inner / d_model.
        dt_rank: rank r of the time-step projection; ``"auto"`` is ceil(d_model / 16).
        d_conv: kernel size of the depthwise convolution.
        orders: name of a scan-order set (see ``mambaseg.ops.scan_orders``; ``cross`` is VMamba's), or the
            orders themselves.
        dropout: dropout after the output projection.
        dt_min: smallest initial time step.
        dt_max: largest initial time step.
        gated: multiply the normalised scan by silu(z) of a second half of ``in_proj`` (v0); False: no z (v2).
        conv_bias: the depthwise convolution has a bias (v0; not v2).
    """

    def __init__(
        self,
        d_model: int,
        spatial_dims: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        orders: str | Sequence[ScanOrder] = "cross",
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        gated: bool = True,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.gated = gated
        self.d_state = d_state
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.orders = scan_orders(orders, spatial_dims) if isinstance(orders, str) else list(orders)
        k = len(self.orders)

        self.in_proj = nn.Linear(d_model, (2 if gated else 1) * d_inner, bias=False)
        self.conv2d = conv_type(spatial_dims)(
            d_inner, d_inner, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias
        )
        self.act = nn.SiLU()
        bound = d_inner**-0.5
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank).uniform_(-(dt_rank**-0.5), dt_rank**-0.5))
        self.dt_projs_bias = nn.Parameter(torch.stack([dt_bias_init(d_inner, dt_min, dt_max) for _ in range(k)]))
        self.A_logs = s4d_real_a_log(k * d_inner, d_state)  # (k * d, n)
        self.Ds = skip_d(k * d_inner)  # (k * d,)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, *spatial, c) -> (b, *spatial, c)."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"SSND over {self.spatial_dims} spatial axes needs (b, *spatial, c), got shape {tuple(x.shape)}"
            )
        x = self.in_proj(x)  # (b, *spatial, 2d), or (b, *spatial, d) ungated
        if self.gated:
            x, z = x.chunk(2, dim=-1)  # (b, *spatial, d) each
        x = self.act(self.conv2d(x.movedim(-1, 1)))  # (b, d, *spatial)
        y = self.out_norm(self.scan(x).movedim(1, -1))  # (b, *spatial, d), float32
        if self.gated:
            y = y * F.silu(z)
        return self.dropout(self.out_proj(y))

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """All K orders in one selective scan, stacked along channels; (b, d, *spatial) -> summed (b, d, *spatial)."""
        b, d, *spatial = x.shape
        k, n = len(self.orders), self.d_state
        xs = flatten_orders(x, self.orders)  # (b, k, d, l)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)  # (b, k, r + 2n, l)
        dts, bs, cs = x_dbl.split([self.dt_rank, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)  # (b, k, d, l)
        ys = selective_scan(
            xs.float().reshape(b, k * d, -1),  # (b, k * d, l)
            dts.float().reshape(b, k * d, -1),
            -torch.exp(self.A_logs.float()),  # (k * d, n)
            bs.float().contiguous(),  # (b, k, n, l): group i drives the channels of order i
            cs.float().contiguous(),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
        )
        return merge_orders(ys.view(b, k, d, -1), self.orders, spatial)  # (b, d, *spatial)


class Mlp(nn.Module):
    """Two linear layers with a GELU between them (``fc1``, ``fc2``), channels last.

    Args:
        dim: channels in and out.
        hidden: hidden channels.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, ..., c) -> (b, ..., c)."""
        return self.fc2(self.act(self.fc1(x)))  # through (b, ..., h)


class VSSBlock(nn.Module):
    """Pre-norm residual SS-ND block, channels last: x + drop_path(ss_nd(ln_1(x))); v2 adds an MLP likewise.

    With ``mlp_ratio > 0`` the SS-ND residual is followed by x + drop_path(mlp(norm2(x))), as in VMamba v2.

    Args:
        dim: channels.
        spatial_dims: number of spatial axes.
        drop_path: stochastic-depth probability.
        mlp_ratio: MLP hidden channels / channels; 0: no MLP (v0).
        **ss_kwargs: options of ``SSND`` (d_state, ssm_ratio, orders, gated, ...).
    """

    def __init__(
        self, dim: int, spatial_dims: int, drop_path: float = 0.0, mlp_ratio: float = 0.0, **ss_kwargs
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SSND(dim, spatial_dims, **ss_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim) if mlp_ratio > 0 else None
        self.mlp = Mlp(dim, int(dim * mlp_ratio)) if mlp_ratio > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, *spatial, c) -> (b, *spatial, c)."""
        x = x + self.drop_path(self.self_attention(self.ln_1(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class VSSStage(nn.Module):
    """``blocks`` (VSS blocks at one resolution), then an optional ``downsample`` (VMamba's layer layout).

    Args:
        dim: channels.
        spatial_dims: number of spatial axes.
        depth: number of VSS blocks.
        drop_path: one stochastic-depth probability per block, or one for all.
        downsample: module applied after the blocks, or None.
        orders: name of the scan-order set.
        combine: ``parallel``: every block scans all K orders and sums them (VMamba); ``sequential``: block j
            scans only order j mod K, so consecutive blocks take the orders in turn (Mamba-ND).
        **ss_kwargs: other options of ``VSSBlock`` (mlp_ratio) and ``SSND`` (d_state, ssm_ratio, gated, ...).
    """

    def __init__(
        self,
        dim: int,
        spatial_dims: int,
        depth: int,
        drop_path: float | Sequence[float] = 0.0,
        downsample: nn.Module | None = None,
        orders: str = "cross",
        combine: str = "parallel",
        **ss_kwargs,
    ) -> None:
        super().__init__()
        rates = [float(drop_path)] * depth if isinstance(drop_path, int | float) else list(drop_path)
        if len(rates) != depth:
            raise ValueError(f"VSSStage: got {len(rates)} drop-path rates for {depth} blocks")
        order_set = scan_orders(orders, spatial_dims)
        if combine == "parallel":
            block_orders = [order_set] * depth
        elif combine == "sequential":
            block_orders = [[order_set[j % len(order_set)]] for j in range(depth)]
        else:
            raise ValueError(f"VSSStage: combine must be 'parallel' or 'sequential', got {combine!r}")
        self.blocks = nn.ModuleList(
            VSSBlock(dim, spatial_dims, rate, orders=block_order, **ss_kwargs)
            for rate, block_order in zip(rates, block_orders, strict=True)
        )
        self.downsample = downsample

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks alone: (b, *spatial, c) -> (b, *spatial, c)."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, *spatial, c) -> the blocks' output, downsampled when the stage has ``downsample``."""
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


def drop_path_rates(depths: Sequence[int], rate: float, falling: bool = False) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 to ``rate`` over all blocks (or falling to 0), split per stage."""
    flat = (torch.linspace(rate, 0, sum(depths)) if falling else torch.linspace(0, rate, sum(depths))).tolist()
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [flat[s : s + n] for s, n in zip(starts, depths, strict=True)]
