"""RandAugment as timm's ``rand-m9-mstd0.5-inc1`` (VMamba's recipe), on (c, h, w) float tensors in [0, 1].

Dimension letters: c channels, h height, w width.

Each image gets ``num_ops`` operations drawn uniformly (with replacement) from timm's "increasing" set, each
applied with probability ``prob`` at a magnitude drawn from N(magnitude, magnitude_std) clipped to [0, 10];
rotate, shear and translate take a random sign. Pixel operations that PIL defines on 8-bit levels (equalize,
posterize) work on the rounded levels; the rest stay in float. All randomness comes from the numpy Generator
passed in, so a seed fixes the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def grey(image: torch.Tensor) -> torch.Tensor:
    """(c, h, w) -> (1, h, w) luminance (ITU-R 601) for 3 channels, the image itself for 1."""
    if image.shape[0] != 3:
        return image.mean(0, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True)


def auto_contrast(image: torch.Tensor) -> torch.Tensor:
    """Stretch each channel's [min, max] to [0, 1]; a constant channel is left as it is."""
    low, high = image.amin((1, 2), keepdim=True), image.amax((1, 2), keepdim=True)  # (c, 1, 1)
    span = high - low
    return torch.where(span > 0, (image - low) / span.clamp_min(1e-12), image)


def _levels(image: torch.Tensor) -> torch.Tensor:
    """(c, h, w) in [0, 1] -> 8-bit levels 0..255 (int64)."""
    return (image * 255).round().long().clamp(0, 255)


def equalize(image: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel's 8-bit levels, as PIL's ``ImageOps.equalize``.

    The level table is ``(step // 2 + pixels below the level) // step`` with ``step`` the pixels outside the
    highest occupied level over 255; a channel with one level or ``step`` 0 is left as it is.
    """
    levels, out = _levels(image), image.clone()
    for ch in range(image.shape[0]):
        hist = torch.bincount(levels[ch].flatten(), minlength=256)  # (256,)
        occupied = hist[hist > 0]
        step = int(occupied.sum() - occupied[-1]) // 255 if occupied.numel() > 1 else 0
        if step == 0:
            continue
        lut = ((torch.cumsum(hist, 0) - hist + step // 2) // step).clamp(max=255)
        out[ch] = lut[levels[ch]].to(image.dtype) / 255
    return out


def posterize(image: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the ``bits`` highest bits of each 8-bit level (0 bits: black); 8 or more leaves the image as it is."""
    if bits >= 8:
        return image
    mask = (0xFF << (8 - bits)) & 0xFF
    return (_levels(image) & mask).to(image.dtype) / 255


def solarize(image: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert pixels at or above ``threshold`` (in [0, 1]; above 1 changes nothing)."""
    return torch.where(image >= threshold, 1.0 - image, image)


def solarize_add(image: torch.Tensor, add: float, threshold: float = 128 / 255) -> torch.Tensor:
    """Add ``add`` to pixels below ``threshold``, clipped to 1."""
    return torch.where(image < threshold, (image + add).clamp(max=1.0), image)


def blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance``: ``degenerate + factor * (image - degenerate)``, clipped to [0, 1]."""
    return torch.lerp(degenerate.expand_as(image), image, factor).clamp(0.0, 1.0)


def sharpness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with PIL's 3 x 3 SMOOTH filter (centre 5, neighbours 1, over 13), which leaves the border untouched."""
    if min(image.shape[1:]) < 3:
        return image
    kernel = torch.ones(1, 1, 3, 3, dtype=image.dtype)
    kernel[..., 1, 1] = 5.0
    smooth = image.clone()
    smooth[:, 1:-1, 1:-1] = F.conv2d(image[:, None], kernel / 13.0)[:, 0]  # (c, h - 2, w - 2)
    return blend(smooth, image, factor)


def affine(image: torch.Tensor, matrix: Sequence[float], fill: Sequence[float], mode: str = "bicubic") -> torch.Tensor:
    """PIL's ``Image.transform(size, AFFINE, (a, b, c, d, e, f), fillcolor=fill)`` of a (c, h, w) image.

    The output pixel at (x, y) (pixel centres at half-integers, x to the right, y down) takes the input at
    ``(a x + b y + c, d x + e y + f)``, sampled with ``mode`` ("nearest", "bilinear", "bicubic") and edge pixels
    repeated; where that point lies outside the image the output is ``fill`` (one value or one per channel).
    """
    a, b, c, d, e, f = matrix
    _, h, w = image.shape
    theta = torch.tensor(  # the same map in grid_sample's [-1, 1] coordinates
        [[a, b * h / w, a + b * h / w + 2 * c / w - 1], [d * w / h, e, d * w / h + e + 2 * f / h - 1]],
        dtype=torch.float64,
    )
    grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)  # (1, h, w, 2)
    inside = ((grid >= -1) & (grid < 1)).all(-1)  # (1, h, w)
    out = F.grid_sample(image[None], grid.to(image.dtype), mode=mode, padding_mode="border", align_corners=False)
    fill_value = torch.tensor(list(fill), dtype=image.dtype).view(-1, 1, 1)
    return torch.where(inside, out[0].clamp(0.0, 1.0), fill_value)


def rotate(image: torch.Tensor, degrees: float, fill: Sequence[float], mode: str = "bicubic") -> torch.Tensor:
    """Counter-clockwise rotation about the image centre, as PIL's ``Image.rotate``."""
    _, h, w = image.shape
    cx, cy = w / 2, h / 2
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    matrix = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
    return affine(image, matrix, fill, mode)


RAND_AUGMENT_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
_SIGNED_RANGE = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3, "TranslateXRel": 0.45, "TranslateYRel": 0.45}
_ENHANCE = ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing")


def rand_augment_arg(name: str, magnitude: float, rng: np.random.Generator) -> float | None:
    """timm's parameter of op ``name`` at ``magnitude`` (0-10); signed ops take a random sign from ``rng``.

    With ``l = magnitude / 10``: rotate +-30 l degrees, shear +-0.3 l, translate +-0.45 l of the size, enhancement
    factor ``max(0.1, 1 +- 0.9 l)``, posterize ``4 - int(4 l)`` bits kept, solarize threshold
    ``(256 - int(256 l)) / 255``, solarize-add ``min(128, int(110 l)) / 255``; None for ops without a parameter.
    """
    level = magnitude / 10.0
    if name in _SIGNED_RANGE or name in _ENHANCE:
        value = level * _SIGNED_RANGE.get(name, 0.9)  # an enhancement factor moves 0.9 l away from 1
        value = -value if rng.random() < 0.5 else value
        return value if name in _SIGNED_RANGE else max(0.1, 1.0 + value)
    if name == "PosterizeIncreasing":
        return 4 - int(level * 4)
    if name == "SolarizeIncreasing":
        return (256 - min(256, int(level * 256))) / 255
    if name == "SolarizeAdd":
        return min(128, int(level * 110)) / 255
    return None


_Op = Callable[[torch.Tensor, float, Sequence[float], str], torch.Tensor]
_RAND_AUGMENT_APPLY: dict[str, _Op] = {
    "AutoContrast": lambda x, v, fill, mode: auto_contrast(x),
    "Equalize": lambda x, v, fill, mode: equalize(x),
    "Invert": lambda x, v, fill, mode: 1.0 - x,
    "Rotate": lambda x, v, fill, mode: rotate(x, v, fill, mode),
    "PosterizeIncreasing": lambda x, v, fill, mode: posterize(x, int(v)),
    "SolarizeIncreasing": lambda x, v, fill, mode: solarize(x, v),
    "SolarizeAdd": lambda x, v, fill, mode: solarize_add(x, v),
    "ColorIncreasing": lambda x, v, fill, mode: blend(grey(x), x, v) if x.shape[0] == 3 else x,
    "ContrastIncreasing": lambda x, v, fill, mode: blend(grey(x).mean().view(1, 1, 1), x, v),
    "BrightnessIncreasing": lambda x, v, fill, mode: (x * v).clamp(0.0, 1.0),
    "SharpnessIncreasing": lambda x, v, fill, mode: sharpness(x, v),
    "ShearX": lambda x, v, fill, mode: affine(x, (1, v, 0, 0, 1, 0), fill, mode),
    "ShearY": lambda x, v, fill, mode: affine(x, (1, 0, 0, v, 1, 0), fill, mode),
    "TranslateXRel": lambda x, v, fill, mode: affine(x, (1, 0, v * x.shape[2], 0, 1, 0), fill, mode),
    "TranslateYRel": lambda x, v, fill, mode: affine(x, (1, 0, 0, 0, 1, v * x.shape[1]), fill, mode),
}


def apply_op(
    name: str, image: torch.Tensor, arg: float | None, fill: Sequence[float], mode: str = "bicubic"
) -> torch.Tensor:
    """Op ``name`` of ``RAND_AUGMENT_OPS`` with parameter ``arg`` (from ``rand_augment_arg``) on a (c, h, w) image.

    Shears are about the top-left corner and translations move the content by ``-arg`` of the size, as timm's.
    """
    return _RAND_AUGMENT_APPLY[name](image, arg, fill, mode)


class RandAugment:
    """timm's RandAugment ``rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc1`` on (c, h, w) images in [0, 1].

    Draws ``num_ops`` ops uniformly (with replacement) from ``RAND_AUGMENT_OPS``; each is applied with probability
    ``prob`` at a magnitude ~ N(magnitude, magnitude_std) clipped to [0, 10].

    Args:
        num_ops: ops drawn per image.
        magnitude: mean magnitude, of at most 10.
        magnitude_std: standard deviation of the magnitude (0: fixed).
        prob: probability of applying each drawn op.
        fill: colour of the pixels the geometric ops bring in, one value or one per channel (default: 128 / 255,
            timm's default; its ``create_transform`` passes the normalisation mean rounded to 8 bits).
        interpolation: "nearest", "bilinear" or "bicubic" sampling of the geometric ops.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 9,
        magnitude_std: float = 0.5,
        prob: float = 0.5,
        fill: Sequence[float] | None = None,
        interpolation: str = "bicubic",
    ) -> None:
        self.num_ops, self.magnitude, self.magnitude_std = int(num_ops), float(magnitude), float(magnitude_std)
        self.prob, self.interpolation = float(prob), interpolation
        self.fill = [128 / 255] if fill is None else [float(v) for v in fill]

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(c, h, w) in [0, 1] -> (c, h, w) in [0, 1]."""
        for index in rng.integers(len(RAND_AUGMENT_OPS), size=self.num_ops):
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = float(rng.normal(magnitude, self.magnitude_std))
            name = RAND_AUGMENT_OPS[index]
            arg = rand_augment_arg(name, min(max(magnitude, 0.0), 10.0), rng)
            image = apply_op(name, image, arg, self.fill, self.interpolation)
        return image
