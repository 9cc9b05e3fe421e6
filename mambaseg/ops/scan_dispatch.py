"""``selective_scan``: mamba_ssm's ``selective_scan_fn`` with a choice of backends.

Backends:
    reference  plain PyTorch, any float dtype including float64 (the ground truth)
    cpu        compiled C++ kernel for CPU tensors (``mambaseg_kernels.cpu``)
    triton     Triton kernels for CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``)
    mamba_ssm  mamba_ssm's CUDA kernel, only when asked for and installed
    auto       triton for CUDA tensors, cpu for CPU tensors; ``MAMBASEG_SCAN_BACKEND`` overrides

reference, cpu and triton run inside the custom op ``mambaseg::selective_scan`` (``scan_function.py``), so that
``torch.compile`` and ``torch.export`` see one operator; mamba_ssm is called as its own autograd function.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

import torch

from mambaseg.ops.scan_checks import check_scan_arguments
from mambaseg.ops.scan_function import selective_scan_op

log = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "cpu", "triton", "mamba_ssm")
BACKEND_ENV = "MAMBASEG_SCAN_BACKEND"
_announced: set[tuple[str, str]] = set()


def _announce(device_type: str, backend: str, why: str) -> None:
    if (device_type, backend) not in _announced:
        _announced.add((device_type, backend))
        log.info("selective_scan: %s tensors use the %s backend (%s)", device_type, backend, why)


def _cpu_kernels() -> ModuleType | None:
    from mambaseg_kernels.cpu import load_cpu_kernels

    return load_cpu_kernels()


@torch.compiler.assume_constant_result
def _cpu_kernel_built() -> bool:
    """Whether the CPU kernel loads; a constant for ``torch.compile`` (building is no graph operation)."""
    return _cpu_kernels() is not None


SLOW_PATH = (
    "the compiled CPU kernel of the selective scan could not be built (see the warning above: a C++ compiler is "
    "needed at first use), so the scan runs its plain-PyTorch reference, 50 to 130 times slower; install g++ or "
    "clang, or set MAMBASEG_SCAN_BACKEND=cpu to fail instead of running slowly"
)


def check_backend_environment(device: torch.device) -> None:
    """Before long work starts: a ValueError naming ``MAMBASEG_SCAN_BACKEND`` when it asks for a backend that cannot
    run on ``device`` (``cpu`` included, where the CPU kernel cannot be built), so that a wrong setting fails at once
    rather than at the first scan; and, on the CPU without that setting, a warning at every command whose scans
    would take the slow reference because the kernel cannot be built.
    """
    backend = os.environ.get(BACKEND_ENV)
    if not backend:
        if device.type == "cpu" and _cpu_kernels() is None:
            log.warning("selective_scan: %s", SLOW_PATH)
        return
    if backend == "cpu" and (device.type != "cpu" or _cpu_kernels() is None):
        where = f"the device is {device}" if device.type != "cpu" else "the CPU kernel cannot be built here"
        raise ValueError(f"{BACKEND_ENV}=cpu: {where}; unset it to let the scan choose its backend")
    if backend not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={backend!r} is not a selective-scan backend; choose one of {BACKENDS}")
    if backend in ("triton", "mamba_ssm") and device.type != "cuda":
        raise ValueError(f"{BACKEND_ENV}={backend}: runs on CUDA tensors only, and the device is {device}")
    if backend == "mamba_ssm":
        try:
            import mamba_ssm.ops.selective_scan_interface  # noqa: F401
        except ImportError as err:
            raise ValueError(
                f"{BACKEND_ENV}=mamba_ssm: the mamba_ssm package (with its CUDA build) is not installed ({err})"
            ) from err


@torch.compiler.assume_constant_result
def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``auto`` (or the environment override) into a concrete backend name for tensors on ``device``.

    ``torch.compile`` calls it once while tracing and keeps its answer as a constant of the graph (it builds
    the CPU kernel and logs, which a graph cannot hold), so set ``MAMBASEG_SCAN_BACKEND`` before compiling.
    """
    requested = backend
    if backend == "auto" and os.environ.get(BACKEND_ENV):
        backend = os.environ[BACKEND_ENV]
        if backend not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV}={backend!r} is not a selective-scan backend; choose one of {BACKENDS}")
        _announce(device.type, backend, f"set by {BACKEND_ENV}")
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: backend={backend!r} is unknown; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    if device.type == "cuda":
        _announce(device.type, "triton", f"{requested}: CUDA tensors")
        return "triton"
    if device.type == "cpu":
        if _cpu_kernels() is None:
            _announce(device.type, "reference", "the compiled CPU kernel could not be built")
            return "reference"
        _announce(device.type, "cpu", "CPU tensors")
        return "cpu"
    _announce(device.type, "reference", f"no compiled kernel for {device.type} tensors")
    return "reference"


def _mamba_ssm_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as err:
        raise RuntimeError(
            "selective_scan: backend='mamba_ssm' needs the mamba_ssm package with its CUDA build"
        ) from err
    if u.device.type != "cuda":
        raise ValueError(f"selective_scan: backend='mamba_ssm' runs on CUDA tensors only, got {u.device}")
    return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_scan(
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
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan with the semantics and shapes of mamba_ssm's ``selective_scan_fn``.

    Args:
        u: input (b, d, l).
        delta: time steps (b, d, l).
        A: state matrix (d, n), real.
        B: input matrix: (d, n) constant, (b, n, l) per step, or (b, g, n, l) grouped (g divides d).
        C: output matrix, same forms as B.
        D: skip connection (d,).
        z: gate (b, d, l); the output is multiplied by silu(z).
        delta_bias: added to delta (d,).
        delta_softplus: apply softplus to delta (after the bias).
        return_last_state: also return the final state (b, d, n) in float32 (no gradient flows through it).
        backend: one of ``auto``, ``reference``, ``cpu``, ``triton``, ``mamba_ssm``.

    Returns:
        y (b, d, l) in u's dtype, and the last state when asked for. States and sums are float32
        (float64 for float64 inputs on the reference), also under autocast.
    """
    check_scan_arguments(u, delta, A, B, C, D, z, delta_bias)
    chosen = resolve_backend(backend, u.device)
    if chosen == "mamba_ssm":
        with torch.autocast(device_type=u.device.type, enabled=False):
            return _mamba_ssm_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if chosen == "cpu":
        if not _cpu_kernel_built():
            raise RuntimeError("selective_scan: backend='cpu' was asked for but the CPU kernel could not be built")
        if u.device.type != "cpu":
            raise ValueError(f"selective_scan: backend='cpu' needs CPU tensors, got {u.device}")
    if chosen != "reference":
        _check_kernel_dtypes(chosen, u, delta, A, B, C, D, z, delta_bias)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    keep_checkpoints = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    # The operator switches autocast off inside itself; a context here would wrap it in a higher-order op.
    out, last_state, _ = selective_scan_op(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_checkpoints, chosen
    )
    return (out, last_state) if return_last_state else out


def _check_kernel_dtypes(backend: str, *tensors: torch.Tensor | None) -> None:
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        raise ValueError(
            f"selective_scan: backend={backend!r} computes in float32; use backend='reference' for float64"
        )
