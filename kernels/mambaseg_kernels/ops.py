"""The selective scan as PyTorch custom ops, registered on ``import mambaseg_kernels``.

Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C.

Two operators are registered with ``torch.library``, so that ``torch.compile`` and ``torch.export`` see one
operator, and a program exported with them runs where only ``torch`` and this package are installed::

    mambaseg::selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z,
        Tensor? delta_bias, bool delta_softplus, bool keep_checkpoints, str backend) -> (Tensor, Tensor, Tensor)
        returns out (b, d, l) in u's dtype, the last state (b, d, n) in float32 (float64 for float64 inputs on
        the reference) and the checkpoints the backward needs ((0,) when none are kept).
    mambaseg::selective_scan_backward(..., Tensor checkpoints, Tensor dout) -> 8 Tensors
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias in the dtype and shape of each input; (0,) for an input
        that was None.

``backend`` is a concrete backend: ``reference`` (plain PyTorch, ``mambaseg_kernels.reference``; its backward
recomputes the forward under ``torch.func.vjp``), ``cpu`` (the compiled C++ kernel, ``mambaseg_kernels.cpu``;
where it cannot be built, the reference runs instead, after ``load_cpu_kernels``' one-time warning) or
``triton`` (``mambaseg_kernels.triton``, CUDA tensors). A kernel backend is a module with two functions over
float32 contiguous tensors, B and C either constant (d, n) or grouped per step (b, g, n, l)::

    selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints)
        -> (out (b, d, l), last_state (b, d, n), checkpoints)
    selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints, dout)
        -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)   # None for inputs that were None

and its package has ``checkpoint_chunks(length)``, the number of states saved per channel: checkpoints are
(b, d, chunks, n), the states every few hundred steps, so memory stays O(b·d·n·l/chunk). The operator casts to
float32, calls the kernel, and casts results and gradients back to each input's dtype and shape.

Autograd (the forward's formula through ``selective_scan_backward``) is registered by ``mambaseg.ops``; this
package holds none, so a program loaded with this package alone runs inference.
"""

from __future__ import annotations

from types import ModuleType

import torch

from mambaseg_kernels.reference import selective_scan_reference

OP_BACKENDS = ("reference", "cpu", "triton")
FORWARD_SCHEMA = (
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
    "bool delta_softplus, bool keep_checkpoints, str backend) -> (Tensor, Tensor, Tensor)"
)
BACKWARD_SCHEMA = (
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
    "bool delta_softplus, str backend, Tensor checkpoints, Tensor dout) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)


def _cpu_kernels() -> ModuleType | None:
    from mambaseg_kernels.cpu import load_cpu_kernels

    return load_cpu_kernels()


def runs_as(backend: str) -> str:
    """The backend that computes for ``backend``: ``reference`` for ``cpu`` where the CPU kernel cannot be built."""
    if backend not in OP_BACKENDS:
        raise ValueError(f"selective_scan: the custom op runs the backends {OP_BACKENDS}, got backend={backend!r}")
    if backend == "cpu" and _cpu_kernels() is None:
        return "reference"
    return backend


def kernel_module(backend: str) -> ModuleType:
    """The compiled kernels of ``cpu`` (built) or ``triton``."""
    if backend == "cpu":
        kernels = _cpu_kernels()
        if kernels is None:
            raise RuntimeError("selective_scan: backend='cpu' was asked for but the CPU kernel could not be built")
        return kernels
    if backend == "triton":
        from mambaseg_kernels import triton as triton_kernels

        return triton_kernels
    raise ValueError(f"selective_scan: no compiled kernel for backend={backend!r}")


def _checkpoint_chunks(backend: str, length: int) -> int:
    if backend == "cpu":
        from mambaseg_kernels.cpu import checkpoint_chunks
    else:
        from mambaseg_kernels.triton import checkpoint_chunks
    return checkpoint_chunks(length)


def _as_kernel_input(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32).contiguous()


def _grouped(m: torch.Tensor) -> torch.Tensor:
    """(b, n, l) per-step B/C is grouped B/C with g = 1."""
    return m.unsqueeze(1) if m.dim() == 3 else m


def _compute_dtype(backend: str, *tensors: torch.Tensor | None) -> torch.dtype:
    if backend == "reference" and any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _no_checkpoints(u: torch.Tensor) -> torch.Tensor:
    return u.new_empty(0, dtype=torch.float32)


def _kernel_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints, backend):
    inputs = [u, delta, A, _grouped(B), _grouped(C), D, z, delta_bias]
    kernel_inputs = [_as_kernel_input(t) for t in inputs]
    out, last_state, checkpoints = kernel_module(backend).selective_scan_fwd(
        *kernel_inputs, delta_softplus, keep_checkpoints
    )
    if checkpoints is None or not keep_checkpoints:
        checkpoints = _no_checkpoints(u)
    return out.to(u.dtype), last_state, checkpoints


@torch.library.custom_op("mambaseg::selective_scan", mutates_args=(), schema=FORWARD_SCHEMA)
def selective_scan_op(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints, backend):
    with torch.autocast(device_type=u.device.type, enabled=False):  # float32 (or float64) inside, always
        return _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints, runs_as(backend))


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints, backend):
    if backend == "reference":
        out, last_state = selective_scan_reference(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True
        )
        return out.contiguous(), last_state.contiguous(), _no_checkpoints(u)
    return _kernel_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints, backend)


@selective_scan_op.register_fake
def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints, backend):
    backend = runs_as(backend)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    out = u.new_empty(batch, dim, length)
    last_state = u.new_empty(batch, dim, dstate, dtype=_compute_dtype(backend, u, delta, A, B, C, D, z, delta_bias))
    if backend == "reference" or not keep_checkpoints:
        return out, last_state, _no_checkpoints(u)
    chunks = _checkpoint_chunks(backend, length)
    return out, last_state, u.new_empty(batch, dim, chunks, dstate, dtype=torch.float32)


def _reference_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout):
    """Gradients of the reference by ``torch.func.vjp`` (autograd proper is switched off inside an operator)."""
    given = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    present = [t is not None for t in (D, z, delta_bias)]

    def scan(*tensors):
        it = iter(tensors)
        args = [next(it) for _ in range(5)] + [next(it) if here else None for here in present]
        return selective_scan_reference(*args, delta_softplus)

    _, vjp = torch.func.vjp(scan, *given)
    grads = iter([g.clone() for g in vjp(dout)])  # never a view of dout or of an input
    return [None if t is None else next(grads) for t in (u, delta, A, B, C, D, z, delta_bias)]


@torch.library.custom_op("mambaseg::selective_scan_backward", mutates_args=(), schema=BACKWARD_SCHEMA)
def selective_scan_backward_op(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, checkpoints, dout):
    with torch.autocast(device_type=u.device.type, enabled=False):
        return _backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, runs_as(backend), checkpoints, dout)


def _backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, checkpoints, dout):
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if backend == "reference":
        grads = _reference_backward(*inputs, delta_softplus, dout)
    else:
        if checkpoints.numel() == 0 and u.numel() > 0:  # the forward kept none (it saw no input needing grad)
            checkpoints = _kernel_forward(*inputs, delta_softplus, True, backend)[2]
        kernel_inputs = [_as_kernel_input(t) for t in (u, delta, A, _grouped(B), _grouped(C), D, z, delta_bias)]
        grads = kernel_module(backend).selective_scan_bwd(
            *kernel_inputs, delta_softplus, checkpoints, dout.to(torch.float32).contiguous()
        )
    out = []
    for grad, t in zip(grads, inputs, strict=True):
        if t is None:
            out.append(u.new_empty(0))
        elif grad is None:
            out.append(torch.zeros_like(t))
        else:
            out.append(grad.reshape(t.shape).to(t.dtype).contiguous())
    return tuple(out)


@selective_scan_backward_op.register_fake
def _selective_scan_backward_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, checkpoints, dout):
    return tuple(u.new_empty(0) if t is None else t.new_empty(t.shape) for t in (u, delta, A, B, C, D, z, delta_bias))
