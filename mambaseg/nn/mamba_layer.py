"""The Mamba (S6) layer, with the parameter names and shapes of ``mamba_ssm.modules.mamba_simple.Mamba``.

Dimension letters: b batch, l sequence length, m model width (d_model), d inner width (expand * m),
n state size (d_state), r rank of the time-step projection (dt_rank), w causal conv width (d_conv).

A layer maps tokens (b, l, m) to (b, l, m)::

    x, z = in_proj(tokens)                        both (b, d, l)
    x    = silu(causal depthwise conv1d(x))
    dt, B, C = x_proj(x)                          (b, r, l), (b, n, l), (b, n, l)
    y    = selective_scan(x, dt_proj.weight @ dt, -exp(A_log), B, C, D, z, dt_proj.bias, softplus)
    out  = out_proj(y)

The scan runs in float32, also under autocast; the projections follow autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mambaseg.ops import selective_scan


def resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    """``"auto"`` is ``ceil(d_model / 16)`` as in mamba_ssm."""
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    if not isinstance(dt_rank, int) or dt_rank < 1:
        raise ValueError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
    return dt_rank


def dt_bias_init(d_inner: int, dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4) -> torch.Tensor:
    """Mamba's time-step bias: softplus(bias) is log-uniform in [dt_min, dt_max], clamped at ``floor``; (d,)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus


def init_dt_proj(
    dt_proj: nn.Linear,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    dt_init: str = "random",
    dt_scale: float = 1.0,
    dt_init_floor: float = 1e-4,
) -> None:
    """Mamba's time-step initialisation: softplus(bias) log-uniform in [dt_min, dt_max], weight ±r^-0.5 * scale."""
    std = dt_proj.in_features**-0.5 * dt_scale
    with torch.no_grad():
        if dt_init == "constant":
            dt_proj.weight.fill_(std)
        elif dt_init == "random":
            dt_proj.weight.uniform_(-std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt_proj.bias.copy_(dt_bias_init(dt_proj.out_features, dt_min, dt_max, dt_init_floor))
    dt_proj.bias._no_reinit = True


def s4d_real_a_log(d_inner: int, d_state: int) -> nn.Parameter:
    """S4D-real initialisation of ``A_log``: log(1..n) for every channel, (d, n), excluded from weight decay."""
    a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
    param = nn.Parameter(a_log)
    param._no_weight_decay = True
    return param


def skip_d(d_inner: int) -> nn.Parameter:
    """The ``D`` skip parameter (ones), excluded from weight decay."""
    param = nn.Parameter(torch.ones(d_inner))
    param._no_weight_decay = True
    return param


def causal_depthwise_conv(d_inner: int, d_conv: int, bias: bool = True) -> nn.Conv1d:
    """Depthwise conv1d padded by ``d_conv - 1``; truncating its output to l makes it causal."""
    return nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=bias)


def selective_ssm(
    x: torch.Tensor,
    z: torch.Tensor | None,
    conv1d: nn.Conv1d,
    x_proj: nn.Linear,
    dt_proj: nn.Linear,
    a_log: torch.Tensor,
    d: torch.Tensor,
) -> torch.Tensor:
    """The SSM path of one Mamba direction: from the conv branch ``x`` to the gated scan output (b, d, l).

    The scan runs in float32 (float64 for float64 inputs), also under autocast, and returns that dtype.

    Args:
        x: the in_proj branch that goes through the convolution, (b, d, l).
        z: the gate branch (b, d, l), or None for no gate.
        conv1d: causal depthwise convolution.
        x_proj: projection to (dt, B, C).
        dt_proj: time-step projection; its bias is the scan's ``delta_bias``.
        a_log: (d, n).
        d: skip (d,).
    """
    length = x.shape[-1]
    dt_rank, d_state = dt_proj.in_features, a_log.shape[1]
    x = F.silu(conv1d(x)[..., :length])  # (b, d, l)
    x_dbl = x_proj(x.transpose(1, 2))  # (b, l, r + 2n)
    dt, b_mat, c_mat = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # (b, d, l)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    return selective_scan(
        x.to(compute),
        delta.to(compute),
        -torch.exp(a_log.to(compute)),  # (d, n)
        b_mat.transpose(1, 2).to(compute),  # (b, n, l)
        c_mat.transpose(1, 2).to(compute),  # (b, n, l)
        d.to(compute),
        z=None if z is None else z.to(compute),
        delta_bias=dt_proj.bias.to(compute),
        delta_softplus=True,
    )  # (b, d, l)


class MambaLayer(nn.Module):
    """Mamba-1 layer on token sequences; its state dict loads into ``mamba_ssm.Mamba`` and back unchanged.

    Args:
        d_model: token width m.
        d_state: SSM state size n.
        d_conv: causal convolution width.
        expand: inner width d = expand * m.
        dt_rank: rank r of the time-step projection, or ``"auto"`` (ceil(m / 16)).
        dt_min: smallest initial time step.
        dt_max: largest initial time step.
        dt_init: ``"random"`` or ``"constant"`` initialisation of ``dt_proj.weight``.
        dt_scale: scale of that initialisation.
        dt_init_floor: initial time steps are clamped below at this value.
        conv_bias: bias in ``conv1d``.
        bias: bias in ``in_proj`` and ``out_proj``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = causal_depthwise_conv(self.d_inner, d_conv, conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        init_dt_proj(self.dt_proj, dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        self.A_log = s4d_real_a_log(self.d_inner, d_state)
        self.D = skip_d(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(b, l, m) -> (b, l, m)."""
        x, z = self.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)  # (b, d, l) each
        y = selective_ssm(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)  # (b, d, l)
        return self.out_proj(y.transpose(1, 2).to(x.dtype))  # (b, l, m)


class TokenMambaBlock(nn.Module):
    """U-Mamba's Mamba block on a feature map: LayerNorm then ``MambaLayer`` over tokens, no residual.

    With ``channel_tokens`` the roles swap (U-Mamba Enc's deep stages): the c channels are the sequence
    and each token holds all voxels, so ``dim`` must equal the number of voxels and the input size is fixed.

    Args:
        dim: token width: channels, or the number of voxels with ``channel_tokens``.
        channel_tokens: treat channels as the sequence.
        **mamba_kwargs: passed to ``MambaLayer``.
    """

    def __init__(self, dim: int, channel_tokens: bool = False, **mamba_kwargs) -> None:
        super().__init__()
        self.dim = dim
        self.channel_tokens = channel_tokens
        self.norm = nn.LayerNorm(dim)
        self.mamba = MambaLayer(dim, **mamba_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, *spatial) -> (b, c, *spatial)."""
        b, c, *spatial = x.shape
        tokens = x.flatten(2)  # (b, c, v)
        if not self.channel_tokens:
            tokens = tokens.transpose(1, 2)  # (b, v, c)
        if tokens.shape[-1] != self.dim:
            what = "voxels" if self.channel_tokens else "channels"
            raise ValueError(f"TokenMambaBlock was built for {self.dim} {what}, got input of shape {tuple(x.shape)}")
        out = self.mamba(self.norm(tokens))
        if not self.channel_tokens:
            out = out.transpose(1, 2)
        return out.reshape(b, c, *spatial)
