import pytest
import torch
import torch.nn.functional as F

from mambaseg.nn.mamba_layer import MambaLayer, TokenMambaBlock

# mamba_ssm.modules.mamba_simple.Mamba(d_model=16): d_inner 32, dt_rank 1, d_state 16, d_conv 4.
MAMBA_SSM_KEYS_D16 = {
    "A_log": (32, 16),
    "D": (32,),
    "in_proj.weight": (64, 16),
    "conv1d.weight": (32, 1, 4),
    "conv1d.bias": (32,),
    "x_proj.weight": (33, 32),
    "dt_proj.weight": (32, 1),
    "dt_proj.bias": (32,),
    "out_proj.weight": (16, 32),
}


def test_state_dict_matches_mamba_ssm_names_and_shapes():
    state = MambaLayer(16).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == MAMBA_SSM_KEYS_D16


def test_initialisation_follows_mamba():
    layer = MambaLayer(16, dt_rank=4)
    torch.testing.assert_close(layer.A_log, torch.log(torch.arange(1.0, 17.0)).expand(32, 16))
    assert torch.equal(layer.D, torch.ones(32))
    dt = F.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    assert layer.dt_proj.weight.abs().max() <= 4**-0.5
    assert layer.A_log._no_weight_decay and layer.D._no_weight_decay


def sequential_mamba(layer: MambaLayer, tokens: torch.Tensor) -> torch.Tensor:
    """The layer written out step by step with plain torch ops."""
    x, z = layer.in_proj(tokens).chunk(2, dim=-1)  # (b, l, d)
    weight = layer.conv1d.weight[:, 0]  # (d, w)
    width = weight.shape[1]
    a = -torch.exp(layer.A_log)  # (d, n)
    state = tokens.new_zeros(tokens.shape[0], layer.d_inner, layer.d_state)
    outputs = []
    for t in range(tokens.shape[1]):
        window = torch.stack(
            [x[:, t - width + 1 + k] if t - width + 1 + k >= 0 else torch.zeros_like(x[:, 0]) for k in range(width)],
            dim=-1,
        )  # (b, d, w)
        u = F.silu((window * weight).sum(-1) + layer.conv1d.bias)  # (b, d)
        dt_low, b_t, c_t = torch.split(layer.x_proj(u), [layer.dt_rank, layer.d_state, layer.d_state], dim=-1)
        dt = F.softplus(layer.dt_proj(dt_low))  # (b, d), bias included
        state = torch.exp(dt[..., None] * a) * state + dt[..., None] * b_t[:, None] * u[..., None]
        y = (state * c_t[:, None]).sum(-1) + layer.D * u
        outputs.append(layer.out_proj(y * F.silu(z[:, t])))
    return torch.stack(outputs, dim=1)


def test_layer_equals_sequential_computation():
    torch.manual_seed(0)
    layer = MambaLayer(8, d_state=4, dt_rank=2)
    tokens = torch.randn(2, 11, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(tokens), sequential_mamba(layer, tokens), atol=1e-5, rtol=1e-4)


def test_layer_is_causal_and_trains():
    torch.manual_seed(0)
    layer = MambaLayer(8)
    tokens = torch.randn(1, 9, 8)
    changed = tokens.clone()
    changed[:, -1] += 1.0
    out, out_changed = layer(tokens), layer(changed)
    torch.testing.assert_close(out[:, :-1], out_changed[:, :-1])
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_bf16_autocast_is_finite():
    layer = MambaLayer(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(2, 16, 8) * 10)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


@pytest.mark.parametrize("spatial", [(4, 6), (2, 3, 4)])
def test_token_block_voxel_and_channel_tokens(spatial):
    x = torch.randn(2, 5, *spatial)
    assert TokenMambaBlock(5)(x).shape == x.shape
    voxels = torch.tensor(spatial).prod().item()
    block = TokenMambaBlock(voxels, channel_tokens=True)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match=f"built for {voxels} voxels"):
        block(torch.randn(2, 5, *[s * 2 for s in spatial]))
