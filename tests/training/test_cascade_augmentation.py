"""The cascade's transforms: the previous stage mask moved into one-hot image channels, and its perturbations."""

import numpy as np
import torch

from mambaseg.inference.cascade import mask_on_grid, one_hot
from mambaseg.preprocessing.case import CaseProperties
from mambaseg.training.cascade import (
    MoveMaskToImaged,
    RandBinaryOperatord,
    RandRemoveComponentd,
    ball,
    binary_operator,
)


def test_move_mask_to_image_appends_one_hot_channels_and_keeps_the_reference():
    label = torch.zeros(2, 4, 4, dtype=torch.int64)
    label[0, 0, 0] = 1
    label[1, 1, 1], label[1, 2, 2] = 1, 2
    out = MoveMaskToImaged([1, 2])({"image": torch.ones(1, 4, 4), "label": label})
    assert out["image"].shape == (3, 4, 4) and out["label"].shape == (1, 4, 4)
    assert out["image"][1].sum() == 1 and out["image"][1, 1, 1] == 1 and out["image"][2, 2, 2] == 1
    assert torch.equal(out["label"][0], label[0])


def test_binary_operators_on_a_cube():
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[3:6, 3:6, 3:6] = True
    structure = ball(1, 3)
    assert structure.sum() == 7  # the centre and its six face neighbours
    assert binary_operator(mask, "dilation", structure).sum() == 27 + 6 * 9
    assert binary_operator(mask, "erosion", structure).sum() == 1
    assert binary_operator(mask, "opening", structure).sum() < 27
    assert binary_operator(mask, "closing", structure).sum() == 27


def test_binary_operator_keeps_one_label_per_voxel():
    image = torch.zeros(3, 12, 12, 12)
    image[1, 2:6, 2:6, 2:6] = 1
    image[2, 6:10, 6:10, 6:10] = 1
    transform = RandBinaryOperatord(2, p_per_label=1.0)
    changed = 0
    for seed in range(8):
        transform.set_random_state(seed)
        out = transform({"image": image})["image"]
        assert out[1:].sum(0).max() <= 1 and torch.equal(out[0], image[0])
        changed += int(not torch.equal(out, image))
    assert changed > 0


def test_remove_component_drops_small_ones_only():
    image = torch.zeros(2, 10, 10, 10)
    image[1, :, :, :6] = 1  # 60% of the patch: never removed
    image[1, 8, 8, 8] = 1  # a single voxel: removable
    transform = RandRemoveComponentd(1, p_per_label=1.0)
    transform.set_random_state(0)
    out = transform({"image": image})["image"]
    assert out[1, 8, 8, 8] == 0 and out[1].sum() == 600


def test_mask_on_grid_follows_the_preprocessing_geometry():
    properties = CaseProperties(
        spacing=(1.0, 1.0, 2.0),  # ITK order: x, y, z; array (z, y, x) spacing (2, 1, 1)
        origin=(0.0, 0.0, 0.0),
        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
        transpose_forward=(0, 1, 2),
        shape_before_crop=(4, 8, 8),
        bbox=[[1, 3], [0, 8], [0, 8]],
        shape_after_crop=(2, 8, 8),
        target_spacing=(1.0, 1.0, 1.0),
        shape_after_resampling=(4, 8, 8),
    )
    mask = np.zeros((4, 8, 8), dtype=np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    seg = mask_on_grid(mask, properties)
    assert seg.shape == (1, 4, 8, 8) and seg[0, :, 2:6, 2:6].all() and seg[0, :, :2].sum() == 0
    assert one_hot(seg, [1]).shape == (1, 4, 8, 8)
