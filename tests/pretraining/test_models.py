"""Classifiers by name, and ``encoder.pt`` loading into swin_umamba, swin_umamba_d and vmunet in 2D and 3D."""

import pytest
import torch

from mambaseg.networks import create, load_pretrained
from mambaseg.pretraining.models import (
    build_classifier,
    encoder_settings,
    encoder_state,
    export_encoder,
    list_pretrain_models,
)

NETWORKS = ("swin_umamba", "swin_umamba_d", "vmunet")


def test_names_and_settings():
    assert {"vmamba_tiny", "vmamba_small", *NETWORKS} <= set(list_pretrain_models())
    assert encoder_settings("vmamba_tiny") == {"dims": 96, "depths": [2, 2, 9, 2], "d_state": 16, "drop_path_rate": 0.2}
    assert encoder_settings("vmamba_small")["depths"] == [2, 2, 27, 2]
    assert encoder_settings("vmunet")["depths"] == [2, 2, 2, 2]
    assert encoder_settings("swin_umamba", tiny=True)["dims"] == 4
    assert encoder_settings("vmamba_tiny", dims=32)["dims"] == 32
    with pytest.raises(ValueError, match="unknown pretraining model"):
        encoder_settings("unet_resenc")
    with pytest.raises(ValueError, match="unknown encoder options"):
        encoder_settings("vmamba_tiny", width=3)


def test_vmamba_tiny_classifier_has_vmamba_t_size():
    model = build_classifier("vmamba_tiny", 3, 1000)
    assert 22.5e6 < sum(p.numel() for p in model.parameters()) < 23.5e6


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_exported_encoder_fills_every_encoder_tensor(tmp_path, network, spatial_dims, in_channels):
    torch.manual_seed(0)
    classifier = build_classifier(network, in_channels, 5, tiny=True)
    path = export_encoder(classifier, tmp_path / "encoder.pt", {"network": network, "encoder": {"dims": 4}})
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"encoder", "config", "version"} and payload["config"]["network"] == network
    assert set(payload["encoder"]) == set(encoder_state(classifier)) and "head.weight" not in payload["encoder"]

    target = create(network, spatial_dims, 1, 2, tiny=True)
    report = load_pretrained(target, path)
    encoder_keys = {k for k in target.state_dict() if k.startswith("encoder.")}
    skipped_on_purpose = {f"encoder.{k}" for k in report.skipped}  # swin_umamba: its own 48-channel patch embedding
    assert encoder_keys - set(report.loaded) == skipped_on_purpose
    assert report.unexpected == []
    if network == "swin_umamba":
        assert report.skipped == ["patch_embed.proj.bias", "patch_embed.proj.weight"]
    else:
        assert report.skipped == []
    if spatial_dims == 2 and in_channels == 1:
        for key, value in payload["encoder"].items():
            if f"encoder.{key}" in report.loaded:
                assert torch.equal(target.state_dict()[f"encoder.{key}"], value), key
