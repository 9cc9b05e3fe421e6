"""Sliding-window prediction with Gaussian importance weighting and test-time mirroring (nnU-Net's scheme).

The one place where windows are run over a case: ``case_logits`` is what every model stage calls.

Dimension letters: c input channels, k classes, b windows in one batch, *spatial the image axes,
*patch the window axes.

Windows of the training patch size overlap by ``1 - step`` (step 0.5: half a patch); each window's
logits are weighted by a Gaussian centred on the window (sigma = patch / 8), summed into the full
image and divided by the summed weights. Images smaller than the patch are padded with zeros and the
padding cut away afterwards. With mirror axes, every combination of flips along them is predicted
and the logits averaged. With a reduced precision the network runs under autocast (the selective scan stays
float32 inside it); its logits are converted to float32 before they are averaged and accumulated.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Separable Gaussian over the patch, peak 1, no zeros (so every voxel keeps a weight); (*patch)."""
    weights = None
    for size in patch_size:
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        axis = torch.exp(-0.5 * (coords / max(size * sigma_scale, 1e-6)) ** 2)
        weights = axis if weights is None else weights[..., None] * axis
    weights = weights / weights.max()
    return weights.clamp(min=weights[weights > 0].min().item())


def window_starts(image_size: int, patch_size: int, step: float) -> list[int]:
    """Start offsets along one axis: as few windows as cover the axis with at most ``step * patch`` between them."""
    if image_size <= patch_size:
        return [0]
    n_windows = math.ceil((image_size - patch_size) / (patch_size * step)) + 1
    stride = (image_size - patch_size) / (n_windows - 1)
    return [round(i * stride) for i in range(n_windows)]


def window_slices(image_shape: Sequence[int], patch_size: Sequence[int], step: float) -> list[tuple[slice, ...]]:
    """Every window of ``patch_size`` over ``image_shape`` (both spatial), as tuples of slices."""
    if not 0 < step <= 1:
        raise ValueError(f"sliding window: step must be in (0, 1], got {step}")
    starts = [window_starts(i, p, step) for i, p in zip(image_shape, patch_size, strict=True)]
    return [
        tuple(slice(s, s + p) for s, p in zip(corner, patch_size, strict=True)) for corner in itertools.product(*starts)
    ]


def mirror_combinations(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the mirror axes (spatial, 0-based), the empty one (no flip) first."""
    axes = tuple(mirror_axes)
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    patches: torch.Tensor,
    mirror_axes: Sequence[int],
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits for a batch of windows (b, c, *patch) -> (b, k, *patch), float32, averaged over mirror combinations.

    ``autocast_dtype`` (bfloat16, float16): the network runs under autocast in that precision; None: as it is.
    """
    total = None
    combos = mirror_combinations(mirror_axes)
    for flips in combos:
        dims = [2 + a for a in flips]
        inputs = patches.flip(dims) if dims else patches
        with torch.autocast(patches.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(inputs)
        if isinstance(out, list | tuple):  # deep supervision: the full-resolution output comes first
            out = out[0]
        out = out.float()
        out = out.flip(dims) if dims else out
        total = out if total is None else total + out
    return total / len(combos) if len(combos) > 1 else total


@torch.no_grad()
def sliding_window_predict(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    num_classes: int,
    step: float = 0.5,
    mirror_axes: Sequence[int] = (),
    batch_size: int = 1,
    device: torch.device | str | None = None,
    gaussian: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Predict logits for a whole image by overlapping windows.

    Args:
        model: a segmentation network in eval mode, (b, c, *patch) -> (b, k, *patch) (or a list, first used).
        image: preprocessed input (c, *spatial), on any device; the result is accumulated on its device.
        patch_size: window size, the training patch size.
        num_classes: k, the model's output channels.
        step: distance between window starts as a fraction of the patch (0.5 as nnU-Net).
        mirror_axes: spatial axes to mirror for test-time augmentation (those used in training).
        batch_size: windows per forward pass.
        device: where the model runs (default: the model's device).
        gaussian: weight windows by a Gaussian (else uniformly).
        autocast_dtype: run the network under autocast in this precision (None: float32); logits stay float32.

    Returns:
        Logits (k, *spatial), float32, on the image's device.
    """
    spatial = tuple(image.shape[1:])
    if len(spatial) != len(patch_size):
        raise ValueError(f"sliding window: image of shape {tuple(image.shape)} does not match patch {patch_size}")
    if device is None:
        device = next(model.parameters()).device
    pad = [max(p - s, 0) for s, p in zip(spatial, patch_size, strict=True)]
    padding = [amount for p in reversed(pad) for amount in (p // 2, p - p // 2)]
    padded = F.pad(image, padding) if any(pad) else image  # (c, *padded)
    padded_shape = tuple(padded.shape[1:])

    weight = gaussian_importance_map(patch_size) if gaussian else torch.ones(tuple(patch_size))
    weight = weight.to(image.device)
    logits = torch.zeros((num_classes, *padded_shape), dtype=torch.float32, device=image.device)
    counts = torch.zeros(padded_shape, dtype=torch.float32, device=image.device)
    for windows in _batches(window_slices(padded_shape, patch_size, step), batch_size):
        patches = torch.stack([padded[(slice(None), *w)] for w in windows]).to(device)  # (b, c, *patch)
        out = predict_logits(model, patches, mirror_axes, autocast_dtype).to(image.device)  # (b, k, *patch)
        if out.shape[1] != num_classes:
            raise ValueError(f"sliding window: the model gave {out.shape[1]} channels, expected {num_classes}")
        for w, window_logits in zip(windows, out, strict=True):
            logits[(slice(None), *w)].addcmul_(window_logits, weight)  # no temporary of the weighted window
            counts[w] += weight
    logits /= counts
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial, strict=True))
    return logits[(slice(None), *crop)]


@torch.no_grad()
def case_logits(
    network: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    channels: int,
    step: float,
    mirror_axes: Sequence[int],
    batch_size: int,
    device: torch.device | str | None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits of a whole preprocessed case (c, *spatial) -> (channels, *spatial), float32.

    A patch of one axis fewer than the case (a 2-D plan of 3-D data) predicts slice by slice along the first axis,
    one slice at a time into the result (no list of slices to stack). Other arguments: as ``sliding_window_predict``.
    """
    if len(patch_size) == image.dim() - 1:
        return sliding_window_predict(
            network, image, patch_size, channels, step, mirror_axes, batch_size, device, autocast_dtype=autocast_dtype
        )
    logits = torch.empty((channels, *image.shape[1:]), dtype=torch.float32, device=image.device)
    for z in range(image.shape[1]):
        logits[:, z] = case_logits(
            network, image[:, z], patch_size, channels, step, mirror_axes, batch_size, device, autocast_dtype
        )
    return logits
