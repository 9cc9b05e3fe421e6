"""Plain PyTorch selective scan: the ground truth every other backend is tested against.

Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C.

The recurrence, per channel and state (mamba_ssm's ``selective_scan_ref``)::

    dt_t = softplus(delta_t + delta_bias)        (or without softplus / bias)
    x_t  = exp(dt_t * A) * x_{t-1} + dt_t * B_t * u_t
    y_t  = <x_t, C_t> + D * u_t
    out  = y * silu(z)                           (when z is given)

It runs sequentially over l, in float64 when any input is float64 and in float32 otherwise,
and gradients come from autograd. It lives in the kernels package so that the custom op
(``mambaseg_kernels.ops``) falls back to it without ``mambaseg``; ``mambaseg.ops`` re-exports it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _expand_per_channel(m: torch.Tensor, dim: int) -> torch.Tensor:
    """Bring B or C to a per-channel, per-step layout (b, d, n, l), or leave a constant (d, n) as is."""
    if m.dim() == 3:  # (b, n, l) -> (b, 1, n, l)
        m = m.unsqueeze(1)
    if m.dim() == 4:  # (b, g, n, l) -> (b, d, n, l)
        m = m.repeat_interleave(dim // m.shape[1], dim=1)
    return m


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan in plain PyTorch; same arguments and results as mambaseg's ``selective_scan``."""
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    compute = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    dtype_in = u.dtype
    batch, dim, length = u.shape
    dstate = A.shape[1]

    u_c = u.to(compute)
    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A_c = A.to(compute)
    B_c = _expand_per_channel(B.to(compute), dim)
    C_c = _expand_per_channel(C.to(compute), dim)

    # Whole-sequence factors first, then one unbind per tensor: indexing step by step inside the loop
    # would make autograd build a full-size gradient for every step.
    decay = torch.exp(dt.unsqueeze(-1) * A_c[:, None, :])  # (b, d, l, n)
    if B_c.dim() == 2:
        drive = (dt * u_c).unsqueeze(-1) * B_c[:, None, :]  # (b, d, l, n)
    else:
        drive = (dt * u_c).unsqueeze(-1) * B_c.transpose(-1, -2)  # (b, d, l, n)
    c_steps = [C_c] * length if C_c.dim() == 2 else C_c.unbind(-1)  # each (d, n) or (b, d, n)

    x = u_c.new_zeros(batch, dim, dstate)  # (b, d, n)
    ys = []
    for decay_t, drive_t, c_t in zip(decay.unbind(2), drive.unbind(2), c_steps, strict=True):
        x = decay_t * x + drive_t
        ys.append((x * c_t).sum(-1))  # (b, d)
    out = torch.stack(ys, dim=-1) if length else u_c.new_zeros(batch, dim, 0)  # (b, d, l)
    if D is not None:
        out = out + D.to(compute)[:, None] * u_c
    if z is not None:
        out = out * F.silu(z.to(compute))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out
