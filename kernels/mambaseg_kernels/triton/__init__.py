"""Triton selective scan (Mamba-1): launchers of the forward and backward kernels.

Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C.

Both launchers take float32 contiguous tensors, B and C either constant (d, n) or grouped per step
(b, g, n, l), on a CUDA device, or on the CPU when ``TRITON_INTERPRET=1`` (the Triton interpreter).
The forward keeps the states at every chunk start as checkpoints, (b, d, chunks, n); the backward
recomputes each chunk's states from them.
"""

from __future__ import annotations

import math
import os

import torch
import triton

from mambaseg_kernels.triton.scan_bwd import scan_bwd_kernel
from mambaseg_kernels.triton.scan_fwd import scan_fwd_kernel

__all__ = ["selective_scan_fwd", "selective_scan_bwd"]

CHUNK_SIZE = 128
"""Steps per chunk (a power of two); the checkpoints hold one state per chunk."""
FWD_BLOCK_D = 1
"""Channels per forward program (a power of two); more channels share the loads of grouped B/C."""
BWD_BLOCK_D = 2
"""Channels per backward program (a power of two); grouped dB, dC partials are (b, d / BWD_BLOCK_D, n, l)."""
FWD_NUM_WARPS = 4
BWD_NUM_WARPS = 8


def _check_device(**tensors: torch.Tensor | None) -> None:
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    for name, t in tensors.items():
        if t is None or t.is_cuda or (interpret and t.device.type == "cpu"):
            continue
        raise ValueError(
            f"mambaseg_kernels.triton: {name} is on {t.device}; the Triton selective scan needs CUDA tensors "
            "(or CPU tensors with TRITON_INTERPRET=1 set before triton is imported)"
        )


def _chunk_size(length: int) -> int:
    return min(CHUNK_SIZE, max(16, triton.next_power_of_2(length)))


def checkpoint_chunks(length: int) -> int:
    """How many states per channel the forward saves for a sequence of ``length`` steps: (b, d, chunks, n)."""
    return triton.cdiv(length, _chunk_size(length))


def _block_d(requested: int, dim: int, B: torch.Tensor, C: torch.Tensor) -> int:
    """Largest power of two up to ``requested`` dividing d and the channels of every B/C group."""
    multiple = dim
    for m in (B, C):
        if m.dim() == 4:
            multiple = math.gcd(multiple, dim // m.shape[1])
    block = 1
    while block * 2 <= requested and multiple % (block * 2) == 0:
        block *= 2
    return block


def _groups(m: torch.Tensor) -> int:
    return m.shape[1] if m.dim() == 4 else 1


def selective_scan_fwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    keep_checkpoints: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the scan.

    Returns:
        out (b, d, l), the last state (b, d, n), and the checkpoints (b, d, chunks, n) when asked for.
    """
    _check_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    chunk = _chunk_size(length)
    n_chunks = triton.cdiv(length, chunk)
    out = torch.empty_like(u)  # (b, d, l)
    last_state = u.new_zeros(batch, dim, dstate)  # (b, d, n)
    checkpoints = u.new_empty(batch, dim, n_chunks, dstate) if keep_checkpoints else None  # (b, d, chunks, n)
    if length == 0 or batch == 0 or dim == 0:
        return out, last_state, checkpoints
    block_d = _block_d(FWD_BLOCK_D, dim, B, C)
    scan_fwd_kernel[(batch, dim // block_d)](
        u,
        delta,
        A,
        B,
        C,
        u if D is None else D,
        u if z is None else z,
        u if delta_bias is None else delta_bias,
        out,
        last_state,
        out if checkpoints is None else checkpoints,
        dim,
        length,
        dstate,
        n_chunks,
        _groups(B),
        _groups(C),
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus,
        B_PER_STEP=B.dim() == 4,
        C_PER_STEP=C.dim() == 4,
        KEEP_CHECKPOINTS=keep_checkpoints,
        BLOCK_D=block_d,
        BLOCK_N=triton.next_power_of_2(dstate),
        CHUNK=chunk,
        num_warps=FWD_NUM_WARPS,
    )
    return out, last_state, checkpoints


def _reduce_matrix_grad(part: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Sum partials of dB or dC in a fixed order: (b, d, n) -> (d, n), or (b, blocks, n, l) -> (b, g, n, l)."""
    if m.dim() == 2:
        return part.sum(0)
    batch, n_blocks, dstate, length = part.shape
    return part.view(batch, m.shape[1], n_blocks // m.shape[1], dstate, length).sum(2)


def selective_scan_bwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    checkpoints: torch.Tensor,
    dout: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of the scan given dout (b, d, l) and the forward's checkpoints.

    Returns:
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias in the shapes of the inputs; None for D, z and
        delta_bias when they were None.
    """
    _check_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, dout=dout)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    chunk = _chunk_size(length)
    n_chunks = triton.cdiv(length, chunk)
    if checkpoints.shape != (batch, dim, n_chunks, dstate):
        raise ValueError(
            f"mambaseg_kernels.triton: checkpoints have shape {tuple(checkpoints.shape)}, expected "
            f"{(batch, dim, n_chunks, dstate)} for chunks of {chunk} steps"
        )
    block_d = _block_d(BWD_BLOCK_D, dim, B, C)
    n_blocks = dim // block_d
    du = torch.zeros_like(u)  # (b, d, l)
    ddelta = torch.zeros_like(delta)
    dz = None if z is None else torch.zeros_like(z)
    dA_part = u.new_zeros(batch, dim, dstate)  # (b, d, n)
    dB_part = u.new_zeros((batch, n_blocks, dstate, length) if B.dim() == 4 else (batch, dim, dstate))
    dC_part = u.new_zeros((batch, n_blocks, dstate, length) if C.dim() == 4 else (batch, dim, dstate))
    dD_part = u.new_zeros(batch, dim)  # (b, d)
    dbias_part = u.new_zeros(batch, dim)
    if length > 0 and batch > 0 and dim > 0:
        scan_bwd_kernel[(batch, n_blocks)](
            u,
            delta,
            A,
            B,
            C,
            u if D is None else D,
            u if z is None else z,
            u if delta_bias is None else delta_bias,
            checkpoints,
            dout,
            du,
            ddelta,
            du if dz is None else dz,
            dA_part,
            dB_part,
            dC_part,
            dD_part,
            dbias_part,
            dim,
            length,
            dstate,
            n_chunks,
            _groups(B),
            _groups(C),
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus,
            B_PER_STEP=B.dim() == 4,
            C_PER_STEP=C.dim() == 4,
            BLOCK_D=block_d,
            BLOCK_N=triton.next_power_of_2(dstate),
            CHUNK=chunk,
            num_warps=BWD_NUM_WARPS,
        )
    dA = dA_part.sum(0)  # (d, n)
    dB = _reduce_matrix_grad(dB_part, B)
    dC = _reduce_matrix_grad(dC_part, C)
    dD = None if D is None else dD_part.sum(0)  # (d,)
    ddelta_bias = None if delta_bias is None else dbias_part.sum(0)  # (d,)
    return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias
