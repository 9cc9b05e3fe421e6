"""Triton forward kernel of the Mamba-1 selective scan.

Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C,
dd channels of one program (a block), nn states of one program, T steps of one chunk.

One program owns one batch entry and a block of channels and walks the sequence chunk by chunk.
Inside a chunk the recurrence x_t = a_t * x_{t-1} + b_t is an associative scan over (a, b) pairs;
the float32 state is carried from one chunk to the next, and optionally saved at every chunk start
(the checkpoints the backward kernel recomputes from).
"""

import triton
import triton.language as tl

from mambaseg_kernels.triton.scan_common import affine_combine, load_dt, load_step_matrix


@triton.jit
def scan_fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    last_state_ptr,
    checkpoints_ptr,
    dim,
    length,
    dstate,
    n_chunks,
    b_groups,
    c_groups,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    B_PER_STEP: tl.constexpr,
    C_PER_STEP: tl.constexpr,
    KEEP_CHECKPOINTS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Grid (b, d // BLOCK_D); writes out (b, d, l), last_state (b, d, n) and checkpoints (b, d, chunks, n)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    ch = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (dd,)
    st = tl.arange(0, BLOCK_N)  # (nn,)
    tt = tl.arange(0, CHUNK)  # (T,)
    n_mask = st < dstate
    dn_mask = n_mask[None, :]  # (1, nn)
    dn_offs = ch[:, None] * dstate + st[None, :]  # (dd, nn)
    A = tl.load(A_ptr + dn_offs, mask=dn_mask, other=0.0)  # (dd, nn)
    if not B_PER_STEP:
        B_const = tl.load(B_ptr + dn_offs, mask=dn_mask, other=0.0)[:, :, None]  # (dd, nn, 1)
    if not C_PER_STEP:
        C_const = tl.load(C_ptr + dn_offs, mask=dn_mask, other=0.0)[:, :, None]  # (dd, nn, 1)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch)[:, None]  # (dd, 1)
    if HAS_D:
        D = tl.load(D_ptr + ch)[:, None]  # (dd, 1)
    b_group = pid_d * BLOCK_D // (dim // b_groups)
    c_group = pid_d * BLOCK_D // (dim // c_groups)
    row = pid_b * dim * length + ch * length  # (dd,)
    state_offs = (pid_b * dim + ch[:, None]) * dstate + st[None, :]  # (dd, nn)
    is_first = (tt == 0)[None, None, :]  # (1, 1, T)
    is_last = (tt == CHUNK - 1)[None, None, :]
    x = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # (dd, nn)
    for k in range(n_chunks):
        if KEEP_CHECKPOINTS:
            ckpt_offs = ((pid_b * dim + ch[:, None]) * n_chunks + k) * dstate + st[None, :]  # (dd, nn)
            tl.store(checkpoints_ptr + ckpt_offs, x, mask=dn_mask)
        t = k * CHUNK + tt  # (T,)
        t_mask = t < length
        offs = row[:, None] + t[None, :]  # (dd, T)
        lt_mask = t_mask[None, :]
        u = tl.load(u_ptr + offs, mask=lt_mask, other=0.0)  # (dd, T)
        dt, _ = load_dt(delta_ptr, offs, lt_mask, bias, HAS_BIAS, SOFTPLUS)  # (dd, T)
        if B_PER_STEP:
            B = load_step_matrix(B_ptr, pid_b, b_group, b_groups, dstate, length, st, t, n_mask, t_mask)
        else:
            B = B_const
        if C_PER_STEP:
            C = load_step_matrix(C_ptr, pid_b, c_group, c_groups, dstate, length, st, t, n_mask, t_mask)
        else:
            C = C_const
        decay = tl.exp(dt[:, None, :] * A[:, :, None])  # (dd, nn, T)
        inp = (dt * u)[:, None, :] * B  # (dd, nn, T)
        inp = tl.where(is_first, inp + decay * x[:, :, None], inp)
        _, xs = tl.associative_scan((decay, inp), axis=2, combine_fn=affine_combine)  # (dd, nn, T)
        x = tl.sum(tl.where(is_last, xs, 0.0), axis=2)  # (dd, nn)
        y = tl.sum(xs * C, axis=1)  # (dd, T)
        if HAS_D:
            y += D * u
        if HAS_Z:
            z = tl.load(z_ptr + offs, mask=lt_mask, other=0.0)
            y *= z * tl.sigmoid(z)
        tl.store(out_ptr + offs, y, mask=lt_mask)
    tl.store(last_state_ptr + state_offs, x, mask=dn_mask)
