"""The autograd Function shared by the compiled backends (cpu, triton).

A kernel backend is a module with two functions over float32 contiguous tensors, B and C either
constant (d, n) or grouped per step (b, g, n, l)::

    selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints)
        -> (out (b, d, l), last_state (b, d, n), checkpoints)
    selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints, dout)
        -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)   # None for inputs that were None

``checkpoints`` is whatever the backend needs to recompute states in the backward (states every
few hundred steps), so memory stays O(b·d·n·l/chunk). This Function casts to float32, calls the
kernel, and casts gradients back to each input's dtype and shape.
"""

from __future__ import annotations

from types import ModuleType

import torch


def _as_kernel_input(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32).contiguous()


def _grouped(m: torch.Tensor) -> torch.Tensor:
    """(b, n, l) per-step B/C is grouped B/C with g = 1."""
    return m.unsqueeze(1) if m.dim() == 3 else m


class KernelSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels: ModuleType, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):
        inputs = [u, delta, A, _grouped(B), _grouped(C), D, z, delta_bias]
        kernel_inputs = [_as_kernel_input(t) for t in inputs]
        keep = any(ctx.needs_input_grad)
        out, last_state, checkpoints = kernels.selective_scan_fwd(*kernel_inputs, delta_softplus, keep)
        ctx.kernels = kernels
        ctx.delta_softplus = delta_softplus
        ctx.input_meta = [None if t is None else (t.dtype, t.shape) for t in (u, delta, A, B, C, D, z, delta_bias)]
        if keep:
            ctx.save_for_backward(*kernel_inputs, checkpoints)
        ctx.mark_non_differentiable(last_state)
        return out.to(u.dtype), last_state

    @staticmethod
    def backward(ctx, dout, _dlast_state):
        *kernel_inputs, checkpoints = ctx.saved_tensors
        grads = ctx.kernels.selective_scan_bwd(
            *kernel_inputs, ctx.delta_softplus, checkpoints, dout.to(torch.float32).contiguous()
        )
        cast = []
        for grad, meta, needed in zip(grads, ctx.input_meta, ctx.needs_input_grad[1:9], strict=True):
            if grad is None or meta is None or not needed:
                cast.append(None)
            else:
                dtype, shape = meta
                cast.append(grad.reshape(shape).to(dtype))
        return (None, *cast, None)
