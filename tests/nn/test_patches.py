"""Patch embedding, merging (VMamba v0's neighbour order) and expanding (Swin-Unet's pixel shuffle)."""

import pytest
import torch

from mambaseg.nn.patches import PatchEmbed, PatchExpand, PatchMerging, channels_first, channels_last


def test_merging_matches_vmamba_2d_neighbour_order():
    torch.manual_seed(0)
    merge = PatchMerging(3, 2)
    x = torch.randn(2, 4, 6, 3)
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(merge(x), merge.reduction(merge.norm(cat)))


def test_merging_3d_puts_the_first_axis_fastest():
    merge = PatchMerging(1, 3)
    merge.norm = torch.nn.Identity()
    merge.reduction = torch.nn.Identity()
    x = torch.arange(8.0).reshape(1, 2, 2, 2, 1)  # value = 4 d + 2 h + w
    assert merge(x).flatten().tolist() == [0.0, 4.0, 2.0, 6.0, 1.0, 5.0, 3.0, 7.0]
    assert PatchMerging(4, 3)(torch.randn(2, 4, 6, 2, 4)).shape == (2, 2, 3, 1, 8)


def test_merging_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        PatchMerging(3, 2)(torch.randn(1, 5, 4, 3))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_expand_is_a_pixel_shuffle(spatial_dims):
    scale, out_dim = 2, 3
    expand = PatchExpand(4, out_dim, spatial_dims, scale)
    expand.norm = torch.nn.Identity()
    x = torch.randn(2, *[3] * spatial_dims, 4)
    y = expand(x)
    assert y.shape == (2, *[6] * spatial_dims, out_dim)
    flat = expand.expand(x).reshape(2, *[3] * spatial_dims, *[scale] * spatial_dims, out_dim)
    offsets = (1,) * spatial_dims
    torch.testing.assert_close(
        y[(slice(None), *[1 * scale + 1] * spatial_dims)], flat[(slice(None), *[1] * spatial_dims, *offsets)]
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_embed_is_channels_last(spatial_dims):
    embed = PatchEmbed(spatial_dims, 2, 8, patch_size=2)
    y = embed(torch.randn(1, 2, *[4] * spatial_dims))
    assert y.shape == (1, *[2] * spatial_dims, 8)
    with pytest.raises(ValueError, match="multiple of 2"):
        embed(torch.randn(1, 2, *[5] * spatial_dims))


def test_layout_helpers_are_inverse():
    x = torch.randn(2, 3, 4, 5)
    assert channels_last(x).shape == (2, 4, 5, 3)
    assert torch.equal(channels_first(channels_last(x)), x)
