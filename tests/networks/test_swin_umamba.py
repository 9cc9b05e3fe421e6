"""Swin-UMamba and Swin-UMamba† (swin_umamba_d): shapes, gradients, autocast, strides, parameter counts."""

import pytest
import torch

from mambaseg.networks import create
from mambaseg.networks.vmamba_encoder import VMambaClassifier, VSSEncoder
from tests.networks.vss_cases import (
    check_bad_size_rejected,
    check_bf16_autocast,
    check_deep_supervision,
    check_forward_backward,
    n_params,
)

NAMES = ["swin_umamba", "swin_umamba_d"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name, spatial_dims):
    check_forward_backward(name, spatial_dims)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_v2_layout_forward_backward_and_autocast(name, spatial_dims):
    check_forward_backward(name, spatial_dims, vss_version="v2", d_state=1, ssm_ratio=1.0)
    check_deep_supervision(name, spatial_dims, vss_version="v2")
    check_bf16_autocast(name, spatial_dims, vss_version="v2")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_vss_version_is_refused(name):
    with pytest.raises(ValueError, match=f"{name}: vss_version must be one of .*'v1'"):
        create(name, 2, 1, 2, tiny=True, vss_version="v1")


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_deep_supervision(name, spatial_dims):
    check_deep_supervision(name, spatial_dims)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast(name, spatial_dims):
    check_bf16_autocast(name, spatial_dims)


@pytest.mark.parametrize("name", NAMES)
def test_sizes_not_fitting_the_strides_are_rejected(name):
    check_bad_size_rejected(name, 2, stride=8)
    assert create(name, 2, 1, 2).input_size_divisor == 32


def test_deep_supervision_levels():
    model = create("swin_umamba", 2, 1, 3, tiny=True, depths=(1, 1, 1), deep_supervision=True)
    assert [o.shape[-1] for o in model(torch.randn(1, 1, 32, 32))] == [32, 16, 8]
    model = create("swin_umamba_d", 2, 1, 3, tiny=True, depths=(1, 1, 1), deep_supervision=True)
    assert [o.shape[-1] for o in model(torch.randn(1, 1, 32, 32))] == [32, 8, 4]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("swin_umamba", 60e6), ("swin_umamba_d", 28e6)],
)
def test_parameter_counts_at_paper_settings(name, expected):
    """2D, 1 input channel, 4 classes (the counts hardly depend on the class count)."""
    assert n_params(create(name, 2, 1, 4)) == pytest.approx(expected, rel=0.1)


def test_vmamba_tiny_parameter_counts():
    assert n_params(VMambaClassifier(2, 3, 1000)) == pytest.approx(22.9e6, rel=0.1)
    assert n_params(VSSEncoder(2, 3)) == pytest.approx(22.1e6, rel=0.1)


def test_vmamba_v2_tiny_parameter_count():
    """VMamba-T[s1l8] (vssm1_tiny_0230s): 30M parameters in VMamba's README."""
    v2_tiny = {"depths": (2, 2, 8, 2), "d_state": 1, "ssm_ratio": 1.0, "vss_version": "v2"}
    assert n_params(VMambaClassifier(2, 3, 1000, **v2_tiny)) == pytest.approx(30e6, rel=0.02)
