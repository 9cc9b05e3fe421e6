import pytest
import torch

from mambaseg.networks import create
from mambaseg.networks.unet import ResEncUNet, resolve_topology
from mambaseg.nn.conv_blocks import ResidualBlock

ANISOTROPIC = {
    "n_stages": 3,
    "features_per_stage": (2, 4, 8),
    "strides": (1, (1, 2, 2), 2),
    "kernel_sizes": ((1, 3, 3), 3, 3),
    "n_blocks_per_stage": (1, 2, 1),
    "n_conv_per_stage_decoder": (2, 1),
}


def test_default_topology():
    t3 = resolve_topology("unet_resenc", 3)
    assert t3.features == (32, 64, 128, 256, 320, 320)
    assert t3.n_blocks == (1, 3, 4, 6, 6, 6) and t3.n_conv_decoder == (1,) * 5
    assert t3.strides[0] == (1, 1, 1) and t3.divisors == (32, 32, 32)
    t2 = resolve_topology("unet_resenc", 2)
    assert t2.features == (32, 64, 128, 256, 512, 512, 512) and t2.divisors == (64, 64)


def test_bad_topology_names_the_value():
    with pytest.raises(ValueError, match="strides .* 2 entries but the network has 3 stages"):
        resolve_topology("unet_resenc", 3, n_stages=3, strides=(1, 2))
    with pytest.raises(ValueError, match="one per spatial axis"):
        resolve_topology("unet_resenc", 3, n_stages=2, strides=(1, (2, 2)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_and_deep_supervision(spatial_dims):
    net = create("unet_resenc", spatial_dims, 2, 3, tiny=True)
    x = torch.randn(2, 2, *[8] * spatial_dims)
    out = net(x)
    assert out.shape == (2, 3, *[8] * spatial_dims)
    out.sum().backward()
    net.deep_supervision = True
    shapes = [o.shape[2:] for o in net(x)]
    assert shapes == [torch.Size([8] * spatial_dims), torch.Size([4] * spatial_dims)]


def test_anisotropic_topology_and_size_check():
    net = ResEncUNet(3, 1, 2, deep_supervision=True, **ANISOTROPIC)
    assert net.topology.divisors == (2, 4, 4) and net.input_size_divisor == 4
    outputs = net(torch.randn(1, 1, 4, 8, 8))
    assert [tuple(o.shape[2:]) for o in outputs] == [(4, 8, 8), (4, 4, 4)]
    with pytest.raises(ValueError, match=r"multiple of \(2, 4, 4\)"):
        net(torch.randn(1, 1, 4, 8, 6))


def test_resenc_block_layout():
    net = ResEncUNet(3, 1, 2, **ANISOTROPIC)
    assert [len(stage) for stage in net.encoder.stages] == [1, 2, 1]
    assert [len(stage) for stage in net.decoder.stages] == [2, 1]
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    assert all(b.conv2.norm.weight.abs().sum() == 0 for b in blocks)
