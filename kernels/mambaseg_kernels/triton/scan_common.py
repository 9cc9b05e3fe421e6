"""Triton helpers shared by the selective-scan forward and backward kernels.

Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C,
dd channels of one program (a block), nn states of one program, T steps of one chunk.
"""

import triton
import triton.language as tl


@triton.jit
def affine_combine(a1, b1, a2, b2):
    """Compose two steps x -> a*x + b, the first (a1, b1) applied before the second (a2, b2)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def load_dt(delta_ptr, offs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Time steps dt (zero where ``mask`` is off) and the pre-softplus values they come from."""
    raw = tl.load(delta_ptr + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        raw = raw + bias
    if SOFTPLUS:
        dt = tl.maximum(raw, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(raw)))
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def load_step_matrix(ptr, pid_b, group, n_groups, dstate, length, st, t, n_mask, t_mask):
    """One chunk of grouped per-step B or C, (b, g, n, l) in memory, as a (1, nn, T) tile."""
    base = (pid_b * n_groups + group) * dstate * length
    offs = base + st[:, None] * length + t[None, :]  # (nn, T)
    tile = tl.load(ptr + offs, mask=n_mask[:, None] & t_mask[None, :], other=0.0)
    return tile[None, :, :]
