import pytest
import torch

from mambaseg.networks import create
from mambaseg.networks.umamba import umamba_blocks, umamba_decoder_convs
from mambaseg.nn.mamba_layer import MambaLayer


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def n_mamba(net: torch.nn.Module) -> int:
    return sum(isinstance(m, MambaLayer) for m in net.modules())


def test_umamba_default_block_counts():
    assert umamba_blocks(6) == (2, 2, 2, 1, 1, 1) and umamba_decoder_convs(6) == (2, 2, 2, 1, 1)
    assert umamba_blocks(7) == (2, 2, 2, 2, 1, 1, 1) and umamba_decoder_convs(7) == (2, 2, 2, 2, 1, 1)


@pytest.mark.parametrize("name, expected", [("umamba_bot", 1), ("umamba_enc", 3)])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_and_ablation(name, expected, spatial_dims):
    net = create(name, spatial_dims, 1, 2, tiny=True, deep_supervision=True)
    ablation = create(name, spatial_dims, 1, 2, tiny=True, mamba=False)
    assert n_mamba(net) == expected and n_mamba(ablation) == 0
    assert n_params(ablation) < n_params(net)
    x = torch.randn(1, 1, *[8] * spatial_dims)
    outputs = net(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(8,) * spatial_dims, (4,) * spatial_dims]
    sum(o.sum() for o in outputs).backward()
    assert ablation(x).shape == (1, 2, *[8] * spatial_dims)


def test_enc_channel_tokens_from_patch_size():
    net = create("umamba_enc", 3, 1, 2, tiny=True, patch_size=8)
    assert net.channel_token_stages == [2]  # stage 2: 2x2x2 voxels <= 8 channels
    assert net.mamba_layers["2"].dim == 8 and net.mamba_layers["1"].dim == 4
    net(torch.randn(1, 1, 8, 8, 8)).sum().backward()
    with pytest.raises(ValueError, match=r"patch_size \(8, 8, 8\)"):
        net(torch.randn(1, 1, 8, 8, 16))
    assert create("umamba_enc", 3, 1, 2, tiny=True).channel_token_stages == []


def test_rejects_sizes_the_strides_cannot_take():
    net = create("umamba_bot", 2, 1, 2, tiny=True)
    with pytest.raises(ValueError, match=r"umamba_bot: each spatial size must be a multiple of \(4, 4\)"):
        net(torch.randn(1, 1, 8, 10))
    with pytest.raises(ValueError, match="umamba_enc"):
        create("umamba_enc", 2, 1, 2, tiny=True, patch_size=(8, 6))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_nomamba_ablation_is_umamba_bot_with_identity_in_place_of_its_mamba_block(spatial_dims):
    torch.manual_seed(0)
    bot = create("umamba_bot", spatial_dims, 1, 2, tiny=True)
    ablation = create("umamba_bot_nomamba", spatial_dims, 1, 2, tiny=True)
    assert n_mamba(ablation) == 0
    mamba_keys = {key for key in bot.state_dict() if key.startswith("mamba_layers.")}
    assert mamba_keys and set(ablation.state_dict()) == set(bot.state_dict()) - mamba_keys
    ablation.load_state_dict({k: v for k, v in bot.state_dict().items() if k not in mamba_keys})
    del bot.mamba_layers["2"]  # tiny: 3 stages, the Mamba block after the last; without it, identity there
    x = torch.randn(1, 1, *[8] * spatial_dims)
    torch.testing.assert_close(ablation(x), bot(x))
