"""Autograd of the selective-scan custom op, registered in the kernels package.

The operators ``mambaseg::selective_scan`` and ``mambaseg::selective_scan_backward`` (their schemas, CPU and
CUDA implementations and fake shape rules) live in ``mambaseg_kernels.ops``, registered on
``import mambaseg_kernels``, so that an exported program runs with the kernels package alone. Here the forward
gets its gradient formula: the saved inputs and checkpoints go to ``selective_scan_backward``, and each
gradient is kept only where its input needs one.
"""

from __future__ import annotations

from mambaseg_kernels.ops import (
    BACKWARD_SCHEMA,
    FORWARD_SCHEMA,
    OP_BACKENDS,
    kernel_module,
    selective_scan_backward_op,
    selective_scan_op,
)

__all__ = ["BACKWARD_SCHEMA", "FORWARD_SCHEMA", "OP_BACKENDS", "kernel_module", "selective_scan_op"]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, _keep, backend = inputs
    ctx.delta_softplus = delta_softplus
    ctx.backend = backend
    ctx.present = [t is not None for t in (D, z, delta_bias)]
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.mark_non_differentiable(output[1], output[2])


def _backward(ctx, dout, _dlast_state, _dcheckpoints):
    *inputs, checkpoints = ctx.saved_tensors
    grads = selective_scan_backward_op(*inputs, ctx.delta_softplus, ctx.backend, checkpoints, dout)
    cast = [g if needed else None for g, needed in zip(grads[:5], ctx.needs_input_grad[:5], strict=True)]
    for g, here, needed in zip(grads[5:], ctx.present, ctx.needs_input_grad[5:8], strict=True):
        cast.append(g if here and needed else None)
    return (*cast, None, None, None)


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)
