"""Triton backward kernel of the Mamba-1 selective scan.

Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C,
dd channels of one program (a block), nn states of one program, T steps of one chunk.

One program owns one batch entry and a block of channels and walks the chunks from the last to the
first. In each chunk it recomputes the states from the chunk's checkpoint (a forward scan), and the
adjoint state h_t = dy_t * C_t + a_{t+1} * h_{t+1} with a scan over the chunk read in reverse order
(h is carried to the previous chunk). Per-step gradients are written directly; gradients of
parameters shared over steps or channels are written as per-program partial sums, which the launcher
adds up in a fixed order, so results are bit-identical from run to run.
"""

import triton
import triton.language as tl

from mambaseg_kernels.triton.scan_common import affine_combine, load_dt, load_step_matrix


@triton.jit
def scan_bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    checkpoints_ptr,
    dout_ptr,
    du_ptr,
    ddelta_ptr,
    dz_ptr,
    dA_part_ptr,
    dB_part_ptr,
    dC_part_ptr,
    dD_part_ptr,
    dbias_part_ptr,
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
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Grid (b, d // BLOCK_D).

    Writes du, ddelta, dz (b, d, l); partials dA (b, d, n), dD and ddelta_bias (b, d); dB and dC as
    (b, d, n) partials when constant, or summed over the block's channels as (b, d // BLOCK_D, n, l).
    """
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    n_blocks = tl.num_programs(1)
    ch = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (dd,)
    st = tl.arange(0, BLOCK_N)  # (nn,)
    tt = tl.arange(0, CHUNK)  # (T,)
    n_mask = st < dstate
    dn_mask = n_mask[None, :]  # (1, nn)
    dn_offs = ch[:, None] * dstate + st[None, :]  # (dd, nn)
    A = tl.load(A_ptr + dn_offs, mask=dn_mask, other=0.0)[:, :, None]  # (dd, nn, 1)
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
    is_first = (tt == 0)[None, None, :]  # (1, 1, T)
    is_last = (tt == CHUNK - 1)[None, None, :]
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # (dd, nn) adjoint state at the next chunk's start
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dB_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dC_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for kk in range(n_chunks):
        k = n_chunks - 1 - kk
        t = k * CHUNK + tt  # (T,) steps in order
        t_mask = t < length
        lt_mask = t_mask[None, :]
        offs = row[:, None] + t[None, :]  # (dd, T)
        rt = k * CHUNK + CHUNK - 1 - tt  # (T,) steps in reverse order
        rt_mask = rt < length
        r_offs = row[:, None] + rt[None, :]  # (dd, T)

        ckpt_offs = ((pid_b * dim + ch[:, None]) * n_chunks + k) * dstate + st[None, :]  # (dd, nn)
        x0 = tl.load(checkpoints_ptr + ckpt_offs, mask=dn_mask, other=0.0)  # (dd, nn)
        u = tl.load(u_ptr + offs, mask=lt_mask, other=0.0)  # (dd, T)
        dt, raw = load_dt(delta_ptr, offs, lt_mask, bias, HAS_BIAS, SOFTPLUS)  # (dd, T)
        if B_PER_STEP:
            B = load_step_matrix(B_ptr, pid_b, b_group, b_groups, dstate, length, st, t, n_mask, t_mask)
        else:
            B = B_const
        if C_PER_STEP:
            C = load_step_matrix(C_ptr, pid_b, c_group, c_groups, dstate, length, st, t, n_mask, t_mask)
            C_rev = load_step_matrix(C_ptr, pid_b, c_group, c_groups, dstate, length, st, rt, n_mask, rt_mask)
        else:
            C = C_const
            C_rev = C_const
        decay = tl.exp(dt[:, None, :] * A)  # (dd, nn, T)
        inp = (dt * u)[:, None, :] * B  # (dd, nn, T)
        first = tl.where(is_first, inp + decay * x0[:, :, None], inp)
        _, xs = tl.associative_scan((decay, first), axis=2, combine_fn=affine_combine)  # (dd, nn, T)

        dout_rev = tl.load(dout_ptr + r_offs, mask=rt_mask[None, :], other=0.0)  # (dd, T) reversed
        if HAS_Z:
            z_rev = tl.load(z_ptr + r_offs, mask=rt_mask[None, :], other=0.0)
            dout_rev *= z_rev * tl.sigmoid(z_rev)
        next_mask = (rt + 1 < length)[None, :]
        dt_next, _ = load_dt(delta_ptr, r_offs + 1, next_mask, bias, HAS_BIAS, SOFTPLUS)  # (dd, T) reversed
        decay_next = tl.exp(dt_next[:, None, :] * A)  # (dd, nn, T) reversed
        push = dout_rev[:, None, :] * C_rev
        push = tl.where(is_first, push + decay_next * h[:, :, None], push)
        _, h_rev = tl.associative_scan((decay_next, push), axis=2, combine_fn=affine_combine)
        h = tl.sum(tl.where(is_last, h_rev, 0.0), axis=2)  # (dd, nn) adjoint at this chunk's start
        adj = tl.flip(h_rev, 2)  # (dd, nn, T) in order

        dout = tl.load(dout_ptr + offs, mask=lt_mask, other=0.0)  # (dd, T)
        if HAS_Z:
            z = tl.load(z_ptr + offs, mask=lt_mask, other=0.0)
            y = tl.sum(xs * C, axis=1)  # (dd, T)
            if HAS_D:
                y += D * u
            sig = tl.sigmoid(z)
            tl.store(dz_ptr + offs, dout * y * sig * (1.0 + z * (1.0 - sig)), mask=lt_mask)
            dy = dout * z * sig
        else:
            dy = dout
        prev = xs - inp  # (dd, nn, T) a_t * x_{t-1}
        adj_dt = adj * dt[:, None, :]  # (dd, nn, T)
        du = tl.sum(adj_dt * B, axis=1)  # (dd, T)
        if HAS_D:
            du += D * dy
        ddt = tl.sum(adj * (A * prev + B * u[:, None, :]), axis=1)  # (dd, T)
        if SOFTPLUS:
            ddt *= tl.sigmoid(raw)
        ddt = tl.where(lt_mask, ddt, 0.0)
        tl.store(du_ptr + offs, du, mask=lt_mask)
        tl.store(ddelta_ptr + offs, ddt, mask=lt_mask)
        dA_acc += tl.sum(adj_dt * prev, axis=2)
        dD_acc += tl.sum(dy * u, axis=1)
        dbias_acc += tl.sum(ddt, axis=1)
        dB_steps = adj_dt * u[:, None, :]  # (dd, nn, T)
        dC_steps = xs * dy[:, None, :]  # (dd, nn, T)
        part_offs = ((pid_b * n_blocks + pid_d) * dstate + st[:, None]) * length + t[None, :]  # (nn, T)
        part_mask = n_mask[:, None] & t_mask[None, :]
        if B_PER_STEP:
            tl.store(dB_part_ptr + part_offs, tl.sum(dB_steps, axis=0), mask=part_mask)
        else:
            dB_acc += tl.sum(dB_steps, axis=2)
        if C_PER_STEP:
            tl.store(dC_part_ptr + part_offs, tl.sum(dC_steps, axis=0), mask=part_mask)
        else:
            dC_acc += tl.sum(dC_steps, axis=2)

    state_offs = (pid_b * dim + ch[:, None]) * dstate + st[None, :]  # (dd, nn)
    tl.store(dA_part_ptr + state_offs, dA_acc, mask=dn_mask)
    if not B_PER_STEP:
        tl.store(dB_part_ptr + state_offs, dB_acc, mask=dn_mask)
    if not C_PER_STEP:
        tl.store(dC_part_ptr + state_offs, dC_acc, mask=dn_mask)
    if HAS_D:
        tl.store(dD_part_ptr + pid_b * dim + ch, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_part_ptr + pid_b * dim + ch, dbias_acc)
