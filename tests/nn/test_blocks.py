import pytest
import torch
from torch import nn

from mambaseg.nn.conv_blocks import (
    ConvNormAct,
    Downsample,
    ResidualBlock,
    StackedResidualBlocks,
    Upsample,
    per_axis,
    zero_last_norm,
)
from mambaseg.nn.gsc import GatedSpatialConv
from mambaseg.nn.mamba_layer import selective_ssm
from mambaseg.nn.tri_orient import TriOrientedMamba, TriOrientedMambaBlock


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_conv_blocks_shapes(spatial_dims):
    x = torch.randn(2, 3, *[8] * spatial_dims)
    half = (2, 5, *[4] * spatial_dims)
    assert ConvNormAct(spatial_dims, 3, 5, 3, 2)(x).shape == half
    assert ResidualBlock(spatial_dims, 3, 5, stride=2)(x).shape == half
    assert ResidualBlock(spatial_dims, 3, 5, stride=2, skip="conv")(x).shape == half
    assert StackedResidualBlocks(3, spatial_dims, 3, 5, stride=2)(x).shape == half
    assert Downsample(spatial_dims, 3, 5, 2, nn.Identity())(x).shape == half
    for mode in ("transposed", "nearest"):
        assert Upsample(spatial_dims, 3, 5, 2, mode)(x).shape == (2, 5, *[16] * spatial_dims)


def test_anisotropic_stride_and_kernel():
    x = torch.randn(1, 2, 4, 8, 8)
    assert ConvNormAct(3, 2, 4, (1, 3, 3), (1, 2, 2))(x).shape == (1, 4, 4, 4, 4)
    assert ResidualBlock(3, 2, 4, (1, 3, 3), (1, 2, 2))(x).shape == (1, 4, 4, 4, 4)
    assert Upsample(3, 2, 4, (1, 2, 2))(x).shape == (1, 4, 4, 16, 16)
    with pytest.raises(ValueError, match="one per spatial axis"):
        per_axis((1, 2), 3, "stride")


def test_basic_block_d_skip_layout():
    assert isinstance(ResidualBlock(2, 4, 4).skip, nn.Identity)
    pooled = ResidualBlock(2, 4, 8, stride=2).skip
    assert isinstance(pooled[0], nn.AvgPool2d) and pooled[1].conv.bias is None
    assert isinstance(ResidualBlock(2, 4, 4, skip="conv").skip, nn.Conv2d)


def test_zero_last_norm_makes_block_its_skip():
    block = ResidualBlock(2, 4, 8, stride=2)
    block.apply(zero_last_norm)
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(block(x), block.act(block.skip(x)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gsc_shape_and_parameters(spatial_dims):
    gsc = GatedSpatialConv(spatial_dims, 4)
    x = torch.randn(2, 4, *[5] * spatial_dims)
    assert gsc(x).shape == x.shape
    assert sorted(gsc.state_dict()) == sorted(f"proj{i}.{p}" for i in ("", "2", "3", "4") for p in ("weight", "bias"))


def test_tri_oriented_parameter_names():
    names = set(TriOrientedMamba(8, 3).state_dict())
    for sfx in ("", "_b", "_s"):
        for key in ("conv1d{}.weight", "conv1d{}.bias", "x_proj{}.weight", "dt_proj{}.weight", "dt_proj{}.bias"):
            assert key.format(sfx) in names
        assert f"A{sfx}_log" in names and f"D{sfx}" in names
    assert {"in_proj.weight", "out_proj.weight"} <= names and len(names) == 2 + 3 * 7


def segmamba_v3(layer: TriOrientedMamba, tokens: torch.Tensor, nslices: int) -> torch.Tensor:
    """SegMamba's fork, written out: flip for the reversed scan, chunk-and-stack for the slice scan."""
    b, length, _ = tokens.shape
    xz = layer.in_proj(tokens).transpose(1, 2)  # (b, 2d, l)

    def ssm(seq, sfx):
        x, z = seq.chunk(2, dim=1)
        parts = [getattr(layer, f"{name}{sfx}") for name in ("conv1d", "x_proj", "dt_proj")]
        return selective_ssm(x, z, *parts, getattr(layer, f"A{sfx}_log"), getattr(layer, f"D{sfx}"))

    out = ssm(xz, "")
    out_b = ssm(xz.flip(-1), "_b").flip(-1)
    xz_s = torch.stack(xz.chunk(nslices, dim=-1), dim=-1).flatten(-2)
    out_s = ssm(xz_s, "_s").reshape(b, layer.d_inner, length // nslices, nslices).permute(0, 1, 3, 2).flatten(-2)
    return layer.out_proj((out + out_b + out_s).transpose(1, 2))


def test_tri_oriented_equals_segmamba_fork():
    torch.manual_seed(0)
    layer = TriOrientedMamba(4, 3, d_state=4)
    spatial = (3, 2, 4)
    tokens = torch.randn(2, 24, 4)
    with torch.no_grad():
        torch.testing.assert_close(layer(tokens, spatial), segmamba_v3(layer, tokens, nslices=spatial[0]))


@pytest.mark.parametrize("spatial", [(3, 5), (3, 1, 5)])
def test_tri_oriented_block_any_size(spatial):
    block = TriOrientedMambaBlock(4, len(spatial), d_state=4)
    x = torch.randn(1, 4, *spatial, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
