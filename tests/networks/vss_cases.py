"""Checks shared by the tests of the networks with a VSS encoder, run on their tiny variants."""

import torch

from mambaseg.networks import create

SIZES = {2: (32, 16), 3: (16, 8, 16)}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_forward_backward(name: str, spatial_dims: int, **kwargs) -> None:
    torch.manual_seed(0)
    model = create(name, spatial_dims, 2, 3, tiny=True, **kwargs)
    x = torch.randn(2, 2, *SIZES[spatial_dims])
    y = model(x)
    assert y.shape == (2, 3, *SIZES[spatial_dims])
    y.square().mean().backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    unused = {k.split(".")[0] for k, g in grads.items() if g is None}
    assert unused <= {"out_layers", "seg_layers", "ds_heads"}, f"no gradient reaches {unused}"


def check_deep_supervision(name: str, spatial_dims: int, **kwargs) -> None:
    model = create(name, spatial_dims, 1, 3, tiny=True, deep_supervision=True, **kwargs).eval()
    outputs = model(torch.randn(1, 1, *SIZES[spatial_dims]))
    assert isinstance(outputs, list) and len(outputs) >= 2
    assert outputs[0].shape == (1, 3, *SIZES[spatial_dims])
    sizes = [o.shape[2] for o in outputs]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert all(o.shape[:2] == (1, 3) and o.dim() == 2 + spatial_dims for o in outputs)


def check_bf16_autocast(name: str, spatial_dims: int, **kwargs) -> None:
    torch.manual_seed(0)
    model = create(name, spatial_dims, 1, 3, tiny=True, deep_supervision=True, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.randn(1, 1, *SIZES[spatial_dims]))
    assert all(torch.isfinite(o.float()).all() for o in outputs)


def check_bad_size_rejected(name: str, spatial_dims: int, stride: int) -> None:
    model = create(name, spatial_dims, 1, 3, tiny=True)
    bad = (stride * 2 + 2,) + SIZES[spatial_dims][1:]
    try:
        model(torch.randn(1, 1, *bad))
    except ValueError as err:
        assert f"multiple of {stride}" in str(err)
    else:
        raise AssertionError(f"{name} accepted the spatial size {bad}")
