"""The compiled CPU backend against the float64 reference, over a matrix of shapes, options and dtypes.

Where the kernel cannot be built the comparisons are skipped, and ``test_the_cpu_kernel_is_built`` says so: it
skips with the reason on a developer's machine and fails under CI (``CI=true``), so a broken build cannot leave CI
green.
"""

import os
import platform
import shutil
import subprocess
from collections.abc import Mapping

import pytest
import torch

from mambaseg.ops import selective_scan
from mambaseg_kernels import cpu as cpu_kernels
from mambaseg_kernels.cpu import ISA_ENV, load_cpu_kernels, select_isa_level, supported_isa_levels
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
        assert cpu_kernels._load.__wrapped__(select_isa_level()) is None


@pytest.mark.skipif(platform.system() == "Windows", reason="flock is POSIX")
def test_a_lock_left_by_a_killed_loader_is_cleared_not_waited_for(monkeypatch, tmp_path):
    import sys
    import warnings

    import torch.utils.cpp_extension

    folder = tmp_path / "build"
    folder.mkdir()
    (folder / cpu_kernels.TORCH_BATON).touch()  # torch's lock of a loader killed mid-build
    # a loader that took mambaseg's flock and was killed holding it: the system releases the flock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, time; h = open({str(folder / cpu_kernels.BUILD_FLOCK)!r}, 'a'); "
            "fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout.readline().strip() == b"held"
    holder.kill()
    holder.wait()
    loaded = object()

    def load(**_kwargs):
        assert not (folder / cpu_kernels.TORCH_BATON).exists()  # torch would wait for it forever
        return loaded

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    monkeypatch.setattr(cpu_kernels, "_build_folder", lambda name: folder)
    with pytest.warns(RuntimeWarning, match="left by a process that died"):
        assert cpu_kernels._load.__wrapped__(select_isa_level()) is loaded
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stale lock the second time: no warning
        assert cpu_kernels._load.__wrapped__(select_isa_level()) is loaded


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


X86 = platform.machine().lower() in ("x86_64", "amd64")
ZEN3_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi1 bmi2 f16c movbe abm aes"  # no avx512
SAPPHIRE_RAPIDS_FLAGS = ZEN3_FLAGS + " avx512f avx512bw avx512cd avx512dq avx512vl avx512_bf16 amx_tile"


@pytest.mark.skipif(not X86, reason="the avx2 / avx512 levels are x86-64 levels")
def test_the_isa_levels_follow_the_processor_flags():
    assert supported_isa_levels((f"flags\t\t: {ZEN3_FLAGS}",)) == ("avx2", "generic")
    assert supported_isa_levels((f"flags\t\t: {SAPPHIRE_RAPIDS_FLAGS}",)) == ("avx512", "avx2", "generic")
    assert supported_isa_levels(("flags\t\t: fpu sse sse2",)) == ("generic",)
    assert "-march=x86-64-v3" in cpu_kernels.compiler_flags("avx2")
    assert "-march=x86-64-v4" in cpu_kernels.compiler_flags("avx512")


def test_the_isa_level_is_the_highest_supported_unless_the_variable_lowers_it():
    zen3, spr = ("avx2", "generic"), ("avx512", "avx2", "generic")
    assert select_isa_level({}, spr) == "avx512"
    assert select_isa_level({}, zen3) == "avx2"
    assert select_isa_level({ISA_ENV: ""}, zen3) == "avx2"
    assert select_isa_level({ISA_ENV: "avx2"}, spr) == "avx2"
    assert select_isa_level({ISA_ENV: "generic"}, zen3) == "generic"
    with pytest.raises(ValueError, match=r"MAMBASEG_CPU_ISA='sse9' is not an instruction-set level; choose one of"):
        select_isa_level({ISA_ENV: "sse9"}, spr)
    with pytest.raises(ValueError, match=r"MAMBASEG_CPU_ISA=avx512: this processor does not support it \(it supports "):
        select_isa_level({ISA_ENV: "avx512"}, zen3)


def test_the_build_cache_name_carries_the_level():
    here = cpu_kernels.Path(cpu_kernels.__file__).parent
    avx2, generic = cpu_kernels._build_tag(here, "avx2"), cpu_kernels._build_tag(here, "generic")
    assert avx2.startswith("avx2_") and generic.startswith("generic_") and avx2[5:] != generic[8:]


def test_a_bad_isa_variable_stops_the_cpu_backend(monkeypatch):
    monkeypatch.setenv(ISA_ENV, "avx1024")
    inputs = make_inputs(ScanCase(length=4))
    with pytest.raises(ValueError, match="MAMBASEG_CPU_ISA='avx1024'"):
        selective_scan(**inputs, delta_softplus=True, backend="cpu")


AVX2_CASES = [
    ScanCase(length=4097, bc_mode="step", dstate=16, **ALL_ON),
    ScanCase(length=257, bc_mode="group2", dstate=16, **ALL_ON),
    ScanCase(length=100, bc_mode="constant", **ALL_OFF),
    ScanCase(dim=70, length=300, bc_mode="group2", c_mode="step"),
    ScanCase(length=257, bc_mode="step", dtype=torch.bfloat16),
]


@pytest.mark.slow
@pytest.mark.skipif(not X86 or "avx2" not in supported_isa_levels(), reason="needs an x86-64 CPU with AVX2")
def test_the_avx2_build_matches_the_float64_reference(monkeypatch):
    """The AVX2 build (compiled here, whatever this CPU's highest level) against the reference, forward and backward."""
    monkeypatch.setenv(ISA_ENV, "avx2")
    module = load_cpu_kernels()
    if module is None:
        require_kernel_build(False, os.environ)
    assert module is load_cpu_kernels("avx2") and "avx2_" in module.__name__
    if shutil.which("objdump"):  # an AVX2 build must run on a CPU without AVX-512: no zmm register in its code
        code = subprocess.run(["objdump", "-d", module.__file__], capture_output=True, text=True, check=True).stdout
        assert "ymm" in code and "zmm" not in code
    for case in AVX2_CASES:
        compare_backend_to_reference(case, "cpu")
    test_cpu_kernel_math_is_accurate_over_its_range()
    test_cpu_backward_is_bit_identical_between_runs()


@needs_kernel
def test_exp_of_large_negative_arguments_is_zero_not_a_tiny_state():
    """dt A far below -87: the state forgets its past exactly (exp gives 0) and stays finite, as in float64."""
    case = ScanCase(length=3, dim=1, dstate=1, bc_mode="constant", has_z=False, has_D=False, has_bias=False)
    inputs = {
        **make_inputs(case),
        "A": torch.tensor([[-200.0]]),
        "B": torch.tensor([[1.0]]),
        "C": torch.tensor([[1.0]]),
    }
    inputs["u"] = torch.tensor([[[1.0, 2.0, 3.0]]]).expand(2, 1, 3).contiguous()
    inputs["delta"] = torch.tensor([[[0.5, 1.0, 0.75]]]).expand(2, 1, 3).contiguous()
    y = selective_scan(**inputs, backend="cpu")
    # y_t = x_t = exp(dt_t A) x_{t-1} + dt_t u_t with exp(-200) and exp(-150) zero in float32
    torch.testing.assert_close(y, torch.tensor([[[0.5, 2.0, 2.25]]]).expand(2, 1, 3), rtol=0, atol=0)
