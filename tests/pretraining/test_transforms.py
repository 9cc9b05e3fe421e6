"""Image transforms, mixup / cutmix targets, the EMA update and top-k counts, checked by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mambaseg.pretraining.ema import ModelEma
from mambaseg.pretraining.run import topk_correct
from mambaseg.pretraining.transforms import (
    EvalTransform,
    MixupCutmix,
    TrainTransform,
    color_jitter,
    normalize,
    random_resized_crop_box,
    smooth_one_hot,
    soft_cross_entropy,
)


def image(h=20, w=30, c=3, seed=0):
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(20, 30), (64, 17), (5, 5)])
def test_random_resized_crop_box_stays_inside_and_covers_the_asked_area(shape):
    rng = np.random.default_rng(1)
    for _ in range(50):
        top, left, h, w = random_resized_crop_box(*shape, rng, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + h <= shape[0] and 0 <= left and left + w <= shape[1] and h > 0 and w > 0


def test_random_resized_crop_falls_back_to_a_centre_crop_with_clamped_aspect():
    rng = np.random.default_rng(0)
    assert random_resized_crop_box(10, 100, rng, (2.0, 3.0), (0.75, 4 / 3)) == (0, 43, 10, 13)


@pytest.mark.parametrize("channels", [1, 3])
def test_train_transform_output_size_and_flip(channels):
    x = image(c=channels, h=12, w=12)
    mean, std = [0.5] * channels, [0.25] * channels
    whole = dict(size=12, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0, mean=mean, std=std)
    rng = np.random.default_rng(0)
    assert torch.allclose(TrainTransform(hflip=0.0, **whole)(x, rng), normalize(x, mean, std))
    assert torch.allclose(TrainTransform(hflip=1.0, **whole)(x, rng), normalize(x.flip(-1), mean, std))
    out = TrainTransform(7, (0.08, 1.0), (0.75, 4 / 3), 0.5, 0.4, mean, std)(image(c=channels), rng)
    assert out.shape == (channels, 7, 7)


def test_color_jitter_keeps_the_range_and_leaves_grey_images_grey():
    rng = np.random.default_rng(3)
    out = color_jitter(image(), 0.4, rng)
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, image())
    grey = torch.full((3, 4, 4), 0.3)
    out = color_jitter(grey, 0.4, rng)
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])


def test_eval_transform_resizes_the_shorter_side_and_takes_the_centre():
    x = torch.zeros(1, 20, 40)
    x[:, 8:12, 18:22] = 1.0
    out = EvalTransform(8, 0.5, [0.0], [1.0])(x)  # shorter side to 16 (16 x 32), centre 8 x 8
    assert out.shape == (1, 8, 8)
    assert out[0, 3:5, 3:5].mean() > 0.9 and out[0, 0, 0] < 0.1


def test_smooth_one_hot_and_soft_cross_entropy_match_torch():
    labels = torch.tensor([0, 2, 1])
    target = smooth_one_hot(labels, 4, 0.1)
    assert torch.allclose(target.sum(1), torch.ones(3))
    assert target[1, 2] == pytest.approx(0.9 + 0.025) and target[1, 0] == pytest.approx(0.025)
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert soft_cross_entropy(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixed_targets_sum_to_one_and_weigh_the_pair_as_the_images(mixup, cutmix):
    mix = MixupCutmix(5, mixup, cutmix, prob=1.0, switch_prob=0.5, label_smoothing=0.1)
    images = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)])  # image i is constant i
    labels = torch.tensor([0, 1, 2, 3])
    rng = np.random.default_rng(7)
    for _ in range(10):
        mixed, target = mix(images, labels, rng)
        assert torch.allclose(target.sum(1), torch.ones(4))
        lam = (target[0, 0].item() - 0.02) / 0.9  # weight of image 0's own label: 0.02 + 0.9 lam
        assert mixed[0].mean().item() == pytest.approx(3 * (1 - lam), abs=1e-5)  # pair of image 0 is image 3


def test_cutmix_box_is_clipped_and_an_unmixed_batch_is_untouched():
    top, bottom, left, right = MixupCutmix.cut_box(10, 10, 0.0, np.random.default_rng(0))
    assert 0 <= top < bottom <= 10 and 0 <= left < right <= 10
    images, labels = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    out, target = MixupCutmix(2, 0.8, 1.0, prob=0.0)(images, labels, np.random.default_rng(0))
    assert out is images and torch.equal(target, smooth_one_hot(labels, 2, 0.1))


def test_ema_update_by_hand():
    model = torch.nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * start + 0.1 * (start + 1.0))
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * (start + 0.1) + 0.1 * (start + 1.0))
    assert not ema.module.weight.requires_grad


def test_topk_correct_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 0])
    assert topk_correct(logits, labels, (1, 2)) == [1, 2]
    assert topk_correct(logits, labels, (1, 5)) == [1, 3]  # k capped at the 3 classes
