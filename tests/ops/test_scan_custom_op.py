"""The selective scan as the custom op ``mambaseg::selective_scan``: registration, opcheck, fake shapes,
``torch.compile(fullgraph=True)`` and ``torch.export`` against eager."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mambaseg.networks as networks
from mambaseg.nn.mamba_layer import MambaLayer
from mambaseg.ops import selective_scan
from mambaseg_kernels.cpu import load_cpu_kernels
from tests.ops.scan_cases import ScanCase, make_inputs

ARG_ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
needs_kernel = pytest.mark.skipif(load_cpu_kernels() is None, reason="the CPU kernel could not be built here")


def _op_args(case: ScanCase, backend: str, requires_grad: bool = True, keep: bool = True) -> tuple:
    inputs = make_inputs(case)
    tensors = [None if inputs[k] is None else inputs[k].detach().requires_grad_(requires_grad) for k in ARG_ORDER]
    return (*tensors, case.softplus, keep, backend)


def test_the_ops_are_registered_with_optional_tensors_in_their_schema():
    schema = str(torch.ops.mambaseg.selective_scan.default._schema)
    assert schema.startswith("mambaseg::selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D")
    assert "bool delta_softplus, bool keep_checkpoints, str backend) -> (Tensor, Tensor, Tensor)" in schema
    assert hasattr(torch.ops.mambaseg, "selective_scan_backward")


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_kernel)])
@pytest.mark.parametrize(
    "case",
    [
        ScanCase(batch=2, dim=4, length=9, dstate=3, bc_mode="step"),
        ScanCase(batch=1, dim=4, length=5, dstate=2, bc_mode="group2", has_z=False, has_bias=False, softplus=False),
        ScanCase(batch=1, dim=2, length=4, dstate=2, bc_mode="constant", has_D=False),
    ],
    ids=lambda c: c.id(),
)
def test_opcheck_passes(backend, case):
    torch.library.opcheck(torch.ops.mambaseg.selective_scan.default, _op_args(case, backend))


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_kernel)])
def test_fake_tensors_get_the_output_shapes_and_dtypes(backend):
    case = ScanCase(batch=2, dim=6, length=300, dstate=5, bc_mode="group2", dtype=torch.bfloat16)
    with FakeTensorMode() as mode:
        args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in _op_args(case, backend)]
        out, last_state, checkpoints = torch.ops.mambaseg.selective_scan(*args)
    assert (out.shape, out.dtype) == ((2, 6, 300), torch.bfloat16)
    assert (last_state.shape, last_state.dtype) == ((2, 6, 5), torch.float32)
    expected = (0,) if backend == "reference" else (2, 6, 2, 5)  # 300 steps: states at 0 and 256
    assert tuple(checkpoints.shape) == expected


def test_the_public_function_still_returns_u_dtype_and_a_float32_last_state_under_autocast():
    inputs = make_inputs(ScanCase(batch=1, dim=4, length=12, dstate=3, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="reference")
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32 and last.shape == (1, 4, 3)


@needs_kernel
def test_compile_fullgraph_of_a_mamba_layer_equals_eager():
    torch.manual_seed(0)
    layer = MambaLayer(8, d_state=4)
    x = torch.randn(2, 10, 8, requires_grad=True)
    eager = layer(x)
    (grad_eager,) = torch.autograd.grad(eager.sum(), x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")(x)
    (grad_compiled,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(grad_compiled, grad_eager)


@needs_kernel
def test_export_of_a_mamba_layer_holds_one_scan_op_and_matches_eager():
    torch.manual_seed(0)
    layer = MambaLayer(8, d_state=4).eval()
    x = torch.randn(2, 10, 8)
    program = torch.export.export(layer, (x,))
    scans = [n for n in program.graph.nodes if n.target is torch.ops.mambaseg.selective_scan.default]
    assert len(scans) == 1
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), layer(x))


@needs_kernel
def test_export_of_tiny_umamba_bot_holds_the_scan_op_and_matches_eager():
    torch.manual_seed(0)
    net = networks.create("umamba_bot", 3, 1, 2, tiny=True).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    program = torch.export.export(net, (x,))
    targets = [n.target for n in program.graph.nodes]
    assert targets.count(torch.ops.mambaseg.selective_scan.default) == 1
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(program.module()(x), expected)
