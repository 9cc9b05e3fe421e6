"""Image transforms of classification pretraining, in torch and NumPy (no torchvision), and mixup / cutmix.

Dimension letters: b batch, c channels, h height, w width, k classes.

Per image (in the loader's workers), as timm's ``create_transform`` for training: a random resized crop (area
fraction in ``scale``, aspect ratio log-uniform in ``ratio``, as Inception / DeiT), a horizontal flip, then either
RandAugment (timm's ``rand-m9-mstd0.5-inc1``) or colour jitter (brightness, contrast, saturation in random order;
timm drops it when RandAugment is on), normalisation and random erasing (timm's ``RandomErasing`` in "pixel"
mode). Validation resizes the shorter side to ``size / crop_fraction`` and takes the centre crop. Per batch (in
the training process): mixup or cutmix with label smoothing, as timm's ``Mixup`` in "batch" mode: each image is
mixed with the batch reversed. Every random draw comes from the NumPy generator handed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mambaseg.pretraining.rand_augment import RandAugment, grey


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(h, w) or (h, w, c) uint8 -> (c, h, w) float in [0, 1]."""
    array = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(np.array(array.transpose(2, 0, 1))).float() / 255.0


def resize(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(c, h, w) -> (c, *size), bicubic with antialiasing, clamped to [0, 1]."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    out = F.interpolate(image[None], size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0.0, 1.0)


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator, scale: Sequence[float], ratio: Sequence[float]
) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a random crop covering ``scale`` of the area at an aspect in ``ratio``.

    Ten draws; when none fits, the centre crop with the aspect ratio clamped to ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def color_jitter(image: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors uniform in [1 - strength, 1 + strength], in random order."""
    if strength <= 0:
        return image
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    for op in rng.permutation(3):
        factor = float(rng.uniform(low, high))
        if op == 0:
            image = image * factor
        elif op == 1:
            image = torch.lerp(grey(image).mean().expand_as(image), image, factor)
        elif image.shape[0] == 3:
            image = torch.lerp(grey(image).expand_as(image), image, factor)
        image = image.clamp(0.0, 1.0)
    return image


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(c, h, w) -> (image - mean) / std per channel."""
    m = torch.tensor(list(mean), dtype=image.dtype).view(-1, 1, 1)
    s = torch.tensor(list(std), dtype=image.dtype).view(-1, 1, 1)
    return (image - m) / s


class RandomErasing:
    """timm's ``RandomErasing(prob, mode="pixel", max_count=1)``: one box of standard normal noise, after normalising.

    With probability ``prob``, up to ten draws of an area fraction uniform in [min_area, max_area] and an aspect
    (height / width) log-uniform in [min_aspect, 1 / min_aspect]; the first box narrower and shorter than the image
    is filled with per-pixel noise, and none when no draw fits.

    Args:
        prob: probability of erasing a box.
        min_area: smallest area fraction.
        max_area: largest area fraction.
        min_aspect: smallest aspect ratio.
    """

    def __init__(self, prob: float, min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3) -> None:
        self.prob, self.min_area, self.max_area = float(prob), float(min_area), float(max_area)
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(c, h, w) -> (c, h, w), a copy when a box is erased."""
        if rng.random() > self.prob:
            return image
        c, height, width = image.shape
        for _ in range(10):
            target = rng.uniform(self.min_area, self.max_area) * height * width
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if w < width and h < height:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                image = image.clone()
                noise = rng.standard_normal((c, h, w), dtype=np.float32)
                image[:, top : top + h, left : left + w] = torch.from_numpy(noise).to(image.dtype)
                break
        return image


class TrainTransform:
    """Random resized crop, horizontal flip, RandAugment or else colour jitter, normalisation, random erasing.

    Args:
        size: output edge.
        scale: range of the crop's area fraction.
        ratio: range of the crop's aspect ratio (width / height).
        hflip: probability of a horizontal flip.
        jitter: colour-jitter strength (0 disables it); unused with RandAugment, as in timm.
        mean: per-channel mean.
        std: per-channel standard deviation.
        rand_augment: keyword arguments of ``RandAugment`` (num_ops, magnitude, magnitude_std, prob); None disables
            it. Its geometric ops fill with ``mean`` rounded to 8 bits, as timm's.
        random_erasing: probability of ``RandomErasing`` (0 disables it).
    """

    def __init__(
        self,
        size: int,
        scale: Sequence[float],
        ratio: Sequence[float],
        hflip: float,
        jitter: float,
        mean: Sequence[float],
        std: Sequence[float],
        rand_augment: Mapping[str, float] | None = None,
        random_erasing: float = 0.0,
    ) -> None:
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
        self.hflip, self.jitter, self.mean, self.std = float(hflip), float(jitter), list(mean), list(std)
        fill = [min(255, round(255 * m)) / 255 for m in self.mean]
        self.rand_augment = None if rand_augment is None else RandAugment(**dict(rand_augment), fill=fill)
        self.random_erasing = RandomErasing(random_erasing) if float(random_erasing) > 0 else None

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(c, h, w) in [0, 1] -> (c, size, size)."""
        top, left, h, w = random_resized_crop_box(image.shape[1], image.shape[2], rng, self.scale, self.ratio)
        image = resize(image[:, top : top + h, left : left + w], (self.size, self.size))
        if rng.random() < self.hflip:
            image = image.flip(-1)
        if self.rand_augment is not None:
            image = self.rand_augment(image, rng)
        else:
            image = color_jitter(image, self.jitter, rng)
        image = normalize(image, self.mean, self.std)
        return image if self.random_erasing is None else self.random_erasing(image, rng)


class EvalTransform:
    """Resize the shorter side to ``size / crop_fraction``, centre crop ``size``, normalise."""

    def __init__(self, size: int, crop_fraction: float, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size, self.crop_fraction, self.mean, self.std = int(size), float(crop_fraction), list(mean), list(std)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        """(c, h, w) in [0, 1] -> (c, size, size); ``rng`` is unused."""
        h, w = image.shape[1:]
        short = max(self.size, round(self.size / self.crop_fraction))
        new_h, new_w = (
            (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
        )
        image = resize(image, (new_h, new_w))
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        return normalize(image[:, top : top + self.size, left : left + self.size], self.mean, self.std)


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(b,) -> (b, k): ``1 - smoothing + smoothing / k`` on the label, ``smoothing / k`` elsewhere."""
    off = smoothing / num_classes
    target = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return target.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the cross entropy of (b, k) logits against (b, k) target distributions."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class MixupCutmix:
    """Mixup or cutmix of a batch with itself reversed, and the matching smoothed soft targets.

    With probability ``prob`` a batch is mixed: by cutmix with probability ``switch_prob`` when both are on,
    else by mixup; the weight ``lam`` ~ Beta(alpha, alpha). Cutmix pastes a box of area ``1 - lam`` (clipped
    to the image, ``lam`` then corrected to the pasted area).

    Args:
        num_classes: k.
        mixup_alpha: Beta parameter of mixup (0 disables it).
        cutmix_alpha: Beta parameter of cutmix (0 disables it).
        prob: probability of mixing a batch.
        switch_prob: probability of cutmix when both are enabled.
        label_smoothing: smoothing of the one-hot targets.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:
        self.num_classes = int(num_classes)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob, self.label_smoothing = float(prob), float(switch_prob), float(label_smoothing)

    def _draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(lam, use cutmix); lam 1 leaves the batch unmixed."""
        enabled = self.mixup_alpha > 0 or self.cutmix_alpha > 0
        if not enabled or rng.random() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    @staticmethod
    def cut_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of a box of about ``(1 - lam)`` of the area, centred anywhere, clipped."""
        cut = math.sqrt(1.0 - lam)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        half_h, half_w = int(height * cut) // 2, int(width * cut) // 2
        return max(cy - half_h, 0), min(cy + half_h, height), max(cx - half_w, 0), min(cx + half_w, width)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, c, h, w), (b,) -> mixed images (b, c, h, w), soft targets (b, k) summing to 1."""
        target = smooth_one_hot(labels, self.num_classes, self.label_smoothing)  # (b, k)
        lam, use_cutmix = self._draw(rng)
        if lam >= 1.0:
            return images, target
        if use_cutmix:
            top, bottom, left, right = self.cut_box(images.shape[-2], images.shape[-1], lam, rng)
            images = images.clone()
            images[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (images.shape[-2] * images.shape[-1])
        else:
            images = images * lam + images.flip(0) * (1.0 - lam)
        return images, target * lam + target.flip(0) * (1.0 - lam)
