"""SS-ND and the VSS block: VMamba v0 names and shapes, the stacked scan against a per-order loop, dtypes."""

import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.nn.ss_nd import SSND, VSSBlock, VSSStage, drop_path_rates
from mambaseg.ops.scan_orders import scan_orders
from mambaseg.ops.scan_reference import selective_scan_reference

SHAPES = {2: (5, 6), 3: (3, 4, 5)}


def per_order_loop(ss: SSND, x: torch.Tensor) -> torch.Tensor:
    """SS-ND's scan written out one order at a time, each with its own reference scan."""
    d, n, r = ss.d_inner, ss.d_state, ss.dt_rank
    total = 0
    for k, order in enumerate(ss.orders):
        xs = order.flatten(x)  # (b, d, l)
        x_dbl = torch.einsum("bdl,cd->bcl", xs, ss.x_proj_weight[k])
        dt, b_k, c_k = x_dbl.split([r, n, n], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, ss.dt_projs_weight[k])
        y = selective_scan_reference(
            xs,
            dt,
            -torch.exp(ss.A_logs[k * d : (k + 1) * d]),
            b_k,
            c_k,
            ss.Ds[k * d : (k + 1) * d],
            delta_bias=ss.dt_projs_bias[k],
            delta_softplus=True,
        )
        total = total + order.unflatten(y, x.shape[2:])
    return total


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_stacked_scan_equals_per_order_loop(spatial_dims):
    torch.manual_seed(0)
    ss = SSND(6, spatial_dims, d_state=4)
    x = torch.randn(2, ss.d_inner, *SHAPES[spatial_dims])
    with torch.no_grad():
        torch.testing.assert_close(ss.scan(x), per_order_loop(ss, x), rtol=1e-4, atol=1e-5)


def test_forward_follows_vmamba_v0():
    """in_proj -> conv -> SiLU -> scan -> out_norm -> * SiLU(z) -> out_proj, written out for 2D."""
    torch.manual_seed(0)
    ss = SSND(4, 2, d_state=4)
    x = torch.randn(2, 5, 6, 4)
    xz = ss.in_proj(x)
    h, z = xz.chunk(2, dim=-1)
    h = F.silu(F.conv2d(h.permute(0, 3, 1, 2), ss.conv2d.weight, ss.conv2d.bias, padding=1, groups=ss.d_inner))
    y = per_order_loop(ss, h).permute(0, 2, 3, 1)
    expected = F.linear(
        F.layer_norm(y, (ss.d_inner,), ss.out_norm.weight, ss.out_norm.bias) * F.silu(z), ss.out_proj.weight
    )
    with torch.no_grad():
        torch.testing.assert_close(ss(x), expected, rtol=1e-4, atol=1e-5)


def test_vmamba_v0_names_and_shapes():
    ss = SSND(96, 2)
    shapes = {k: tuple(v.shape) for k, v in ss.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (384, 96),
        "conv2d.weight": (192, 1, 3, 3),
        "conv2d.bias": (192,),
        "x_proj_weight": (4, 6 + 2 * 16, 192),
        "dt_projs_weight": (4, 192, 6),
        "dt_projs_bias": (4, 192),
        "A_logs": (4 * 192, 16),
        "Ds": (4 * 192,),
        "out_norm.weight": (192,),
        "out_norm.bias": (192,),
        "out_proj.weight": (96, 192),
    }
    block = VSSBlock(96, 3)
    assert {k.split(".")[0] for k in block.state_dict()} == {"ln_1", "self_attention"}
    assert block.self_attention.conv2d.weight.shape == (192, 1, 3, 3, 3)
    assert block.self_attention.x_proj_weight.shape[0] == 6


def test_initialisation():
    ss = SSND(32, 2, d_state=8)
    dt = F.softplus(ss.dt_projs_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    torch.testing.assert_close(ss.A_logs[3], torch.log(torch.arange(1, 9, dtype=torch.float32)))
    assert torch.equal(ss.Ds, torch.ones_like(ss.Ds))
    assert ss.dt_rank == math.ceil(32 / 16)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_block_forward_backward(spatial_dims):
    torch.manual_seed(0)
    stage = VSSStage(8, spatial_dims, depth=2, drop_path=[0.0, 0.1], d_state=4)
    x = torch.randn(2, *SHAPES[spatial_dims], 8, requires_grad=True)
    y = stage(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    grads = [p.grad for p in stage.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bf16_autocast_is_finite(spatial_dims):
    torch.manual_seed(0)
    block = VSSBlock(8, spatial_dims, d_state=4)
    x = torch.randn(2, *SHAPES[spatial_dims], 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert torch.isfinite(y.float()).all()


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match="spatial"):
        SSND(4, 3)(torch.randn(1, 4, 4, 4))


def test_drop_path_rates():
    rising, falling = drop_path_rates([1, 2], 0.2), drop_path_rates([2, 1], 0.2, falling=True)
    assert [len(r) for r in rising] == [1, 2] and [len(r) for r in falling] == [2, 1]
    assert sum(rising, []) == pytest.approx([0.0, 0.1, 0.2])
    assert sum(falling, []) == pytest.approx([0.2, 0.1, 0.0])


def test_sequential_combination_gives_each_block_one_order_in_turn():
    stage = VSSStage(8, 2, depth=6, orders="cross", combine="sequential", d_state=4)
    cross = scan_orders("cross", 2)
    assert [block.self_attention.orders for block in stage.blocks] == [[cross[j % 4]] for j in range(6)]
    assert stage.blocks[0].self_attention.x_proj_weight.shape[0] == 1
    x = torch.randn(2, 4, 6, 8)  # (b, h, w, c)
    assert stage(x).shape == x.shape
    parallel = VSSStage(8, 2, depth=2, d_state=4)
    assert all(len(block.self_attention.orders) == 4 for block in parallel.blocks)
    with pytest.raises(ValueError, match="combine must be"):
        VSSStage(8, 2, depth=1, combine="zigzag")
