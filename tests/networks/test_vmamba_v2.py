"""VMamba v2 (the ``vssm1`` releases) as the encoder of swin_umamba, swin_umamba_d and vmunet: official checkpoints.

The checkpoints are random tensors under the official key names and shapes (no weights are downloaded). What those
are, and where it comes from:

- Layout (MzeroMiko/VMamba, ``classification/models/vmamba.py``, classes ``VSSM``, ``VSSBlock``, ``SS2D``,
  ``Mlp``, ``LayerNorm2d``, ``Linear2d``; the ``SS2D`` of forward type ``v05_noz`` with ``initialize="v0"``):
  ``patch_embed`` (``patchembed_version="v2"``) is ``Sequential(conv 3x3 s2 to C/2, id, norm, id, GELU,
  conv 3x3 s2 to C, id, norm)`` with ``norm_layer="ln2d"`` (channel first, so the permutes are identities), hence
  keys ``patch_embed.0`` / ``.2`` / ``.5`` / ``.7``; ``layers.{i}`` is ``Sequential(blocks, downsample)``, the
  down-sampling (``downsample_version="v3"``) ``Sequential(id, conv 3x3 s2 to 2c, id, norm)``, hence
  ``layers.{i}.downsample.1`` / ``.3`` for every stage but the last; a block holds ``norm``, ``op`` (SS2D),
  ``norm2`` and ``mlp`` (``fc1``, ``fc2``); the classifier is ``classifier.norm`` and ``classifier.head``.
- SS2D with ``_noz`` has no gate: ``in_proj`` maps c to d = ssm_ratio * c (``Linear2d``, no bias, weight (d, c));
  ``ssm_conv_bias=False`` leaves ``conv2d`` without bias; K = 4 orders (cross scan); r = ceil(c / 16);
  n = d_state = 1. The state-dict order of a block (own parameters first, then children: ``out_norm`` is made
  before ``in_proj``) is as a strict=False load of ``vssm_tiny_0230_ckpt_epoch_262.pth`` lists it (missing keys of
  a deeper model, printed in a public log): ``norm``, ``op.x_proj_weight``, ``op.A_logs``, ``op.Ds``,
  ``op.dt_projs_weight``, ``op.dt_projs_bias``, ``op.out_norm``, ``op.in_proj``, ``op.conv2d``, ``op.out_proj``,
  ``norm2``, ``mlp.fc1``, ``mlp.fc2``; that load reported only ``classifier.*`` as unexpected.

  =====================================  ======================================
  key (stage i of width c, block j)      shape
  =====================================  ======================================
  patch_embed.0.weight / .bias           (C/2, 3, 3, 3) / (C/2,)
  patch_embed.2.weight / .bias           (C/2,)
  patch_embed.5.weight / .bias           (C, C/2, 3, 3) / (C,)
  patch_embed.7.weight / .bias           (C,)
  layers.i.blocks.j.norm.weight / .bias  (c,)
  ...op.x_proj_weight                    (4, r + 2n, d)
  ...op.A_logs                           (4d, n)
  ...op.Ds                               (4d,)
  ...op.dt_projs_weight                  (4, d, r)
  ...op.dt_projs_bias                    (4, d)
  ...op.out_norm.weight / .bias          (d,)
  ...op.in_proj.weight                   (d, c)
  ...op.conv2d.weight                    (d, 1, 3, 3)
  ...op.out_proj.weight                  (c, d)
  ...norm2.weight / .bias                (c,)
  ...mlp.fc1.weight / .bias              (4c, c) / (4c,)
  ...mlp.fc2.weight / .bias              (c, 4c) / (c,)
  layers.i.downsample.1.weight / .bias   (2c, c, 3, 3) / (2c,)
  layers.i.downsample.3.weight / .bias   (2c,)
  classifier.norm.weight / .bias         (8C,)
  classifier.head.weight / .bias         (1000, 8C) / (1000,)
  =====================================  ======================================

- Released checkpoints (GitHub release ``#v2cls`` of MzeroMiko/VMamba) and their configs: the ``s1`` ones
  (``classification/configs/vssm/vmambav2v_{small,base}_224.yaml``; tiny from the author's evaluation script
  ``analyze``: ``t0230s``) with ssm_ratio 1.0 and ``NORM_LAYER: ln2d``, and the ``s2`` ones
  (``classification/configs/vssm/vmambav2_{tiny,small,base}_224.yaml``) with ssm_ratio 2.0; all with
  ``SSM_D_STATE: 1``, ``SSM_CONV: 3``, ``SSM_CONV_BIAS: false``, ``SSM_FORWARDTYPE: v05_noz``, ``MLP_RATIO: 4.0``,
  ``DOWNSAMPLE: v3``, ``PATCHEMBED: v2``. Their published parameter counts (VMamba's README: T[s1l8] 30M,
  T[s2l5] 31M, S[s1l20] 49M, S[s2l15] 50M, B[s1l20] 87M, B[s2l15] 89M) are checked against the table.
- Computation: ``official_features`` below re-writes VMamba v2's forward (``forwardv2`` of SS2D with
  ``CrossScan`` / ``CrossMerge``, ``VSSBlock._forward``, the stem and down-sampling) on the checkpoint's tensors by
  their official names; the loaded encoder must give the same stage features.

The full-size releases (networks of 30-190M parameters) are ``slow``; the fast tests use the same layout at
``MINI`` size.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.networks import create, load_pretrained
from mambaseg.networks.vmamba_encoder import VSSEncoder
from mambaseg.ops import selective_scan

RELEASES = {
    "vssm1_tiny_0230s_ckpt_epoch_264.pth": {"dims": 96, "depths": (2, 2, 8, 2), "ssm_ratio": 1.0, "params": 30e6},
    "vssm1_small_0229s_ckpt_epoch_240.pth": {"dims": 96, "depths": (2, 2, 20, 2), "ssm_ratio": 1.0, "params": 49e6},
    "vssm1_base_0229s_ckpt_epoch_225.pth": {"dims": 128, "depths": (2, 2, 20, 2), "ssm_ratio": 1.0, "params": 87e6},
    "vssm_tiny_0230_ckpt_epoch_262.pth": {"dims": 96, "depths": (2, 2, 5, 2), "ssm_ratio": 2.0, "params": 31e6},
    "vssm_small_0229_ckpt_epoch_222.pth": {"dims": 96, "depths": (2, 2, 15, 2), "ssm_ratio": 2.0, "params": 50e6},
    "vssm_base_0229_ckpt_epoch_237.pth": {"dims": 128, "depths": (2, 2, 15, 2), "ssm_ratio": 2.0, "params": 89e6},
}
TINY = "vssm1_tiny_0230s_ckpt_epoch_264.pth"
MINI = {"dims": 8, "depths": (1, 2), "ssm_ratio": 1.0}  # the same layout at a test size
NETWORKS = {"swin_umamba": {}, "swin_umamba_d": {"decoder_depth": 1}, "vmunet": {}}


def vssm1_shapes(dims, depths, ssm_ratio, d_state=1, in_chans=3, num_classes=1000):
    """Official key -> shape of a VMamba v2 classification checkpoint, in state-dict order (see the module doc)."""
    widths = [dims * 2**i for i in range(len(depths))]
    half = dims // 2
    shapes = {
        "patch_embed.0.weight": (half, in_chans, 3, 3),
        "patch_embed.0.bias": (half,),
        "patch_embed.2.weight": (half,),
        "patch_embed.2.bias": (half,),
        "patch_embed.5.weight": (dims, half, 3, 3),
        "patch_embed.5.bias": (dims,),
        "patch_embed.7.weight": (dims,),
        "patch_embed.7.bias": (dims,),
    }
    for i, (c, depth) in enumerate(zip(widths, depths, strict=True)):
        d, r, n, h = int(ssm_ratio * c), math.ceil(c / 16), d_state, 4 * c
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}."
            op = block + "op."
            shapes.update(
                {
                    block + "norm.weight": (c,),
                    block + "norm.bias": (c,),
                    op + "x_proj_weight": (4, r + 2 * n, d),
                    op + "A_logs": (4 * d, n),
                    op + "Ds": (4 * d,),
                    op + "dt_projs_weight": (4, d, r),
                    op + "dt_projs_bias": (4, d),
                    op + "out_norm.weight": (d,),
                    op + "out_norm.bias": (d,),
                    op + "in_proj.weight": (d, c),
                    op + "conv2d.weight": (d, 1, 3, 3),
                    op + "out_proj.weight": (c, d),
                    block + "norm2.weight": (c,),
                    block + "norm2.bias": (c,),
                    block + "mlp.fc1.weight": (h, c),
                    block + "mlp.fc1.bias": (h,),
                    block + "mlp.fc2.weight": (c, h),
                    block + "mlp.fc2.bias": (c,),
                }
            )
        if i < len(depths) - 1:
            down = f"layers.{i}.downsample."
            shapes.update({down + "1.weight": (2 * c, c, 3, 3), down + "1.bias": (2 * c,)})
            shapes.update({down + "3.weight": (2 * c,), down + "3.bias": (2 * c,)})
    shapes.update({"classifier.norm.weight": (widths[-1],), "classifier.norm.bias": (widths[-1],)})
    shapes.update({"classifier.head.weight": (num_classes, widths[-1]), "classifier.head.bias": (num_classes,)})
    return shapes


def ours(key):
    """The ``VSSEncoder`` name of an official v2 key (the renaming ``networks.pretrained`` documents)."""
    parts = key.split(".")
    if parts[0] == "patch_embed":
        parts[1] = {"0": "conv1", "2": "norm1", "5": "conv2", "7": "norm2"}[parts[1]]
    elif parts[2] == "downsample":
        parts[3] = {"1": "conv", "3": "norm"}[parts[3]]
    elif parts[4] in ("norm", "op"):
        parts[4] = {"norm": "ln_1", "op": "self_attention"}[parts[4]]
    return ".".join(parts)


def random_checkpoint(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=generator) for k, s in shapes.items()}


def layout(release):
    return {k: v for k, v in release.items() if k != "params"}


def v2_kwargs(dims, depths, ssm_ratio):
    return {"vss_version": "v2", "dims": dims, "depths": depths, "d_state": 1, "ssm_ratio": ssm_ratio}


def build(name, spatial_dims=2, in_channels=3, **release):
    kwargs = {**NETWORKS[name], **v2_kwargs(**release)}
    if name == "swin_umamba":  # its stem in place of the first half of VMamba's: all of the second half loads
        kwargs["feature_size"] = release["dims"] // 2
    if name == "vmunet" and len(release["depths"]) != 4:  # else VM-UNet's own (2, 2, 2, 1)
        kwargs["decoder_depths"] = tuple(reversed(release["depths"]))
    return create(name, spatial_dims, in_channels, 2, **kwargs)


def not_taken(name):
    """Official keys a network does not take: swin_umamba's stem replaces the first half of VMamba's."""
    classifier = {"classifier.norm.weight", "classifier.norm.bias", "classifier.head.weight", "classifier.head.bias"}
    stem = {"patch_embed.0.weight", "patch_embed.0.bias", "patch_embed.2.weight", "patch_embed.2.bias"}
    return classifier | (stem if name == "swin_umamba" else set())


def check_every_tensor_arrived(model, ckpt, name):
    state = model.state_dict()
    for key, value in ckpt.items():
        if key not in not_taken(name):
            assert torch.equal(state["encoder." + ours(key)], value), key


@pytest.mark.parametrize("release", list(RELEASES))
def test_official_table_has_the_published_parameter_count(release):
    shapes = vssm1_shapes(**layout(RELEASES[release]))
    assert sum(math.prod(s) for s in shapes.values()) == pytest.approx(RELEASES[release]["params"], rel=0.02)


def encoder_matches_table(release):
    encoder = VSSEncoder(2, 3, **v2_kwargs(**layout(release)))
    state = encoder.state_dict()
    shapes = vssm1_shapes(**layout(release))
    mapped = {ours(k): s for k, s in shapes.items() if not k.startswith("classifier.")}
    assert {k: tuple(v.shape) for k, v in state.items()} == mapped


def test_tiny_release_table_is_the_v2_encoder():
    encoder_matches_table(RELEASES[TINY])


@pytest.mark.slow
@pytest.mark.parametrize("release", [r for r in RELEASES if r != TINY])
def test_release_tables_are_the_v2_encoder(release):
    encoder_matches_table(RELEASES[release])


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_tensor_of_a_v2_checkpoint_arrives(name, tmp_path):
    ckpt = random_checkpoint(vssm1_shapes(**MINI))
    path = tmp_path / "vssm1.pth"
    torch.save({"model": ckpt}, path)
    model = build(name, **MINI)
    report = load_pretrained(model, path)
    check_every_tensor_arrived(model, ckpt, name)
    assert set(report.skipped) == not_taken(name)
    assert report.unexpected == []
    assert not any(k.startswith("encoder.") for k in report.missing)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()


def ln2d(x, ckpt, name):
    """VMamba's LayerNorm2d: a LayerNorm over the channels of (b, c, h, w)."""
    w, b = ckpt[name + ".weight"], ckpt[name + ".bias"]
    return F.layer_norm(x.permute(0, 2, 3, 1), w.shape, w, b).permute(0, 3, 1, 2)


def official_ss2d(x, ckpt, op):
    """SS2D of forward type v05_noz, channel first, written from VMamba's code: (b, c, h, w) -> (b, c, h, w)."""
    b, _, h, w = x.shape
    x = F.conv2d(x, ckpt[op + "in_proj.weight"][:, :, None, None])  # Linear2d, (b, d, h, w)
    d = x.shape[1]
    x = F.silu(F.conv2d(x, ckpt[op + "conv2d.weight"], padding=1, groups=d))
    xs = torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)], dim=1)  # CrossScan: hw, wh
    xs = torch.cat([xs, xs.flip(-1)], dim=1)  # and both reversed: (b, 4, d, l)
    r, n = ckpt[op + "dt_projs_weight"].shape[2], ckpt[op + "A_logs"].shape[1]
    dts, bs, cs = torch.einsum("bkdl,kcd->bkcl", xs, ckpt[op + "x_proj_weight"]).split([r, n, n], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, ckpt[op + "dt_projs_weight"])
    ys = selective_scan(
        xs.reshape(b, 4 * d, -1),
        dts.reshape(b, 4 * d, -1),
        -torch.exp(ckpt[op + "A_logs"]),
        bs.contiguous(),
        cs.contiguous(),
        ckpt[op + "Ds"],
        delta_bias=ckpt[op + "dt_projs_bias"].reshape(-1),
        delta_softplus=True,
    ).view(b, 4, d, -1)
    wh = (ys[:, 1] + ys[:, 3].flip(-1)).view(b, d, w, h).transpose(2, 3).reshape(b, d, -1)  # CrossMerge
    y = ln2d((ys[:, 0] + ys[:, 2].flip(-1) + wh).view(b, d, h, w), ckpt, op + "out_norm")
    return F.conv2d(y, ckpt[op + "out_proj.weight"][:, :, None, None])


def official_features(ckpt, x, depths):
    """VMamba v2's ``Backbone_VSSM`` features (before ``outnorm``) of each stage, from the checkpoint's tensors."""
    x = F.conv2d(x, ckpt["patch_embed.0.weight"], ckpt["patch_embed.0.bias"], stride=2, padding=1)
    x = F.gelu(ln2d(x, ckpt, "patch_embed.2"))
    x = F.conv2d(x, ckpt["patch_embed.5.weight"], ckpt["patch_embed.5.bias"], stride=2, padding=1)
    x = ln2d(x, ckpt, "patch_embed.7")
    features = []
    for i, depth in enumerate(depths):
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}."
            x = x + official_ss2d(ln2d(x, ckpt, block + "norm"), ckpt, block + "op.")
            fc1, fc2 = (ckpt[block + f"mlp.fc{k}.weight"][:, :, None, None] for k in (1, 2))
            hidden = F.gelu(F.conv2d(ln2d(x, ckpt, block + "norm2"), fc1, ckpt[block + "mlp.fc1.bias"]))
            x = x + F.conv2d(hidden, fc2, ckpt[block + "mlp.fc2.bias"])
        features.append(x)
        if i < len(depths) - 1:
            down = f"layers.{i}.downsample."
            x = F.conv2d(x, ckpt[down + "1.weight"], ckpt[down + "1.bias"], stride=2, padding=1)
            x = ln2d(x, ckpt, down + "3")
    return features


def test_v2_encoder_computes_as_vmamba():
    """With a checkpoint loaded, the encoder's stage features equal VMamba's forward written from its code."""
    ckpt = {k: 0.3 * v for k, v in random_checkpoint(vssm1_shapes(**MINI)).items()}
    encoder = VSSEncoder(2, 3, drop_path_rate=0.0, **v2_kwargs(**MINI)).eval()
    load_pretrained(encoder, ckpt)
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        ours = [f.movedim(-1, 1) for f in encoder(x)]
        theirs = official_features(ckpt, x, MINI["depths"])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_vmunet_mirrors_v2_blocks_into_the_decoder():
    ckpt = random_checkpoint(vssm1_shapes(**MINI))
    model = build("vmunet", **MINI)
    load_pretrained(model, ckpt)
    state = model.state_dict()
    # encoder depths (1, 2), decoder depths (2, 1) deepest first: layers.1 -> layers_up.0, layers.0 -> layers_up.1
    for enc, dec in [("layers.1.blocks.1.", "layers_up.0.blocks.1."), ("layers.0.blocks.0.", "layers_up.1.blocks.0.")]:
        for key in [k for k in ckpt if k.startswith(enc)]:
            assert torch.equal(state[ours(key).replace(enc, dec)], ckpt[key]), key
    assert "layers_up.0.blocks.1.mlp.fc2.bias" in state


def test_grey_input_and_1x1_convolution_weights():
    """One input channel takes the stem kernel summed over RGB; (o, i, 1, 1) weights (``Linear2d`` saved as a 1x1
    convolution) load as linear weights."""
    ckpt = random_checkpoint(vssm1_shapes(**MINI))
    as_conv = {k: v[..., None, None] if k.endswith(("in_proj.weight", "fc1.weight")) else v for k, v in ckpt.items()}
    model = build("vmunet", in_channels=1, **MINI)
    load_pretrained(model, as_conv)
    state = model.state_dict()
    torch.testing.assert_close(state["encoder.patch_embed.conv1.weight"], ckpt["patch_embed.0.weight"].sum(1, True))
    assert torch.equal(
        state["encoder.layers.1.blocks.0.self_attention.in_proj.weight"], ckpt["layers.1.blocks.0.op.in_proj.weight"]
    )
    assert torch.equal(state["encoder.layers.0.blocks.0.mlp.fc1.weight"], ckpt["layers.0.blocks.0.mlp.fc1.weight"])


@pytest.mark.parametrize("name", ["swin_umamba", "vmunet"])
def test_v2_checkpoint_into_3d(name):
    ckpt = random_checkpoint(vssm1_shapes(**MINI))
    model = build(name, spatial_dims=3, in_channels=1, **MINI)
    report = load_pretrained(model, ckpt)
    assert report.unexpected == []
    encoder = model.encoder
    for ours, official in [
        (encoder.layers[0].downsample.conv.weight, "layers.0.downsample.1.weight"),
        (encoder.layers[1].blocks[1].self_attention.conv2d.weight, "layers.1.blocks.1.op.conv2d.weight"),
        (encoder.patch_embed.conv2.weight, "patch_embed.5.weight"),
    ]:
        torch.testing.assert_close(ours.sum(2), ckpt[official])  # inflated along the new axis 0, divided by 3
    x_proj = encoder.layers[0].blocks[0].self_attention.x_proj_weight
    source = ckpt["layers.0.blocks.0.op.x_proj_weight"]
    torch.testing.assert_close(x_proj[[0, 1, 3, 4]], source)  # 2D orders keep their place in the 6 of 3D
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 1, 32, 32, 32))).all()


def test_swin_umamba_skips_the_second_stem_convolution_of_another_width():
    ckpt = random_checkpoint(vssm1_shapes(**MINI))
    model = create("swin_umamba", 2, 1, 2, feature_size=6, **v2_kwargs(**MINI))
    report = load_pretrained(model, ckpt)
    assert "patch_embed.5.weight" in report.skipped and "patch_embed.5.bias" not in report.skipped
    assert torch.equal(model.state_dict()["encoder.patch_embed.norm2.weight"], ckpt["patch_embed.7.weight"])


def refused(model, ckpt, match):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        load_pretrained(model, ckpt)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "a refused checkpoint loaded"


@pytest.mark.parametrize("name", ["swin_umamba", "vmunet"])
def test_a_deeper_checkpoint_is_refused_naming_its_first_extra_key(name):
    small = random_checkpoint(vssm1_shapes(**{**MINI, "depths": (1, 3)}))
    refused(build(name, **MINI), small, r"key 'layers\.1\.blocks\.2\.norm\.weight' of shape \(16,\) has no counterpart")


@pytest.mark.parametrize("name", ["swin_umamba", "vmunet"])
def test_a_shallower_checkpoint_is_refused_naming_the_first_tensor_it_lacks(name):
    tiny = random_checkpoint(vssm1_shapes(**{**MINI, "depths": (1, 1)}))
    refused(build(name, **MINI), tiny, r"encoder tensor 'encoder\.layers\.1\.blocks\.1\.ln_1\.weight' of shape \(16,\)")


def test_a_wider_checkpoint_is_refused_naming_the_key_and_shapes():
    base = random_checkpoint(vssm1_shapes(**{**MINI, "dims": 16}))
    refused(build("vmunet", **MINI), base, r"'patch_embed\.0\.weight' has shape \(8, 3, 3, 3\).*\(4, 3, 3, 3\)")


def test_another_ssm_ratio_is_refused_naming_the_key_and_shapes():
    s2 = random_checkpoint(vssm1_shapes(**{**MINI, "ssm_ratio": 2.0}))
    refused(build("swin_umamba", **MINI), s2, r"'layers\.0\.blocks\.0\.op\.x_proj_weight' has shape \(4, 3, 16\)")


def test_v0_checkpoint_into_v2_and_v2_into_v0_are_refused():
    v0 = {"patch_embed.proj.weight": torch.randn(8, 3, 4, 4), "patch_embed.proj.bias": torch.randn(8)}
    refused(build("vmunet", **MINI), v0, r"key 'patch_embed\.proj\.weight' of shape \(8, 3, 4, 4\)")
    v2 = random_checkpoint(vssm1_shapes(**MINI))
    v0_model = create("vmunet", 2, 3, 2, dims=8, depths=(1, 2), decoder_depths=(2, 1), d_state=1, ssm_ratio=1.0)
    refused(v0_model, v2, r"key 'patch_embed\.0\.weight' .* \(vss_version 'v0'")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swin_umamba", "vmunet"])
@pytest.mark.parametrize("release", list(RELEASES))
def test_official_release_loads_by_key_and_shape(release, name, tmp_path):
    ckpt = random_checkpoint(vssm1_shapes(**layout(RELEASES[release])))
    path = tmp_path / release
    torch.save({"model": ckpt}, path)
    model = build(name, **layout(RELEASES[release]))
    report = load_pretrained(model, path)
    check_every_tensor_arrived(model, ckpt, name)
    assert set(report.skipped) == not_taken(name) and report.unexpected == []
    if release == TINY:
        with torch.no_grad():
            assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.slow
def test_small_release_into_tiny_is_refused():
    small = random_checkpoint(vssm1_shapes(**layout(RELEASES["vssm1_small_0229s_ckpt_epoch_240.pth"])))
    refused(build("vmunet", **layout(RELEASES[TINY])), small, r"key 'layers\.2\.blocks\.8\.norm\.weight'")
