"""Augmentation: determinism, each transform's effect, label integrity, mirroring, dummy 2D, shapes."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mambaseg.training.augmentation import (
    RandRotateScaled,
    build_train_transforms,
    build_val_transforms,
    needs_dummy_2d,
    sample_multiplier,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "augmentation"
PATCH_3D = (12, 16, 14)
PATCH_2D = (20, 24)
GROUPS = ("spatial", "noise", "blur", "brightness", "contrast", "low_resolution", "inverted_gamma", "gamma", "mirror")


def load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def only(group: str, **overrides) -> dict:
    """The nnU-Net config with every group off except ``group``, whose probabilities are set to 1."""
    config = load("nnunet")
    out = {name: {"p": 0} for name in GROUPS if name != "spatial"}
    out["spatial"] = {"p_rotation": 0, "p_scaling": 0}
    chosen = copy.deepcopy(config[group])
    for key in ("p", "p_rotation", "p_scaling", "p_per_channel"):
        if key in chosen:
            chosen[key] = 1.0
    chosen.update(overrides)
    out[group] = chosen
    return out


def sample(shape=PATCH_3D, channels=2, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    image = np.stack([sum(grid) + 0.1 * c + 0.05 * rng.standard_normal(shape) for c in range(channels)])
    label = np.zeros((1, *shape), dtype=np.int16)
    centre = tuple(slice(n // 4, 3 * n // 4) for n in shape)
    label[(0, *centre)] = 1
    label[(0, *tuple(slice(n // 3, n // 2) for n in shape))] = 2
    return {"image": image.astype(np.float32), "label": label}


def test_configs_hold_every_group():
    assert set(load("nnunet")) == set(GROUPS)
    assert set(load("none")) == set(GROUPS)


def test_none_config_is_identity_and_converts_types():
    data = sample()
    out = build_train_transforms(load("none"), 3, PATCH_3D, (0, 1, 2), seed=0)(data)
    assert type(out["image"]) is torch.Tensor and out["image"].dtype == torch.float32
    assert type(out["label"]) is torch.Tensor and out["label"].dtype == torch.int64
    assert torch.equal(out["image"], torch.from_numpy(data["image"]))
    assert torch.equal(out["label"], torch.from_numpy(data["label"]).long())


def test_val_transforms_only_convert_types():
    data = sample()
    out = build_val_transforms()(data)
    assert torch.equal(out["image"], torch.from_numpy(data["image"]))
    assert out["label"].dtype == torch.int64 and torch.equal(out["label"], torch.from_numpy(data["label"]).long())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_seed_gives_same_output(spatial_dims):
    patch = PATCH_2D if spatial_dims == 2 else PATCH_3D
    config = {name: only(name)[name] for name in GROUPS}
    outs = []
    for seed in (7, 7, 8):
        pipeline = build_train_transforms(config, spatial_dims, patch, tuple(range(spatial_dims)), seed=seed)
        outs.append([pipeline(sample(patch, seed=i)) for i in range(3)])
    for a, b in zip(outs[0], outs[1], strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert any(not torch.equal(a["image"], c["image"]) for a, c in zip(outs[0], outs[2], strict=True))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_each_transform_changes_image_and_keeps_label_values(group, spatial_dims):
    patch = PATCH_2D if spatial_dims == 2 else PATCH_3D
    data = sample(patch)
    changed = False
    for seed in range(4):  # mirroring may draw no axis; a few seeds make a change certain
        out = build_train_transforms(only(group), spatial_dims, patch, tuple(range(spatial_dims)), seed=seed)(data)
        assert out["image"].shape == data["image"].shape and out["label"].shape == data["label"].shape
        assert torch.isfinite(out["image"]).all()
        assert set(out["label"].unique().tolist()) <= set(np.unique(data["label"]).tolist())
        changed |= not torch.allclose(out["image"], torch.from_numpy(data["image"]))
    assert changed
    assert np.array_equal(data["label"], sample(patch)["label"])  # the input is not modified
    assert np.array_equal(data["image"], sample(patch)["image"])


def test_intensity_transforms_leave_label_untouched():
    data = sample()
    for group in ("noise", "blur", "brightness", "contrast", "low_resolution", "inverted_gamma", "gamma"):
        out = build_train_transforms(only(group), 3, PATCH_3D, None, seed=1)(data)
        assert torch.equal(out["label"], torch.from_numpy(data["label"]).long())


def test_mirroring_flips_image_and_label_together():
    data = sample()
    image, label = torch.from_numpy(data["image"]), torch.from_numpy(data["label"]).long()
    seen = set()
    for seed in range(12):
        out = build_train_transforms(only("mirror", p=0.5), 3, PATCH_3D, (0, 2), seed=seed)(data)
        matches = [
            axes
            for axes in ((), (1,), (3,), (1, 3))
            if torch.equal(out["image"], image.flip(axes)) and torch.equal(out["label"], label.flip(axes))
        ]
        assert len(matches) == 1  # exactly one consistent flip of both, never along axis 1 (spatial 1)
        seen.add(matches[0])
    assert seen == {(), (1,), (3,), (1, 3)}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_spatial_transform_keeps_labels_integer_and_patch_size(spatial_dims):
    patch = PATCH_2D if spatial_dims == 2 else PATCH_3D
    for seed in range(3):
        out = build_train_transforms(only("spatial"), spatial_dims, patch, None, seed=seed)(sample(patch))
        assert out["label"].dtype == torch.int64
        assert set(out["label"].unique().tolist()) <= {0, 1, 2}
        assert out["image"].shape[1:] == patch and out["label"].shape[1:] == patch


def test_spatial_transform_crops_larger_input_to_patch_size():
    big = sample((16, 20, 18))
    for group in ("spatial", "noise"):  # with and without rotation/scaling
        out = build_train_transforms(only(group), 3, PATCH_3D, None, seed=0)(big)
        assert out["image"].shape == (2, *PATCH_3D) and out["label"].shape == (1, *PATCH_3D)


def test_dummy_2d_keeps_volume_constant_along_axis_0():
    shape = (6, 24, 24)
    rng = np.random.default_rng(0)
    plane = rng.random((24, 24)).astype(np.float32)
    image = np.broadcast_to(plane, (1, *shape)).copy()
    label = np.broadcast_to((plane > 0.5).astype(np.int16), (1, *shape)).copy()
    for group in ("spatial", "low_resolution"):
        for seed in range(3):
            pipeline = build_train_transforms(only(group), 3, shape, None, anisotropic=True, seed=seed)
            out = pipeline({"image": image, "label": label})
            assert not torch.allclose(out["image"], torch.from_numpy(image))
            assert torch.allclose(out["image"], out["image"][:, :1].expand_as(out["image"]), atol=1e-5)
            assert torch.equal(out["label"], out["label"][:, :1].expand_as(out["label"]))
    # a full 3-D rotation does mix the slices
    out = build_train_transforms(only("spatial", p_scaling=0), 3, shape, None, seed=0)({"image": image, "label": label})
    assert not torch.allclose(out["image"], out["image"][:, :1].expand_as(out["image"]), atol=1e-3)


def test_rotation_ranges_follow_nnunet():
    config = load("nnunet")

    def spatial_of(spatial_dims, patch, anisotropic=False) -> RandRotateScaled:
        pipeline = build_train_transforms(config, spatial_dims, patch, None, anisotropic=anisotropic)
        return next(t for t in pipeline.transforms if isinstance(t, RandRotateScaled))

    assert spatial_of(3, (32, 32, 32)).max_rotation == pytest.approx(math.radians(30))
    dummy = spatial_of(3, (8, 64, 64), anisotropic=True)
    assert dummy.max_rotation == pytest.approx(math.pi) and dummy.in_plane
    assert spatial_of(2, (64, 64)).max_rotation == pytest.approx(math.pi)
    assert spatial_of(2, (32, 64)).max_rotation == pytest.approx(math.radians(15))
    assert needs_dummy_2d((8, 64, 64)) and not needs_dummy_2d((24, 64, 64)) and not needs_dummy_2d((64, 64))


def test_multiplier_sampling_splits_at_one():
    rng = np.random.RandomState(0)
    draws = np.array([sample_multiplier(rng, 0.75, 1.25) for _ in range(4000)])
    assert draws.min() >= 0.75 and draws.max() <= 1.25
    assert abs((draws < 1).mean() - 0.5) < 0.05
    assert all(1.0 <= sample_multiplier(rng, 1.2, 1.5) <= 1.5 for _ in range(50))


def test_config_errors_name_the_offending_value():
    with pytest.raises(ValueError, match="unknown groups \\['elastic'\\]"):
        build_train_transforms({"elastic": {"p": 1}}, 3, PATCH_3D, None)
    with pytest.raises(ValueError, match="unknown keys \\['sigmaa'\\] in 'blur'"):
        build_train_transforms({"blur": {"p": 1, "sigmaa": 1}}, 3, PATCH_3D, None)
    with pytest.raises(ValueError, match="'gamma' is enabled but lacks"):
        build_train_transforms({"gamma": {"p": 1}}, 3, PATCH_3D, None)
    with pytest.raises(ValueError, match="mirror axes"):
        build_train_transforms(load("nnunet"), 2, PATCH_2D, (0, 2))
    with pytest.raises(ValueError, match="dummy 2D"):
        build_train_transforms(load("nnunet"), 2, PATCH_2D, None, anisotropic=True)
