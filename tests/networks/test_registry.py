import pytest
import torch

from mambaseg.networks import create, list_networks


def tiny_input(net: torch.nn.Module, spatial_dims: int) -> torch.Tensor:
    """Twice the divisor along the first axis (the deepest feature map keeps two voxels for instance norm), once along
    the others."""
    divisor = net.input_size_divisor
    assert isinstance(divisor, int)
    return torch.randn(2, 2, 2 * divisor, *[divisor] * (spatial_dims - 1))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list_networks())
def test_tiny_variant_trains_with_and_without_deep_supervision(name, spatial_dims):
    torch.manual_seed(0)
    net = create(name, spatial_dims, 2, 3, tiny=True)
    x = tiny_input(net, spatial_dims)
    out = net(x)
    assert out.shape == (2, 3, *x.shape[2:])
    out.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    net = create(name, spatial_dims, 2, 3, tiny=True, deep_supervision=True)
    outputs = net(x)
    assert isinstance(outputs, list) and len(outputs) > 1
    assert outputs[0].shape == out.shape
    for higher, lower in zip(outputs, outputs[1:], strict=False):
        assert lower.shape[:2] == (2, 3) and all(a >= b for a, b in zip(higher.shape[2:], lower.shape[2:], strict=True))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list_networks())
def test_tiny_variant_is_finite_under_bf16_autocast(name, spatial_dims):
    torch.manual_seed(0)
    net = create(name, spatial_dims, 2, 3, tiny=True)
    x = tiny_input(net, spatial_dims)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert torch.isfinite(out.float()).all()
