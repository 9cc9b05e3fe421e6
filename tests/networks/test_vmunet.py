"""VM-UNet: shapes, gradients, autocast, strides, parameter count."""

import pytest

from mambaseg.networks import create
from tests.networks.vss_cases import (
    check_bad_size_rejected,
    check_bf16_autocast,
    check_deep_supervision,
    check_forward_backward,
    n_params,
)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward(spatial_dims):
    check_forward_backward("vmunet", spatial_dims)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deep_supervision(spatial_dims):
    check_deep_supervision("vmunet", spatial_dims)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_v2_layout_forward_backward_and_autocast(spatial_dims):
    check_forward_backward("vmunet", spatial_dims, vss_version="v2", d_state=1, ssm_ratio=1.0)
    check_deep_supervision("vmunet", spatial_dims, vss_version="v2")
    check_bf16_autocast("vmunet", spatial_dims, vss_version="v2")


def test_v2_decoder_blocks_have_the_mlp():
    model = create("vmunet", 2, 1, 2, tiny=True, vss_version="v2")
    block = model.layers_up[0].blocks[0]
    assert block.mlp is not None and not block.self_attention.gated


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bf16_autocast(spatial_dims):
    check_bf16_autocast("vmunet", spatial_dims)


def test_sizes_not_fitting_the_strides_are_rejected():
    check_bad_size_rejected("vmunet", 3, stride=8)
    assert create("vmunet", 2, 1, 2).input_size_divisor == 32


def test_decoder_depths_must_match_the_encoder():
    with pytest.raises(ValueError, match="decoder_depths"):
        create("vmunet", 2, 1, 2, tiny=True, decoder_depths=(1, 1, 1))


def test_parameter_count_at_paper_settings():
    """2D, 1 input channel, 4 classes; the VM-UNet paper reports 27.43M."""
    assert n_params(create("vmunet", 2, 1, 4)) == pytest.approx(27.43e6, rel=0.1)
