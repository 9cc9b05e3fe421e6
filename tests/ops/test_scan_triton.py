"""The Triton selective scan (run by the Triton interpreter on the CPU) against the float64 reference.

Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C.
"""

from __future__ import annotations

import pytest
import torch

import mambaseg_kernels.triton as triton_kernels
from mambaseg.ops import selective_scan
from mambaseg.ops.scan_reference import selective_scan_reference

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
OUT_TOL = {"rtol": 6e-4, "atol": 2e-3}
# Gradient tolerances follow mamba_ssm's float32 test: per-step gradients like the output; gradients summed over
# the sequence (dA, dB, dC, dD, ddelta_bias) with its weight tolerances rtol 1e-3, atol 1e-3, and atol x5 for dA,
# dB and dC.
GRAD_TOL = {
    "u": OUT_TOL,
    "delta": OUT_TOL,
    "z": OUT_TOL,
    "A": {"rtol": 1e-3, "atol": 5e-3},
    "B": {"rtol": 1e-3, "atol": 5e-3},
    "C": {"rtol": 1e-3, "atol": 5e-3},
    "D": {"rtol": 1e-3, "atol": 1e-3},
    "delta_bias": {"rtol": 1e-3, "atol": 1e-3},
}
ALL_ON = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
ALL_OFF = dict.fromkeys(ALL_ON, False)
# B/C forms: constant (d, n), per step (b, n, l), grouped (b, g, n, l); the int is g.
MODES = (("constant", 0), ("per_step", 0), ("grouped", 1), ("grouped", 2))
STATES = {1: 16, 7: 8, 64: 8, 100: 8}  # n for each l, keeping the interpreter's run time down


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short chunks so that l spans several of them, and two channels a program so that groups span blocks."""
    monkeypatch.setattr(triton_kernels, "CHUNK_SIZE", 16)
    monkeypatch.setattr(triton_kernels, "FWD_BLOCK_D", 2)
    monkeypatch.setattr(triton_kernels, "BWD_BLOCK_D", 2)


def _matrix(mode: tuple[str, int], batch: int, dim: int, dstate: int, length: int) -> torch.Tensor:
    kind, groups = mode
    if kind == "constant":
        return torch.randn(dim, dstate)
    if kind == "per_step":
        return torch.randn(batch, dstate, length)
    return torch.randn(batch, groups, dstate, length)


def _inputs(b_mode, c_mode, flags, batch=2, dim=4, dstate=8, length=16, seed=0) -> dict[str, torch.Tensor | None]:
    torch.manual_seed(seed)
    return {
        "u": torch.randn(batch, dim, length),
        "delta": 0.5 * torch.rand(batch, dim, length),
        "A": -0.5 * torch.rand(dim, dstate),
        "B": _matrix(b_mode, batch, dim, dstate, length),
        "C": _matrix(c_mode, batch, dim, dstate, length),
        "D": torch.randn(dim) if flags["D"] else None,
        "z": torch.randn(batch, dim, length) if flags["z"] else None,
        "delta_bias": 0.5 * torch.rand(dim) if flags["delta_bias"] else None,
    }


def _check_against_reference(inputs: dict[str, torch.Tensor | None], delta_softplus: bool) -> None:
    ours = {k: None if t is None else t.clone().requires_grad_() for k, t in inputs.items()}
    ref = {k: None if t is None else t.double().requires_grad_() for k, t in inputs.items()}
    out, last = selective_scan(**ours, delta_softplus=delta_softplus, return_last_state=True, backend="triton")
    out_ref, last_ref = selective_scan_reference(**ref, delta_softplus=delta_softplus, return_last_state=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), out_ref, **OUT_TOL)
    torch.testing.assert_close(last.double(), last_ref, **OUT_TOL)
    dout = torch.randn_like(out)
    out.backward(dout)
    out_ref.backward(dout.double())
    for name in NAMES:
        if ours[name] is not None:
            grad, grad_ref = ours[name].grad, ref[name].grad
            assert grad.shape == grad_ref.shape, name
            torch.testing.assert_close(grad.double(), grad_ref, **GRAD_TOL[name], msg=lambda m, n=name: f"d{n}: {m}")


@pytest.mark.parametrize("flags", [ALL_ON, ALL_OFF], ids=["all_on", "all_off"])
@pytest.mark.parametrize("mode", MODES, ids=[f"{kind}{g or ''}" for kind, g in MODES])
@pytest.mark.parametrize("length", sorted(STATES))
def test_matches_reference(length: int, mode: tuple[str, int], flags: dict[str, bool]) -> None:
    inputs = _inputs(mode, mode, flags, dstate=STATES[length], length=length)
    _check_against_reference(inputs, flags["delta_softplus"])


@pytest.mark.parametrize("base", [ALL_ON, ALL_OFF], ids=["from_all_on", "from_all_off"])
@pytest.mark.parametrize("flag", sorted(ALL_ON))
def test_each_flag_alone(flag: str, base: dict[str, bool]) -> None:
    flags = {**base, flag: not base[flag]}
    inputs = _inputs(("grouped", 2), ("constant", 0), flags, dstate=1, length=100)
    _check_against_reference(inputs, flags["delta_softplus"])


@pytest.mark.parametrize(
    ("b_mode", "c_mode"),
    [(("constant", 0), ("grouped", 2)), (("grouped", 2), ("per_step", 0)), (("grouped", 4), ("grouped", 1))],
)
def test_mixed_forms_of_B_and_C(b_mode: tuple[str, int], c_mode: tuple[str, int]) -> None:
    _check_against_reference(_inputs(b_mode, c_mode, ALL_ON, dstate=16, length=40), delta_softplus=True)


def test_default_block_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    inputs = _inputs(("grouped", 2), ("grouped", 2), ALL_ON, batch=1, dim=8, dstate=4, length=100)
    _check_against_reference(inputs, delta_softplus=True)


@pytest.mark.parametrize(
    ("b_mode", "c_mode", "flags"),
    [(("grouped", 2), ("grouped", 2), ALL_ON), (("constant", 0), ("per_step", 0), ALL_OFF)],
    ids=["grouped2_all_on", "constant_per_step_all_off"],
)
def test_default_chunk_size_over_several_chunks(
    monkeypatch: pytest.MonkeyPatch, b_mode: tuple[str, int], c_mode: tuple[str, int], flags: dict[str, bool]
) -> None:
    """The real configuration: default chunks and blocks, l = two full chunks and a partial third."""
    monkeypatch.undo()
    length = 2 * triton_kernels.CHUNK_SIZE + 44
    assert triton_kernels.CHUNK_SIZE == 128 and triton_kernels._chunk_size(length) == 128
    inputs = _inputs(b_mode, c_mode, flags, batch=1, dim=4, dstate=4, length=length, seed=3)
    _check_against_reference(inputs, flags["delta_softplus"])


def _kernel_backward(inputs: dict[str, torch.Tensor | None], dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    args = list(inputs.values())
    _, _, checkpoints = triton_kernels.selective_scan_fwd(*args, True, True)
    return triton_kernels.selective_scan_bwd(*args, True, checkpoints, dout)


def test_backward_is_deterministic() -> None:
    inputs = _inputs(("grouped", 1), ("grouped", 1), ALL_ON, length=20)
    dout = torch.randn_like(inputs["u"])
    first, second = _kernel_backward(inputs, dout), _kernel_backward(inputs, dout)
    for name, a, b in zip(NAMES, first, second, strict=True):
        assert torch.equal(a, b), name


def test_refuses_cpu_tensors_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = _inputs(("constant", 0), ("constant", 0), ALL_OFF)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA tensors"):
        triton_kernels.selective_scan_fwd(*inputs.values(), False, False)
    with pytest.raises(ValueError, match="CUDA tensors"):
        triton_kernels.selective_scan_bwd(*inputs.values(), False, torch.zeros(2, 4, 1, 8), inputs["u"])
