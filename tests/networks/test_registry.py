import pytest
import torch

from mambaseg.networks import create, list_networks, network_entry
from mambaseg.networks.registry import check_input_size


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


def test_every_entry_carries_its_family_knowledge():
    presets = {name: network_entry(name).optimizer for name in list_networks()}
    assert presets["unet_resenc"] == presets["umamba_bot"] == presets["segmamba"] == "sgd_poly"
    assert presets["swin_umamba"] == presets["swin_umamba_d"] == "adamw_swin_umamba"
    assert presets["vmunet"] == "adamw_vmunet"
    assert {name for name in list_networks() if network_entry(name).vss_encoder} == {
        "swin_umamba",
        "swin_umamba_d",
        "vmunet",
    }
    assert network_entry("unet_resenc").min_input_size(2) == (1, 1)
    assert network_entry("vmunet").min_input_size(2) == (32, 32)
    with pytest.raises(ValueError, match=r"vmunet: .* \(16, 64\) is smaller than its minimum input size \(32, 32\)"):
        check_input_size("vmunet", (16, 64))
    assert create("unet_resenc", 2, 1, 2, tiny=True).registry_name == "unet_resenc"


@pytest.mark.parametrize(
    ("name", "size", "divisor"),
    [("umamba_bot", (32, 32, 32), 32), ("unet_resenc", (64, 64), 64), ("umamba_enc", (64, 64), 64)],
)
def test_an_input_reduced_to_one_voxel_at_the_deepest_stage_is_refused_naming_the_minimum(name, size, divisor):
    """The default topologies divide each axis by ``divisor``: an input of exactly that size would reach instance norm
    at the deepest stage as a single voxel; the network says so at once, naming itself, the input and the minimum."""
    net = create(name, len(size), 1, 3)
    assert net.input_size_divisor == divisor
    minimum = (2 * divisor, *size[1:])
    with pytest.raises(ValueError, match=rf"^{name}: the input's spatial size \({', '.join(map(str, size))}\)") as err:
        net(torch.zeros(1, 1, *size))
    assert f"such as {minimum}" in str(err.value) and "single voxel" in str(err.value)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, *minimum)).shape == (1, 3, *minimum)  # the minimum named is accepted
