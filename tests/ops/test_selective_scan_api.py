"""The public ``selective_scan``: argument checks, backend choice, autocast and dtypes."""

import logging

import pytest
import torch

import mambaseg.ops.scan_dispatch as scan_module
from mambaseg.ops import resolve_backend, selective_scan, selective_scan_reference
from mambaseg.ops.scan_dispatch import check_backend_environment
from tests.ops.scan_cases import ScanCase, make_inputs


@pytest.fixture
def inputs():
    return make_inputs(ScanCase(batch=2, dim=4, length=5, dstate=3))


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("u", torch.zeros(2, 4), r"u must be \(b, d, l\), got shape \(2, 4\)"),
        ("delta", torch.zeros(2, 4, 6), r"delta has shape \(2, 4, 6\), u has \(2, 4, 5\)"),
        ("A", torch.zeros(5, 3), r"A must be \(d, n\) with d=4, got shape \(5, 3\)"),
        ("B", torch.zeros(2, 3, 4), r"B has shape \(2, 3, 4\)"),
        ("C", torch.zeros(2, 3, 3, 5), r"C has shape \(2, 3, 3, 5\).*g dividing d=4"),
        ("D", torch.zeros(3), r"D must be \(4,\), got shape \(3,\)"),
        ("z", torch.zeros(2, 4, 4), r"z has shape \(2, 4, 4\)"),
        ("delta_bias", torch.zeros(4, 1), r"delta_bias must be \(4,\)"),
        ("u", torch.zeros(2, 4, 5, dtype=torch.int64), r"u must be a floating tensor, got dtype torch.int64"),
    ],
)
def test_wrong_shapes_and_dtypes_raise_value_errors_naming_the_argument(inputs, name, bad, message):
    with pytest.raises(ValueError, match=message):
        selective_scan(**{**inputs, name: bad}, backend="reference")


def test_unknown_backend_is_rejected(inputs):
    with pytest.raises(ValueError, match="backend='cuda_fast' is unknown"):
        selective_scan(**inputs, backend="cuda_fast")


def test_compiled_backends_refuse_float64(inputs):
    doubled = {k: None if v is None else v.double() for k, v in inputs.items()}
    with pytest.raises(ValueError, match="use backend='reference' for float64"):
        selective_scan(**doubled, backend="cpu")


def test_mamba_ssm_backend_needs_cuda_tensors_or_says_it_is_missing(inputs):
    with pytest.raises((ValueError, RuntimeError), match="mamba_ssm"):
        selective_scan(**inputs, backend="mamba_ssm")


def test_auto_picks_cpu_for_cpu_tensors_and_logs_once(caplog, monkeypatch):
    monkeypatch.delenv(scan_module.BACKEND_ENV, raising=False)
    monkeypatch.setattr(scan_module, "_announced", set())
    with caplog.at_level(logging.INFO, logger="mambaseg.ops.scan_dispatch"):
        assert resolve_backend("auto", torch.device("cpu")) == "cpu"
        assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert [r.getMessage() for r in caplog.records] == ["selective_scan: cpu tensors use the cpu backend (CPU tensors)"]


def test_auto_picks_triton_for_cuda_tensors(monkeypatch):
    monkeypatch.delenv(scan_module.BACKEND_ENV, raising=False)
    assert resolve_backend("auto", torch.device("cuda")) == "triton"


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv(scan_module.BACKEND_ENV, "reference")
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    assert resolve_backend("cpu", torch.device("cpu")) == "cpu"  # an explicit choice wins
    monkeypatch.setenv(scan_module.BACKEND_ENV, "fastest")
    with pytest.raises(ValueError, match="MAMBASEG_SCAN_BACKEND='fastest'"):
        resolve_backend("auto", torch.device("cpu"))


def test_without_a_compiler_auto_falls_back_to_the_reference(inputs, monkeypatch, caplog):
    monkeypatch.delenv(scan_module.BACKEND_ENV, raising=False)
    monkeypatch.setattr(scan_module, "_cpu_kernels", lambda: None)
    monkeypatch.setattr(scan_module, "_announced", set())
    with caplog.at_level(logging.INFO, logger="mambaseg.ops.scan_dispatch"):
        y = selective_scan(**inputs)
    assert "reference backend (the compiled CPU kernel could not be built)" in caplog.text
    torch.testing.assert_close(y, selective_scan_reference(**inputs))
    with pytest.raises(RuntimeError, match="CPU kernel could not be built"):
        selective_scan(**inputs, backend="cpu")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_bf16_inputs_under_autocast_scan_in_float32(backend):
    case = ScanCase(length=300, dtype=torch.bfloat16)
    inputs = make_inputs(case)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=backend)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32
    exact = selective_scan_reference(
        **{k: None if v is None else v.double() for k, v in inputs.items()}, delta_softplus=True
    )
    torch.testing.assert_close(y.double(), exact, rtol=3e-2, atol=5e-2)


def test_last_state_continues_the_scan(inputs):
    """Scanning two halves with the first half's state carried equals scanning the whole (checks last_state)."""
    case = ScanCase(batch=1, dim=4, length=10, dstate=3, bc_mode="step", has_z=False, has_D=False, has_bias=False)
    full = make_inputs(case)
    y_full, last_full = selective_scan(**full, return_last_state=True, backend="cpu")
    first = {k: v[..., :6] if k in ("u", "delta", "B", "C") else v for k, v in full.items()}
    _, last_first = selective_scan(**first, return_last_state=True, backend="cpu")
    decay = torch.exp(torch.einsum("bdl,dn->bdln", full["delta"][..., 6:], full["A"]).cumsum(2))  # (b, d, l, n)
    carried = torch.einsum("bdn,bdln,bnl->bdl", last_first, decay, full["C"][..., 6:])
    second = {k: v[..., 6:] if k in ("u", "delta", "B", "C") else v for k, v in full.items()}
    y_second = selective_scan(**second, backend="cpu")
    torch.testing.assert_close(y_second + carried, y_full[..., 6:], rtol=1e-4, atol=1e-5)
    assert last_full.shape == (1, 4, 3)


def test_without_a_compiler_every_command_warns_and_a_cpu_override_fails_before_work(monkeypatch, caplog):
    monkeypatch.setattr(scan_module, "_cpu_kernels", lambda: None)
    monkeypatch.delenv(scan_module.BACKEND_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="mambaseg.ops.scan_dispatch"):
        check_backend_environment(torch.device("cpu"))
        check_backend_environment(torch.device("cpu"))  # each command says it, not only the first
    assert caplog.text.count("runs its plain-PyTorch reference, 50 to 130 times slower") == 2
    monkeypatch.setenv(scan_module.BACKEND_ENV, "cpu")
    with pytest.raises(ValueError, match="MAMBASEG_SCAN_BACKEND=cpu: the CPU kernel cannot be built here"):
        check_backend_environment(torch.device("cpu"))
