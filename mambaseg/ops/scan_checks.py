"""Validation of selective-scan arguments, with errors that name the argument and the shapes seen."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _require_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"selective_scan: {name} must be a floating tensor, got dtype {t.dtype}")


def _check_input_matrix(name: str, m: torch.Tensor, batch: int, dim: int, dstate: int, length: int) -> None:
    """B or C: (d, n) constant, (b, n, l) per step, or (b, g, n, l) grouped with g dividing d."""
    shape = tuple(m.shape)
    if m.dim() == 2:
        ok = shape == (dim, dstate)
    elif m.dim() == 3:
        ok = shape == (batch, dstate, length)
    elif m.dim() == 4:
        ok = shape[0] == batch and shape[2:] == (dstate, length) and shape[1] > 0 and dim % shape[1] == 0
    else:
        ok = False
    if not ok:
        raise ValueError(
            f"selective_scan: {name} has shape {shape}; expected ({dim}, {dstate}) constant, "
            f"({batch}, {dstate}, {length}) per step, or ({batch}, g, {dstate}, {length}) grouped with g dividing "
            f"d={dim} (u is {(batch, dim, length)}, A is {(dim, dstate)})"
        )


def check_scan_arguments(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    """Raise ValueError when shapes, dtypes or devices do not follow ``selective_scan_fn``'s contract."""
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, t in named.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t is not None:
            _require_float(name, t)
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported; A must be real (d, n)")
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (b, d, l), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(
            f"selective_scan: delta has shape {tuple(delta.shape)}, u has {tuple(u.shape)}; they must match"
        )
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (d, n) with d={dim}, got shape {tuple(A.shape)}")
    dstate = A.shape[1]
    _check_input_matrix("B", B, batch, dim, dstate, length)
    _check_input_matrix("C", C, batch, dim, dstate, length)
    if D is not None and tuple(D.shape) != (dim,):
        raise ValueError(f"selective_scan: D must be ({dim},), got shape {tuple(D.shape)}")
    if delta_bias is not None and tuple(delta_bias.shape) != (dim,):
        raise ValueError(f"selective_scan: delta_bias must be ({dim},), got shape {tuple(delta_bias.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z has shape {tuple(z.shape)}, u has {tuple(u.shape)}; they must match")
    devices = {name: t.device for name, t in named.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"selective_scan: all tensors must be on one device, got {devices}")
