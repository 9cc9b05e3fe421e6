"""Image transforms, RandAugment ops, random erasing, mixup / cutmix targets, the EMA update and top-k counts, checked
by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mambaseg.pretraining.ema import ModelEma
from mambaseg.pretraining.rand_augment import (
    RAND_AUGMENT_OPS,
    RandAugment,
    apply_op,
    auto_contrast,
    equalize,
    posterize,
    rand_augment_arg,
    rotate,
    sharpness,
    solarize,
)
from mambaseg.pretraining.run import topk_correct
from mambaseg.pretraining.transforms import (
    EvalTransform,
    MixupCutmix,
    RandomErasing,
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


GREY = [0.5]


def levels(values, shape=None):
    x = torch.tensor(values, dtype=torch.float32) / 255
    return x.view(shape) if shape else x.view(1, 1, -1)


def test_invert_solarize_and_solarize_add_by_hand():
    x = levels([10, 100, 127, 128, 200, 255])
    assert torch.allclose(apply_op("Invert", x, None, GREY), 1 - x)
    assert torch.allclose(solarize(x, 0.5), levels([10, 100, 127, 127, 55, 0]))
    threshold = rand_augment_arg("SolarizeIncreasing", 5, np.random.default_rng(0))
    assert threshold == pytest.approx(128 / 255)  # 256 - int(0.5 * 256) levels
    assert torch.allclose(apply_op("SolarizeIncreasing", x, threshold, GREY), levels([10, 100, 127, 127, 55, 0]))
    assert torch.equal(apply_op("SolarizeIncreasing", x, rand_augment_arg("SolarizeIncreasing", 0, None), GREY), x)
    add = rand_augment_arg("SolarizeAdd", 10, None)
    assert add == pytest.approx(110 / 255)
    assert torch.allclose(apply_op("SolarizeAdd", x, add, GREY), levels([120, 210, 237, 128, 200, 255]))


def test_posterize_keeps_the_high_bits_of_known_levels():
    x = levels([0, 37, 100, 128, 200, 255])
    assert torch.allclose(posterize(x, 1), levels([0, 0, 0, 128, 128, 128]))
    assert torch.allclose(posterize(x, 3), levels([0, 32, 96, 128, 192, 224]))
    assert torch.equal(posterize(x, 0), torch.zeros_like(x)) and torch.equal(posterize(x, 8), x)
    rng = np.random.default_rng(0)
    assert [rand_augment_arg("PosterizeIncreasing", m, rng) for m in (0, 5, 9, 10)] == [4, 2, 1, 0]


def test_auto_contrast_stretches_each_channel_and_keeps_a_constant_one():
    ramp = torch.linspace(0.2, 0.6, 5)
    x = torch.stack([ramp, torch.full((5,), 0.3), ramp / 2]).view(3, 1, 5)
    out = auto_contrast(x)
    assert torch.allclose(out[0, 0], torch.linspace(0, 1, 5)) and torch.allclose(out[2, 0], torch.linspace(0, 1, 5))
    assert torch.equal(out[1], x[1])


def test_equalize_spreads_a_two_level_image_and_leaves_a_small_one_as_pil_does():
    x = torch.full((1, 32, 32), 50 / 255)
    x[:, 16:] = 200 / 255
    # 512 pixels above the lowest level: step 512 // 255 = 2; level 50 -> 1 // 2 = 0, level 200 -> 513 // 2 -> 255
    out = equalize(x)
    assert torch.equal(out[:, :16], torch.zeros(1, 16, 32)) and torch.equal(out[:, 16:], torch.ones(1, 16, 32))
    small = x[:, 14:18, :4]  # 8 pixels at the top level: step 0, unchanged
    assert torch.equal(equalize(small), small)
    assert torch.equal(equalize(torch.full((1, 32, 32), 0.4)), torch.full((1, 32, 32), 0.4))


def test_enhancements_by_hand():
    x = image(c=3, h=6, w=6)
    assert torch.allclose(apply_op("BrightnessIncreasing", x, 0.5, GREY), x * 0.5)
    grey_mean = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).mean()
    assert torch.allclose(apply_op("ContrastIncreasing", x, 0.1, GREY), grey_mean + 0.1 * (x - grey_mean))
    desaturated = apply_op("ColorIncreasing", x, 0.1, GREY)
    grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    assert torch.allclose(desaturated, grey + 0.1 * (x - grey))
    assert torch.equal(apply_op("ColorIncreasing", x[:1], 0.1, GREY), x[:1])  # one channel has no colour
    rng = np.random.default_rng(0)
    factors = {round(rand_augment_arg("BrightnessIncreasing", 10, rng), 9) for _ in range(50)}
    assert factors == {1.9, 0.1}  # 1 +- 0.9, kept >= 0.1
    assert rand_augment_arg("SharpnessIncreasing", 5, rng) in (pytest.approx(1.45), pytest.approx(0.55))
    assert rand_augment_arg("ContrastIncreasing", 0, rng) == 1.0


def test_sharpness_blends_with_pils_smoothing_kernel_and_keeps_the_border():
    x = torch.zeros(1, 5, 5)
    x[0, 2, 2] = 1.0
    smooth = sharpness(x, 0.0)
    expected = torch.zeros(1, 5, 5)
    expected[0, 1:4, 1:4] = 1 / 13
    expected[0, 2, 2] = 5 / 13
    assert torch.allclose(smooth, expected)
    assert torch.allclose(sharpness(x, 0.5), (expected + x) / 2)
    edge = torch.zeros(1, 5, 5)
    edge[0, 0, 2] = 1.0  # on the border: kept, though it smooths into the interior
    assert sharpness(edge, 0.0)[0, 0, 2] == 1.0 and sharpness(edge, 0.0)[0, 1, 2] == pytest.approx(1 / 13)
    assert torch.allclose(sharpness(x, 1.0), x)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_rotate_by_quarter_turns_of_a_square_is_rot90(mode):
    x = image(c=3, h=6, w=6)
    assert torch.allclose(rotate(x, 90, GREY, mode), torch.rot90(x, 1, (1, 2)), atol=1e-5)  # counter-clockwise
    assert torch.allclose(rotate(x, -90, GREY, mode), torch.rot90(x, -1, (1, 2)), atol=1e-5)
    assert torch.allclose(rotate(x, 0, GREY, mode), x, atol=1e-5)


def test_rotate_fills_the_corners_it_brings_in():
    out = rotate(torch.ones(1, 20, 20), 45, [0.25], "bilinear")
    assert out[0, 0, 0] == 0.25 and out[0, -1, -1] == 0.25 and out[0, 10, 10] == 1.0


@pytest.mark.parametrize("mode", ["nearest", "bicubic"])
def test_translations_shift_by_whole_pixels_and_fill(mode):
    x, fill = image(c=3, h=6, w=8), [0.1, 0.2, 0.3]
    fills = torch.tensor(fill).view(3, 1, 1)
    out = apply_op("TranslateXRel", x, 0.25, fill, mode)  # 2 of 8 columns: content moves left
    assert torch.allclose(out[:, :, :6], x[:, :, 2:], atol=1e-5) and torch.equal(out[:, :, 6:], fills.expand(3, 6, 2))
    out = apply_op("TranslateXRel", x, -0.25, fill, mode)
    assert torch.allclose(out[:, :, 2:], x[:, :, :6], atol=1e-5) and torch.equal(out[:, :, :2], fills.expand(3, 6, 2))
    out = apply_op("TranslateYRel", x, 0.5, fill, mode)  # 3 of 6 rows: content moves up
    assert torch.allclose(out[:, :3], x[:, 3:], atol=1e-5) and torch.equal(out[:, 3:], fills.expand(3, 3, 8))


def test_shear_is_identity_at_magnitude_zero_and_pils_map_otherwise():
    x = image(c=1, h=4, w=9)
    rng = np.random.default_rng(0)
    for name in ("ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "Rotate"):
        assert torch.allclose(apply_op(name, x, rand_augment_arg(name, 0, rng), GREY), x, atol=1e-5)
    # factor 2: output (j + 0.5, i + 0.5) samples input column j + 0.5 + 2 (i + 0.5) = (j + 2 i + 1) + 0.5
    out = apply_op("ShearX", x, 2.0, GREY, "nearest")
    for i in range(4):
        for j in range(9):
            expected = x[0, i, j + 2 * i + 1] if j + 2 * i + 1 < 9 else 0.5
            assert out[0, i, j] == pytest.approx(float(expected))


def test_magnitude_maps_to_timms_ranges_with_a_random_sign():
    rng = np.random.default_rng(0)
    for name, top in (("Rotate", 30.0), ("ShearX", 0.3), ("ShearY", 0.3), ("TranslateXRel", 0.45)):
        values = {round(rand_augment_arg(name, 10, rng), 9) for _ in range(50)}
        assert values == {top, -top}
        assert abs(rand_augment_arg(name, 0, rng)) == 0.0
        assert abs(rand_augment_arg(name, 5, rng)) == pytest.approx(top / 2)
    for name in ("AutoContrast", "Equalize", "Invert"):
        assert rand_augment_arg(name, 9, rng) is None


@pytest.mark.parametrize("channels", [1, 3])
def test_rand_augment_keeps_range_shape_dtype_and_is_reproducible(channels):
    augment = RandAugment(num_ops=2, magnitude=9, magnitude_std=0.5)
    x = image(c=channels, h=16, w=16)
    changed = 0
    for seed in range(40):
        out = augment(x, np.random.default_rng(seed))
        assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, augment(x, np.random.default_rng(seed)))
        changed += not torch.equal(out, x)
    assert changed > 20  # each of 2 ops applies with probability 0.5: 3 in 4 images change
    assert torch.equal(RandAugment(prob=0.0)(x, np.random.default_rng(0)), x)


def test_rand_augment_draws_every_op_of_the_increasing_set():
    assert len(RAND_AUGMENT_OPS) == 15 and "PosterizeIncreasing" in RAND_AUGMENT_OPS
    rng = np.random.default_rng(0)
    x = image(c=3, h=8, w=8)
    for name in RAND_AUGMENT_OPS:
        out = apply_op(name, x, rand_augment_arg(name, 9, rng), GREY)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def erased_box(before, after):
    """(top, bottom, left, right) of the changed pixels, checking they form one whole rectangle in every channel."""
    changed = (before != after).any(0)
    rows, cols = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
    top, bottom, left, right = rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1
    assert (before != after)[:, top:bottom, left:right].all() and changed.sum() == (bottom - top) * (right - left)
    return top, bottom, left, right


def test_random_erasing_fills_one_rectangle_and_leaves_the_rest():
    erase = RandomErasing(1.0)
    x = normalize(image(c=3, h=40, w=40), [0.5] * 3, [0.25] * 3)
    for seed in range(30):
        out = erase(x, np.random.default_rng(seed))
        assert out.shape == x.shape and out.dtype == x.dtype
        top, bottom, left, right = erased_box(x, out)
        # area fraction drawn in [0.02, 1/3]; the edges are rounded to whole pixels (at most 1/2 pixel each)
        h, w = bottom - top, right - left
        assert 0.02 * 1600 - 0.5 * (h + w) <= h * w <= 1600 / 3 + 0.5 * (h + w) + 0.25
        assert h < 40 and w < 40 and 0.3 - 0.1 <= h / w <= 1 / 0.3 + 1.5
        assert torch.equal(out, erase(x, np.random.default_rng(seed)))
    assert torch.equal(RandomErasing(0.0)(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("channels", [1, 3])
def test_train_transform_with_rand_augment_and_erasing(channels):
    x = image(c=channels, h=12, w=12)
    mean, std = [0.5] * channels, [0.25] * channels
    whole = dict(size=12, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, jitter=0.4, mean=mean, std=std)
    # RandAugment replaces colour jitter (as timm): with its ops never applied the image is only normalised
    off = TrainTransform(**whole, rand_augment={"num_ops": 2, "magnitude": 9, "prob": 0.0})
    assert torch.allclose(off(x, np.random.default_rng(0)), normalize(x, mean, std))
    erased = TrainTransform(**whole, rand_augment={"num_ops": 2, "prob": 0.0}, random_erasing=1.0)
    out = erased(x, np.random.default_rng(0))
    top, bottom, left, right = erased_box(normalize(x, mean, std), out)
    assert (bottom - top) * (right - left) < 144
    full = TrainTransform(
        9, (0.08, 1.0), (0.75, 4 / 3), 0.5, 0.4, mean, std, {"num_ops": 2, "magnitude": 9, "magnitude_std": 0.5}, 0.25
    )
    assert full.rand_augment.fill == [128 / 255] * channels  # the mean rounded to 8 bits, as timm's img_mean
    for seed in range(5):
        out = full(image(c=channels), np.random.default_rng(seed))
        assert out.shape == (channels, 9, 9) and torch.equal(out, full(image(c=channels), np.random.default_rng(seed)))
