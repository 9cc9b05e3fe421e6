"""Random selective-scan inputs and comparison helpers shared by the backend tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mambaseg.ops import selective_scan, selective_scan_reference

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

# mamba_ssm's test_selective_scan: fp32 rtol 6e-4, atol 2e-3 on outputs and on du, ddelta, dD, dz,
# ddelta_bias; dA, dB, dC get atol * 5 on their (summed) gradients. bf16/fp16 use its looser pairs.
TOLERANCES = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
SUMMED_GRAD_FACTOR = {"A": 5.0, "B": 5.0, "C": 5.0}


@dataclass(frozen=True)
class ScanCase:
    batch: int = 2
    dim: int = 8
    length: int = 64
    dstate: int = 8
    bc_mode: str = "step"  # constant | step | group1 | group2
    c_mode: str | None = None  # C's mode when it differs from B's
    has_D: bool = True
    has_z: bool = True
    has_bias: bool = True
    softplus: bool = True
    dtype: torch.dtype = torch.float32

    def id(self) -> str:
        flags = "".join(
            k for k, on in zip("Dzbs", (self.has_D, self.has_z, self.has_bias, self.softplus), strict=True) if on
        )
        modes = self.bc_mode if self.c_mode is None else f"{self.bc_mode}+{self.c_mode}"
        dtype = str(self.dtype).removeprefix("torch.")
        return f"b{self.batch}d{self.dim}l{self.length}n{self.dstate}-{modes}-{flags or 'plain'}-{dtype}"


def make_inputs(case: ScanCase, seed: int = 0) -> dict[str, torch.Tensor | None]:
    """Inputs drawn as mamba_ssm's test draws them, in the case's dtype (A, D, delta_bias stay float32)."""
    g = torch.Generator().manual_seed(seed)
    b, d, length, n = case.batch, case.dim, case.length, case.dstate

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    def matrix(mode: str) -> torch.Tensor:
        if mode == "constant":
            return randn(d, n)
        if mode == "step":
            return randn(b, n, length).to(case.dtype)
        groups = int(mode.removeprefix("group"))
        return randn(b, groups, n, length).to(case.dtype)

    return {
        "u": randn(b, d, length).to(case.dtype),
        "delta": (0.5 * torch.rand(b, d, length, generator=g)).to(case.dtype),
        "A": -0.5 * torch.rand(d, n, generator=g),
        "B": matrix(case.bc_mode),
        "C": matrix(case.c_mode or case.bc_mode),
        "D": randn(d) if case.has_D else None,
        "z": randn(b, d, length).to(case.dtype) if case.has_z else None,
        "delta_bias": 0.5 * torch.rand(d, generator=g) if case.has_bias else None,
    }


def leaf_copies(inputs: dict, dtype: torch.dtype | None = None) -> dict:
    return {
        k: None if v is None else v.detach().to(dtype or v.dtype).clone().requires_grad_(True)
        for k, v in inputs.items()
    }


def run_with_grads(fn, inputs: dict, dout: torch.Tensor, softplus: bool, **kwargs):
    """Forward with return_last_state, backward with dout; returns (y, last_state, {name: grad})."""
    y, last = fn(**inputs, delta_softplus=softplus, return_last_state=True, **kwargs)
    y.backward(dout.to(y.dtype))
    return y.detach(), last.detach(), {k: v.grad for k, v in inputs.items() if v is not None}


def compare_backend_to_reference(case: ScanCase, backend: str, seed: int = 0) -> None:
    """The backend on the case's dtype against the float64 reference: y, last state and every gradient."""
    inputs = make_inputs(case, seed)
    dout = torch.randn(case.batch, case.dim, case.length, generator=torch.Generator().manual_seed(seed + 1))
    dout = dout.to(case.dtype)  # both sides see the same rounded output gradient
    y, last, grads = run_with_grads(selective_scan, leaf_copies(inputs), dout, case.softplus, backend=backend)
    y_ref, last_ref, grads_ref = run_with_grads(
        selective_scan_reference, leaf_copies(inputs, torch.float64), dout.double(), case.softplus
    )
    rtol, atol = TOLERANCES[case.dtype]
    assert y.dtype == case.dtype and y.shape == (case.batch, case.dim, case.length)
    torch.testing.assert_close(y.double(), y_ref, rtol=rtol, atol=atol)
    assert last.dtype == torch.float32
    torch.testing.assert_close(last.double(), last_ref, rtol=rtol, atol=atol)
    for name in GRAD_NAMES:
        if name not in grads_ref:
            continue
        grad, grad_ref = grads[name], grads_ref[name]
        assert grad.dtype == inputs[name].dtype and grad.shape == inputs[name].shape, name
        factor = SUMMED_GRAD_FACTOR.get(name, 1.0)
        torch.testing.assert_close(
            grad.double(), grad_ref, rtol=rtol * factor, atol=atol * factor, msg=lambda m, name=name: f"d{name}: {m}"
        )


def hand_computed_scan() -> tuple[dict[str, torch.Tensor], float, float]:
    """A one-channel, one-state, two-step scan and its outputs worked out by hand."""
    u, dt, a, b, c, d_skip, z = (1.5, -2.0), (0.3, 0.7), -0.8, (0.5, -1.0), (2.0, 0.25), 0.1, (0.4, -1.2)
    x0 = dt[0] * b[0] * u[0]
    x1 = math.exp(dt[1] * a) * x0 + dt[1] * b[1] * u[1]

    def silu(v: float) -> float:
        return v / (1 + math.exp(-v))

    y0 = (x0 * c[0] + d_skip * u[0]) * silu(z[0])
    y1 = (x1 * c[1] + d_skip * u[1]) * silu(z[1])
    inputs = {
        "u": torch.tensor([[u]]),
        "delta": torch.tensor([[dt]]),
        "A": torch.tensor([[a]]),
        "B": torch.tensor([[[b[0], b[1]]]]),
        "C": torch.tensor([[[c[0], c[1]]]]),
        "D": torch.tensor([d_skip]),
        "z": torch.tensor([[z]]),
    }
    return inputs, y0, y1
