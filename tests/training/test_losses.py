"""Losses against hand-computed values: Dice, Dice + CE, ignore label, regions, deep supervision."""

import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.training.losses import (
    DeepSupervisionLoss,
    DiceBCERegionLoss,
    DiceCELoss,
    build_loss,
    build_training_loss,
    deep_supervision_targets,
    deep_supervision_weights,
    list_losses,
    region_targets,
    regions_from_labels,
    soft_dice,
)


def test_soft_dice_hand_computed():
    probs = torch.tensor([0.8, 0.6, 0.1, 0.0]).view(1, 1, 4)
    onehot = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 4)
    # intersect 1.4, sum_pred 1.5, sum_gt 2 -> 2.8 / 3.5 = 0.8
    assert soft_dice(probs, onehot, smooth=0.0).item() == pytest.approx(0.8)
    smooth = 1e-5
    expected = (2.8 + smooth) / (3.5 + smooth)
    assert soft_dice(probs, onehot, smooth=smooth).item() == pytest.approx(expected)


def test_perfect_prediction_gives_dice_loss_minus_one():
    target = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]]).view(2, 1, 4)
    logits = 50.0 * F.one_hot(target[:, 0], 3).permute(0, 2, 1).float()  # saturated softmax
    dice_only = DiceCELoss(weight_ce=0)(logits, target)
    assert dice_only.item() == pytest.approx(-1.0, abs=1e-6)
    total = DiceCELoss()(logits, target)
    assert total.item() == pytest.approx(-1.0, abs=1e-6)  # CE is ~0


def test_dice_without_background_ignores_channel_zero():
    # channel 0 predicted badly, channel 1 perfectly: do_bg=False sees only channel 1
    probs_logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2) -> softmax 0.5 everywhere
    target = torch.tensor([[[1, 0]]])
    loss = DiceCELoss(weight_ce=0, smooth=0.0)(probs_logits, target)
    # channel 1: p = (0.5, 0.5), g = (1, 0): 2 * 0.5 / (1 + 1) = 0.5
    assert loss.item() == pytest.approx(-0.5)


def test_ce_term_equals_torch_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 1, 5, 6))
    ce_only = DiceCELoss(weight_dice=0)(logits, target)
    torch.testing.assert_close(ce_only, F.cross_entropy(logits, target[:, 0]))
    dice_only = DiceCELoss(weight_ce=0)(logits, target)
    torch.testing.assert_close(DiceCELoss()(logits, target), ce_only + dice_only)


def test_label_map_without_channel_axis_is_accepted():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    torch.testing.assert_close(DiceCELoss()(logits, target), DiceCELoss()(logits, target[:, None]))


def test_batch_dice_differs_from_per_sample_dice():
    # sample 0: foreground of 1 voxel predicted with p=1; sample 1: foreground of 3 voxels, none predicted
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 1, 4)
    onehot = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]).view(2, 1, 4)
    per_sample = soft_dice(probs, onehot, smooth=0.0)
    batch = soft_dice(probs, onehot, smooth=0.0, batch_dice=True)
    assert per_sample.item() == pytest.approx((1.0 + 0.0) / 2)  # mean of 2/2 and 0/3
    assert batch.item() == pytest.approx(2 * 1.0 / (1.0 + 4.0))  # 2 * 1 / (sum_pred 1 + sum_gt 4)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_ignore_label_changes_neither_loss_nor_gradient(batch_dice):
    torch.manual_seed(2)
    ignore = 3
    logits = torch.randn(2, 3, 6, 5)
    target = torch.randint(0, 3, (2, 1, 6, 5))
    ignored = torch.zeros_like(target, dtype=torch.bool)
    ignored[:, :, :2] = True
    target_ignored = torch.where(ignored, ignore, target)
    loss_fn = DiceCELoss(batch_dice=batch_dice, ignore_label=ignore)

    a = logits.clone().requires_grad_(True)
    loss_a = loss_fn(a, target_ignored)
    loss_a.backward()
    assert torch.all(a.grad[ignored.expand_as(a)] == 0)

    # other logits at the ignored voxels do not change the loss
    b = logits.clone()
    b[ignored.expand_as(b)] = torch.randn(int(ignored.expand_as(b).sum()))
    torch.testing.assert_close(loss_fn(b, target_ignored), loss_a.detach())

    # and the loss equals the one over the valid voxels alone, computed without an ignore label
    valid = logits[:, :, 2:]
    ref = DiceCELoss(batch_dice=batch_dice)(valid, target[:, :, 2:])
    torch.testing.assert_close(loss_a.detach(), ref)


def test_all_voxels_ignored_gives_finite_loss():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.full((1, 1, 3, 3), 2)
    loss = DiceCELoss(ignore_label=2)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(logits.grad == 0)


def test_region_targets_built_from_label_map():
    target = torch.tensor([0, 1, 2, 3, 2]).view(1, 1, 5)
    regions = [[1, 2, 3], [2, 3], [3]]
    expected = torch.tensor(
        [
            [False, True, True, True, True],
            [False, False, True, True, True],
            [False, False, False, True, False],
        ]
    )
    assert torch.equal(region_targets(target, regions)[0], expected)


def test_region_loss_hand_computed():
    target = torch.tensor([0, 1, 2, 2]).view(1, 1, 4)
    regions = [[1, 2], [2]]
    logits = torch.zeros(1, 2, 4)  # sigmoid 0.5 everywhere
    loss = DiceBCERegionLoss(regions, smooth=0.0)(logits, target)
    # region (1, 2): g = 0111 -> 2 * 1.5 / (2 + 3) = 0.6; region (2): g = 0011 -> 2 * 1 / (2 + 2) = 0.5
    dice = (0.6 + 0.5) / 2
    bce = math.log(2.0)
    assert loss.item() == pytest.approx(bce - dice)


def test_region_loss_ignore_label():
    torch.manual_seed(3)
    regions = [[1, 2], [2]]
    logits = torch.randn(2, 2, 6, 4)
    target = torch.randint(0, 3, (2, 1, 6, 4))
    target_ignored = target.clone()
    target_ignored[:, :, :3] = 3
    loss_fn = DiceBCERegionLoss(regions, ignore_label=3)
    a = logits.clone().requires_grad_(True)
    loss = loss_fn(a, target_ignored)
    loss.backward()
    assert torch.all(a.grad[:, :, :3] == 0)
    ref = DiceBCERegionLoss(regions)(logits[:, :, 3:], target[:, :, 3:])
    torch.testing.assert_close(loss.detach(), ref)
    # an ignore label that is absent leaves the loss as without one
    torch.testing.assert_close(loss_fn(logits, target), DiceBCERegionLoss(regions)(logits, target))


def test_deep_supervision_weights_hand_computed():
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def test_deep_supervision_targets_nearest():
    target = torch.arange(16).view(1, 1, 4, 4)
    t0, t1, t2 = deep_supervision_targets(target, [[1, 1], [0.5, 0.5], 0.25])
    assert t0 is target
    assert torch.equal(t1, target[:, :, 1::2, 1::2])  # nearest-exact: output i samples input floor(2 * i + 1)
    assert t2.shape == (1, 1, 1, 1) and t1.dtype == target.dtype
    assert set(t1.unique().tolist()) <= set(target.unique().tolist())


def test_deep_supervision_loss_sums_weighted_terms():
    torch.manual_seed(4)
    target = torch.randint(0, 2, (2, 1, 8, 8))
    outputs = [torch.randn(2, 2, 8, 8), torch.randn(2, 2, 4, 4), torch.randn(2, 2, 2, 2)]
    base = DiceCELoss()
    weights = deep_supervision_weights(3)
    targets = deep_supervision_targets(target, [1.0, 0.5, 0.25])
    expected = sum(w * base(o, t) for w, o, t in zip(weights, outputs, targets, strict=True))
    ds = DeepSupervisionLoss(base, weights)
    torch.testing.assert_close(ds(outputs, targets), expected)
    torch.testing.assert_close(ds(outputs, target), expected)  # downsampled inside


def test_registry():
    assert {"dice_ce", "dice_bce_regions"} <= set(list_losses())
    assert isinstance(build_loss("dice_ce", batch_dice=True), DiceCELoss)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        build_loss("nope")


def test_build_training_loss_chooses_softmax_or_regions():
    classes = {"background": 0, "liver": 1, "tumour": 2}
    loss = build_training_loss(classes, ignore_label=None, batch_dice=True, deep_supervision_scales=None)
    assert isinstance(loss, DiceCELoss) and loss.batch_dice and not loss.do_bg and loss.smooth == 1e-5

    brats = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3, "ignore": 4}
    assert regions_from_labels(brats) == [[1, 2, 3], [2, 3], [3]]
    loss = build_training_loss(brats, ignore_label=4, batch_dice=False, deep_supervision_scales=[1, 0.5, 0.25, 0.125])
    assert isinstance(loss, DeepSupervisionLoss)
    assert isinstance(loss.loss, DiceBCERegionLoss) and loss.loss.ignore_label == 4
    assert loss.weights == pytest.approx(deep_supervision_weights(4))
