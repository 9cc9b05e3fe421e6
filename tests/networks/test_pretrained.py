"""Loading VMamba checkpoints (official key names and shapes, generated here) into the VSS networks."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.networks import create, load_pretrained
from mambaseg.nn.patches import PatchMerging

CLASSIFIER_KEYS = {"norm.weight", "norm.bias", "head.weight", "head.bias"}
CASES = {
    "swin_umamba": {"dims": 8, "depths": (1, 2), "d_state": 4, "feature_size": 4},
    "swin_umamba_d": {"dims": 8, "depths": (1, 2), "d_state": 4, "decoder_depth": 1},
    "vmunet": {"dims": 8, "depths": (2, 1), "decoder_depths": (2, 1), "d_state": 4},
}


def vmamba_v0_checkpoint(dims, depths, d_state, in_chans=3, patch=4, num_classes=5, ssm_ratio=2):
    """Random tensors under the key names and shapes of an official VMamba v0 classification checkpoint."""
    shapes = {
        "patch_embed.proj.weight": (dims[0], in_chans, patch, patch),
        "patch_embed.proj.bias": (dims[0],),
        "patch_embed.norm.weight": (dims[0],),
        "patch_embed.norm.bias": (dims[0],),
    }
    for i, (c, depth) in enumerate(zip(dims, depths, strict=True)):
        d, r, n = ssm_ratio * c, math.ceil(c / 16), d_state
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}."
            shapes.update({block + "ln_1.weight": (c,), block + "ln_1.bias": (c,)})
            ss = block + "self_attention."
            shapes.update(
                {
                    ss + "in_proj.weight": (2 * d, c),
                    ss + "conv2d.weight": (d, 1, 3, 3),
                    ss + "conv2d.bias": (d,),
                    ss + "x_proj_weight": (4, r + 2 * n, d),
                    ss + "dt_projs_weight": (4, d, r),
                    ss + "dt_projs_bias": (4, d),
                    ss + "A_logs": (4 * d, n),
                    ss + "Ds": (4 * d,),
                    ss + "out_norm.weight": (d,),
                    ss + "out_norm.bias": (d,),
                    ss + "out_proj.weight": (c, d),
                }
            )
        if i < len(dims) - 1:
            down = f"layers.{i}.downsample."
            shapes.update({down + "reduction.weight": (2 * c, 4 * c), down + "norm.weight": (4 * c,)})
            shapes[down + "norm.bias"] = (4 * c,)
    shapes.update({"norm.weight": (dims[-1],), "norm.bias": (dims[-1],)})
    shapes.update({"head.weight": (num_classes, dims[-1]), "head.bias": (num_classes,)})
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=generator) for k, s in shapes.items()}


def checkpoint_for(name):
    kwargs = CASES[name]
    dims = [kwargs["dims"] * 2**i for i in range(len(kwargs["depths"]))]
    return vmamba_v0_checkpoint(dims, kwargs["depths"], kwargs["d_state"])


def to_v2_names(ckpt):
    renamed = {}
    for key, value in ckpt.items():
        key = key.replace(".ln_1.", ".norm.").replace(".self_attention.", ".op.")
        key = key.replace("patch_embed.proj.", "patch_embed.0.").replace("patch_embed.norm.", "patch_embed.2.")
        key = "classifier." + key if key.split(".")[0] in ("norm", "head") else key
        renamed[key] = value
    return renamed


def not_taken(name):
    return {"patch_embed.proj.weight", "patch_embed.proj.bias"} if name == "swin_umamba" else set()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_every_encoder_tensor_is_loaded(name, spatial_dims):
    model = create(name, spatial_dims, 1, 2, **CASES[name])
    ckpt = checkpoint_for(name)
    report = load_pretrained(model, {"model": ckpt})
    encoder_keys = {k for k in model.state_dict() if k.startswith("encoder.")}
    assert encoder_keys - {f"encoder.{k}" for k in not_taken(name)} <= set(report.loaded)
    assert set(report.skipped) == CLASSIFIER_KEYS | not_taken(name)
    assert report.unexpected == []
    assert set(report.missing) == set(model.state_dict()) - set(report.loaded)
    out = model(torch.randn(1, 1, *[16] * spatial_dims))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(CASES))
def test_2d_values_are_equal(name):
    model = create(name, 2, 1, 2, **CASES[name])
    ckpt = checkpoint_for(name)
    load_pretrained(model, ckpt)
    state = model.state_dict()
    for key, value in ckpt.items():
        if key in CLASSIFIER_KEYS | not_taken(name):
            continue
        expected = value.sum(1, keepdim=True) if key == "patch_embed.proj.weight" else value
        assert torch.equal(state[f"encoder.{key}"], expected), key


def test_vmunet_mirrors_encoder_blocks_into_the_decoder():
    model = create("vmunet", 2, 1, 2, **CASES["vmunet"])
    ckpt = checkpoint_for("vmunet")
    report = load_pretrained(model, ckpt)
    state = model.state_dict()
    # encoder depths (2, 1), decoder depths (2, 1) deepest first: layers.1 -> layers_up.0, layers.0 -> layers_up.1
    for enc, dec in [("layers.0.blocks.0.", "layers_up.1.blocks.0."), ("layers.1.blocks.0.", "layers_up.0.blocks.0.")]:
        for key in [k for k in ckpt if k.startswith(enc)]:
            assert torch.equal(state[key.replace(enc, dec)], ckpt[key])
            assert key.replace(enc, dec) in report.loaded
    assert not any(k.startswith("layers_up.0.blocks.1.") for k in report.loaded)  # no layers.1.blocks.1
    assert not any(k.startswith("layers_up.1.blocks.1.") for k in state)  # layers.0.blocks.1 has no mirror


def test_3d_inflation_preserves_depth_constant_inputs():
    model = create("vmunet", 3, 1, 2, **CASES["vmunet"])
    ckpt = checkpoint_for("vmunet")
    load_pretrained(model, ckpt)
    encoder = model.encoder
    grey = torch.randn(1, 1, 8, 12)
    with torch.no_grad():
        embedded_3d = encoder.patch_embed.proj(grey.unsqueeze(2).expand(-1, -1, 4, -1, -1))
        embedded_2d = F.conv2d(
            grey.expand(-1, 3, -1, -1), ckpt["patch_embed.proj.weight"], ckpt["patch_embed.proj.bias"], stride=4
        )
        torch.testing.assert_close(embedded_3d[:, :, 0], embedded_2d, rtol=1e-4, atol=1e-5)

        merge_2d = PatchMerging(8, 2)
        merge_2d.load_state_dict(
            {k.removeprefix("layers.0.downsample."): v for k, v in ckpt.items() if ".downsample." in k}
        )
        tokens = torch.randn(1, 4, 6, 8)
        merged_3d = encoder.layers[0].downsample(tokens.unsqueeze(1).expand(-1, 2, -1, -1, -1))
        torch.testing.assert_close(merged_3d[:, 0], merge_2d(tokens), rtol=1e-4, atol=1e-5)

    conv = encoder.layers[0].blocks[0].self_attention.conv2d.weight
    torch.testing.assert_close(conv.sum(2), ckpt["layers.0.blocks.0.self_attention.conv2d.weight"])
    x_proj = encoder.layers[0].blocks[0].self_attention.x_proj_weight
    source = ckpt["layers.0.blocks.0.self_attention.x_proj_weight"]
    expected = torch.stack([source[0], source[1], source[:2].mean(0), source[2], source[3], source[2:].mean(0)])
    torch.testing.assert_close(x_proj, expected)
    a_logs = encoder.layers[0].blocks[0].self_attention.A_logs.reshape(6, 16, -1)
    torch.testing.assert_close(a_logs[3], ckpt["layers.0.blocks.0.self_attention.A_logs"].reshape(4, 16, -1)[2])


def test_v2_names_load_like_v0():
    ckpt = checkpoint_for("swin_umamba_d")
    v0 = load_pretrained(create("swin_umamba_d", 2, 1, 2, **CASES["swin_umamba_d"]), ckpt)
    v2 = load_pretrained(create("swin_umamba_d", 2, 1, 2, **CASES["swin_umamba_d"]), to_v2_names(ckpt))
    assert v2.loaded == v0.loaded
    assert v2.unexpected == []
    assert len(v2.skipped) == len(CLASSIFIER_KEYS)


def test_path_checkpoint_and_logging(tmp_path, caplog):
    path = tmp_path / "vmamba.pth"
    torch.save({"model": checkpoint_for("swin_umamba")}, path)
    with caplog.at_level(logging.INFO, logger="mambaseg.networks.pretrained"):
        report = load_pretrained(create("swin_umamba", 3, 1, 2, **CASES["swin_umamba"]), path)
    assert report.loaded and "tensors loaded" in caplog.text


def test_shape_mismatch_names_the_key_and_shapes():
    model = create("vmunet", 2, 1, 2, **{**CASES["vmunet"], "dims": 16})
    with pytest.raises(ValueError, match=r"patch_embed\.proj\.weight.*\(8, 3, 4, 4\).*\(16, 1, 4, 4\)"):
        load_pretrained(model, checkpoint_for("vmunet"))


class NotATensor:
    """Stands for the config objects some training scripts save beside the weights."""


def test_checkpoint_with_objects_is_refused_with_advice(tmp_path):
    path = tmp_path / "with_config.pth"
    torch.save({"model": checkpoint_for("vmunet"), "config": NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_pretrained(create("vmunet", 2, 1, 2, **CASES["vmunet"]), path)
