import pytest
import torch

from mambaseg.networks import create
from mambaseg.nn.gsc import GatedSpatialConv
from mambaseg.nn.tri_orient import TriOrientedMambaBlock


def test_released_configuration():
    net = create("segmamba", 3, 1, 3)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(67.36e6, abs=5e3)  # the paper's 67.36M
    assert sum(isinstance(m, TriOrientedMambaBlock) for m in net.modules()) == 8
    assert sum(isinstance(m, GatedSpatialConv) for m in net.modules()) == 4
    assert net.input_size_divisor == 16 and net.bottleneck.layer.conv1.conv.out_channels == 768


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_and_deep_supervision(spatial_dims):
    net = create("segmamba", spatial_dims, 2, 3, tiny=True, features_per_stage=(2, 2, 4))
    spatial = (16, 8, 8)[:spatial_dims]
    x = torch.randn(1, 2, *spatial)
    out = net(x)
    assert out.shape == (1, 3, *spatial)
    out.sum().backward()
    net.deep_supervision = True
    assert [tuple(o.shape[2:]) for o in net(x)] == [tuple(s // f for s in spatial) for f in (1, 2, 4)]


def test_any_multiple_works_and_others_are_rejected():
    net = create("segmamba", 3, 1, 2, tiny=True)
    assert net(torch.randn(1, 1, 4, 8, 12)).shape == (1, 2, 4, 8, 12)
    with pytest.raises(ValueError, match=r"multiple of \(4, 4, 4\)"):
        net(torch.randn(1, 1, 4, 8, 6))
    with pytest.raises(ValueError, match="depths"):
        create("segmamba", 3, 1, 2, features_per_stage=(2, 4), depths=(1, 1, 1))
