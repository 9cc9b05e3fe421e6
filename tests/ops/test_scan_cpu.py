"""The compiled CPU backend against the float64 reference, over a matrix of shapes, options and dtypes.

Where the kernel cannot be built the comparisons are skipped, and ``test_the_cpu_kernel_is_built`` says so: it
skips with the reason on a developer's machine and fails under CI (``CI=true``), so a broken build cannot leave CI
green.
"""

import os
from collections.abc import Mapping

import pytest
import torch

from mambaseg.ops import selective_scan
from mambaseg_kernels.cpu import load_cpu_kernels
from tests.ops.scan_cases import ScanCase, compare_backend_to_reference, leaf_copies, make_inputs

NOT_BUILT = "the compiled CPU selective scan could not be built here (see the RuntimeWarning of load_cpu_kernels)"
needs_kernel = pytest.mark.skipif(load_cpu_kernels() is None, reason=NOT_BUILT)

LENGTHS = (1, 2, 7, 64, 100, 257, 2048, 4097)
BC_MODES = ("constant", "step", "group1", "group2")
ALL_ON = {"has_D": True, "has_z": True, "has_bias": True, "softplus": True}
ALL_OFF = dict.fromkeys(ALL_ON, False)


def _cases() -> list[ScanCase]:
    cases = [ScanCase(length=length, bc_mode=m, dstate=16, **ALL_ON) for length in LENGTHS for m in BC_MODES]
    cases += [
        ScanCase(length=length, bc_mode=m, dstate=16, **ALL_OFF) for length in LENGTHS for m in ("constant", "group2")
    ]
    for flag in ALL_ON:
        cases.append(ScanCase(length=100, **{**ALL_ON, flag: False}))
        cases.append(ScanCase(length=100, **{**ALL_OFF, flag: True}))
    cases += [ScanCase(length=257, dstate=n, bc_mode=m) for n in (1, 8) for m in ("constant", "step")]
    # Channel blocks of 32 lanes: a partial block, two blocks in one group, groups of odd size, mixed B/C forms.
    cases += [
        ScanCase(dim=40, length=300, bc_mode="group2"),
        ScanCase(dim=70, length=300, bc_mode="group2", c_mode="step"),
        ScanCase(dim=66, length=50, bc_mode="constant", c_mode="group2", batch=3),
        ScanCase(dim=6, length=30, bc_mode="group2", c_mode="constant", dstate=5),
    ]
    cases += [
        ScanCase(length=length, bc_mode=m, dtype=dt)
        for dt in (torch.bfloat16, torch.float16)
        for length in (64, 257)
        for m in ("step", "group2")
    ]
    return cases


@needs_kernel
@pytest.mark.parametrize("case", _cases(), ids=ScanCase.id)
def test_cpu_matches_reference(case):
    compare_backend_to_reference(case, "cpu")


@needs_kernel
def test_cpu_backward_is_bit_identical_between_runs():
    case = ScanCase(dim=70, length=1000, bc_mode="group2", c_mode="step")
    inputs = make_inputs(case)
    dout = torch.randn(case.batch, case.dim, case.length)
    runs = []
    for _ in range(2):
        leaves = leaf_copies(inputs)
        selective_scan(**leaves, delta_softplus=True, backend="cpu").backward(dout)
        runs.append({k: v.grad for k, v in leaves.items() if v is not None})
    for name, grad in runs[0].items():
        assert torch.equal(grad, runs[1][name]), name


@needs_kernel
def test_cpu_inference_keeps_no_checkpoints_and_matches_training_forward():
    inputs = make_inputs(ScanCase(length=600))
    with torch.no_grad():
        y_inference = selective_scan(**inputs, delta_softplus=True, backend="cpu")
    y_training = selective_scan(**leaf_copies(inputs), delta_softplus=True, backend="cpu")
    assert torch.equal(y_inference, y_training.detach())


@needs_kernel
def test_cpu_kernel_math_is_accurate_over_its_range():
    """exp, log and softplus of the kernel stay within float32 accuracy where the scan uses them."""
    inputs = make_inputs(ScanCase(length=2, dim=1, dstate=1, bc_mode="constant", has_z=False, has_D=False))
    deltas = torch.linspace(-30.0, 30.0, 2001)
    for delta in deltas[::50]:
        case_inputs = {**inputs, "delta": torch.full((2, 1, 2), float(delta)), "delta_bias": None}
        y = selective_scan(**case_inputs, delta_softplus=True, backend="cpu")
        y_ref = selective_scan(
            **{k: None if v is None else v.double() for k, v in case_inputs.items()},
            delta_softplus=True,
            backend="reference",
        )
        torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-6)


def test_a_failed_build_warns_once_and_returns_none(monkeypatch):
    import torch.utils.cpp_extension

    def no_compiler(**_kwargs):
        raise RuntimeError("c++: command not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    with pytest.warns(RuntimeWarning, match="c\\+\\+: command not found.*falling back to the slow PyTorch reference"):
        assert load_cpu_kernels.__wrapped__() is None


def require_kernel_build(built: bool, environ: Mapping[str, str]) -> None:
    """Fail under CI (``CI`` set to true or 1) when the kernel was not built; skip, saying why, elsewhere."""
    if built:
        return
    if environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"CI=true: {NOT_BUILT}")
    pytest.skip(f"{NOT_BUILT}; under CI=true this fails")


def test_the_cpu_kernel_is_built():
    require_kernel_build(load_cpu_kernels() is not None, os.environ)


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_a_failed_build_fails_under_ci(ci):
    with pytest.raises(pytest.fail.Exception, match="CI=true: the compiled CPU selective scan could not be built"):
        require_kernel_build(False, {"CI": ci})


@pytest.mark.parametrize("environ", [{}, {"CI": "false"}, {"CI": ""}])
def test_a_failed_build_skips_with_its_reason_outside_ci(environ):
    with pytest.raises(pytest.skip.Exception, match="could not be built here.*under CI=true this fails"):
        require_kernel_build(False, environ)
    require_kernel_build(True, {"CI": "true"})  # a built kernel passes under CI
