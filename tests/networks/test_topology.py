"""Topology rules: nnU-Net's pooling rule (expected values derived by hand from nnU-Net's ``get_pool_and_conv_props``),
and the rules the families register."""

import pytest
import torch

from mambaseg.networks import create, network_entry
from mambaseg.networks.registry import TopologyChoice
from mambaseg.networks.topology import pad_to_multiple, pooling_plan


def test_isotropic_40_56_40():
    # 40,56,40 -> 20,28,20 -> 10,14,10 -> 5,7,5: three pools on every axis, then no axis is >= 8.
    plan = pooling_plan((1.0, 1.0, 1.0), (40, 56, 40))
    assert plan.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    assert plan.kernel_sizes == ((3, 3, 3),) * 4
    assert plan.patch_size == (40, 56, 40)
    assert plan.divisors == (8, 8, 8)


def test_median_hippocampus_shape_is_padded():
    # 36,50,35 pools as 40,56,40 does (ceil halves: 18,25,18 -> 9,13,9 -> 5,7,5), then pads to multiples of 8.
    assert pooling_plan((1.0, 1.0, 1.0), (36, 50, 35)).patch_size == (40, 56, 40)


def test_anisotropic_spacing():
    # spacing 5 x 0.8 x 0.8: z is too coarse to pool (and gets kernel 1) until in-plane spacing reaches 3.2;
    # then all axes pool until z is 5 voxels, and y, x pool once more (12 -> 6).
    plan = pooling_plan((5.0, 0.8, 0.8), (20, 192, 192))
    assert plan.strides == ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))
    assert plan.kernel_sizes == ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    assert plan.patch_size == (20, 192, 192)
    assert plan.divisors == (4, 32, 32)


def test_single_axis_needs_three_times_min_size():
    assert pooling_plan((1.0, 1.0), (12, 6)).strides == ((1, 1), (2, 1))
    assert pooling_plan((1.0, 1.0), (11, 6)).strides == ((1, 1),)


def test_pad_to_multiple():
    assert pad_to_multiple((33, 32, 1), (8, 8, 4)) == (40, 32, 4)


def test_unet_rules_give_the_networks_default_topology_at_128():
    # 128^3 at 1 mm pools five times: six stages, nnU-Net's default, so each family's rule and builder agree.
    for name in ("unet_resenc", "umamba_bot", "umamba_enc"):
        choice = network_entry(name).topology((1.0, 1.0, 1.0), (128, 128, 128))
        assert choice.patch_size == [128, 128, 128] and choice.divisors == (32, 32, 32)
        with torch.device("meta"):
            built = create(name, 3, 1, 2, **choice.kwargs).topology
            default = create(name, 3, 1, 2).topology
        assert built == default
    assert network_entry("umamba_enc").topology((1.0, 1.0, 1.0), (128, 128, 128)).kwargs["patch_size"] == [128] * 3


def test_a_unet_rule_refuses_a_patch_it_cannot_pool():
    with pytest.raises(ValueError, match=r"unet_resenc: patch \[6, 5\] .* cannot be pooled once"):
        network_entry("unet_resenc").topology((1.0, 1.0), (6, 5))


def test_fixed_rule_pads_to_the_default_divisor():
    choice = network_entry("vmunet").topology((1.0, 1.0), (40, 1))
    assert choice == TopologyChoice({}, [64, 32], (32, 32))
    assert network_entry("segmamba").min_input_size(3) == (16, 16, 16)
