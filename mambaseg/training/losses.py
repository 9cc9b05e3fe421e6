"""Segmentation losses as nnU-Net trains with them, and a registry to build them by name.

Dimension letters: b batch, k classes (softmax) or regions (sigmoid), *s the spatial axes.

Conventions:

- Networks output logits ``(b, k, *s)``; targets are integer label maps ``(b, 1, *s)`` (or ``(b, *s)``).
- The soft Dice term is the *negative* mean Dice, as in nnU-Net: a perfect prediction gives a Dice loss
  of about -1 (exactly ``-1`` only in the limit of saturated probabilities), so ``dice_ce`` goes down to about -1.
- Softmax training (classes) drops the background channel from the Dice term; region training (labels
  given as lists of classes) uses one sigmoid channel per region, Dice on every channel, and BCE.
- Voxels whose target equals ``ignore_label`` are left out of every term: they change neither the loss nor
  the gradient (which is exactly zero there).
- Deep supervision weights output ``i`` (0 = full resolution) by ``1 / 2**i``, sets the lowest resolution
  to 0 and normalises the weights to sum 1; targets are downsampled by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Regions = Sequence[Sequence[int]]

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str) -> Callable:
    """Class decorator adding a loss under ``name`` to the registry."""

    def add(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        _LOSSES[name] = cls
        return cls

    return add


def list_losses() -> list[str]:
    """Names of every registered loss, sorted."""
    return sorted(_LOSSES)


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` with its keyword arguments."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses: {', '.join(list_losses())}")
    return _LOSSES[name](**kwargs)


def _label_map(target: torch.Tensor, spatial_ndim: int) -> torch.Tensor:
    """Label map as ``(b, 1, *s)``, accepting ``(b, *s)`` too."""
    if target.ndim == spatial_ndim + 1:
        target = target.unsqueeze(1)
    if target.ndim != spatial_ndim + 2 or target.shape[1] != 1:
        raise ValueError(f"target must be a label map (b, 1, *spatial), got shape {tuple(target.shape)}")
    return target


def soft_dice(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    mask: torch.Tensor | None = None,
    batch_dice: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Mean soft Dice of probabilities against a one-hot target (nnU-Net's memory-efficient form).

    Args:
        probs: probabilities ``(b, k, *s)``.
        onehot: target of the same shape, 0/1 (any dtype).
        mask: ``(b, 1, *s)``, 1 where voxels count and 0 where they are ignored.
        batch_dice: sum the statistics over the batch before the ratio (one Dice per channel)
            instead of one Dice per sample and channel.
        smooth: added to numerator and denominator.

    Returns:
        The mean Dice, a scalar in (0, 1].
    """
    axes = tuple(range(2, probs.ndim))
    onehot = onehot.to(probs.dtype)
    if mask is not None:
        mask = mask.to(probs.dtype)
        onehot = onehot * mask
        probs = probs * mask
    intersect = (probs * onehot).sum(axes)  # (b, k)
    sum_pred = probs.sum(axes)  # (b, k)
    sum_gt = onehot.sum(axes)  # (b, k)
    if batch_dice:
        intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)  # (k,)
    dice = (2 * intersect + smooth) / torch.clamp(sum_gt + sum_pred + smooth, min=1e-8)
    return dice.mean()


def region_targets(target: torch.Tensor, regions: Regions) -> torch.Tensor:
    """One boolean channel per region: true where the label is one of the region's classes.

    Args:
        target: label map ``(b, 1, *s)``.
        regions: for each region, the classes it unites (e.g. ``[[1, 2, 3], [2, 3], [3]]``).

    Returns:
        ``(b, r, *s)`` boolean.
    """
    labels = target[:, 0]  # (b, *s)
    channels = [torch.isin(labels, torch.as_tensor(list(r), dtype=labels.dtype, device=labels.device)) for r in regions]
    return torch.stack(channels, dim=1)  # (b, r, *s)


@register_loss("dice_ce")
class DiceCELoss(nn.Module):
    """Softmax soft Dice (negative) plus cross-entropy, nnU-Net's ``DC_and_CE_loss``.

    Args:
        batch_dice: Dice over the whole batch instead of per sample.
        do_bg: include the background channel (0) in the Dice term.
        smooth: Dice smoothing.
        weight_ce: weight of the cross-entropy term.
        weight_dice: weight of the Dice term.
        ignore_label: label value whose voxels are excluded from both terms.
    """

    def __init__(
        self,
        batch_dice: bool = False,
        do_bg: bool = False,
        smooth: float = 1e-5,
        weight_ce: float = 1.0,
        weight_dice: float = 1.0,
        ignore_label: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.do_bg = do_bg
        self.smooth = smooth
        self.weight_ce = weight_ce
        self.weight_dice = weight_dice
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of logits ``(b, k, *s)`` against a label map ``(b, 1, *s)``."""
        logits = logits.float()
        target = _label_map(target, logits.ndim - 2).long()  # (b, 1, *s)
        mask = None if self.ignore_label is None else target != self.ignore_label  # (b, 1, *s)
        loss = logits.new_zeros(())
        if self.weight_dice != 0:
            probs = torch.softmax(logits, dim=1)  # (b, k, *s)
            with torch.no_grad():
                dice_target = target if mask is None else torch.where(mask, target, 0)
                onehot = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, dice_target, True)  # (b, k, *s)
            if not self.do_bg:
                probs, onehot = probs[:, 1:], onehot[:, 1:]
            loss = loss - self.weight_dice * soft_dice(probs, onehot, mask, self.batch_dice, self.smooth)
        if self.weight_ce != 0 and (mask is None or bool(mask.any())):
            ignore_index = -100 if self.ignore_label is None else self.ignore_label
            loss = loss + self.weight_ce * F.cross_entropy(logits, target[:, 0], ignore_index=ignore_index)
        return loss


@register_loss("dice_bce_regions")
class DiceBCERegionLoss(nn.Module):
    """Sigmoid soft Dice (negative) plus binary cross-entropy over regions, nnU-Net's ``DC_and_BCE_loss``.

    The region targets are built here from the label map, so deep supervision downsamples label maps only.
    With an ignore label, BCE is averaged over the valid voxels and regions (nnU-Net divides by the number
    of valid voxels only, which scales BCE by the number of regions); without ignored voxels both agree
    with the plain mean.

    Args:
        regions: the classes of each region, one output channel per region.
        batch_dice: Dice over the whole batch instead of per sample.
        smooth: Dice smoothing.
        weight_bce: weight of the BCE term.
        weight_dice: weight of the Dice term.
        ignore_label: label value whose voxels are excluded from both terms.
    """

    def __init__(
        self,
        regions: Regions,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        weight_bce: float = 1.0,
        weight_dice: float = 1.0,
        ignore_label: int | None = None,
    ) -> None:
        super().__init__()
        if not regions:
            raise ValueError("dice_bce_regions needs at least one region")
        self.regions = [[int(c) for c in r] for r in regions]
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.weight_bce = weight_bce
        self.weight_dice = weight_dice
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of logits ``(b, r, *s)`` against a label map ``(b, 1, *s)``."""
        logits = logits.float()
        if logits.shape[1] != len(self.regions):
            raise ValueError(f"{len(self.regions)} regions but the network has {logits.shape[1]} output channels")
        target = _label_map(target, logits.ndim - 2)
        with torch.no_grad():
            onehot = region_targets(target, self.regions).to(logits.dtype)  # (b, r, *s)
            mask = None if self.ignore_label is None else (target != self.ignore_label).to(logits.dtype)
        loss = logits.new_zeros(())
        if self.weight_dice != 0:
            dice = soft_dice(torch.sigmoid(logits), onehot, mask, self.batch_dice, self.smooth)
            loss = loss - self.weight_dice * dice
        if self.weight_bce != 0:
            if mask is None:
                bce = F.binary_cross_entropy_with_logits(logits, onehot)
            else:
                per_voxel = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")  # (b, r, *s)
                bce = (per_voxel * mask).sum() / torch.clamp(mask.sum() * logits.shape[1], min=1e-8)
            loss = loss + self.weight_bce * bce
        return loss


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's weights: ``1 / 2**i`` for output ``i``, the lowest resolution 0, normalised to sum 1.

    A single output gets weight 1.
    """
    if num_outputs < 1:
        raise ValueError(f"deep supervision needs at least one output, got {num_outputs}")
    if num_outputs == 1:
        return [1.0]
    weights = [1 / 2**i for i in range(num_outputs)]
    weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def _downsample_labels(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``(b, c, *s)`` label maps to ``size``, keeping the dtype."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    return F.interpolate(target.float(), size=tuple(size), mode="nearest-exact").to(target.dtype)


def deep_supervision_targets(target: torch.Tensor, scales: Sequence[float | Sequence[float]]) -> list[torch.Tensor]:
    """Label maps for each deep-supervision output, downsampled by nearest neighbour as nnU-Net does.

    Args:
        target: label map ``(b, c, *s)``.
        scales: one scale per output, a number or one per spatial axis (e.g. ``[[1, 1], [0.5, 0.5]]``).

    Returns:
        One label map per scale, each ``(b, c, *round(s * scale))``.
    """
    spatial = target.shape[2:]
    out = []
    for scale in scales:
        per_axis = [float(scale)] * len(spatial) if isinstance(scale, int | float) else [float(s) for s in scale]
        if len(per_axis) != len(spatial):
            raise ValueError(f"scale {scale} does not match a target with {len(spatial)} spatial axes")
        out.append(_downsample_labels(target, [round(n * s) for n, s in zip(spatial, per_axis, strict=True)]))
    return out


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over the outputs of a deep-supervised network.

    Args:
        loss: the loss of one output against one target.
        weights: one weight per output, highest resolution first.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.loss = loss
        self.weights = [float(w) for w in weights]

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Loss of the outputs against one target per output, or one full-resolution label map.

        A single label map ``(b, 1, *s)`` is downsampled by nearest neighbour to each output's size.
        """
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        if len(outputs) != len(self.weights):
            raise ValueError(f"{len(self.weights)} deep-supervision weights but {len(outputs)} outputs")
        if isinstance(target, torch.Tensor):
            target = _label_map(target, outputs[0].ndim - 2)
            targets = [_downsample_labels(target, o.shape[2:]) for o in outputs]
        else:
            targets = list(target)
        if len(targets) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs but {len(targets)} targets")
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out, tgt in zip(self.weights, outputs, targets, strict=True):
            total = total + w * self.loss(out, tgt)
        return total


def _is_region(value: int | Sequence[int]) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 1


def regions_from_labels(labels: Mapping[str, int | Sequence[int]]) -> list[list[int]] | None:
    """The foreground regions of a dataset's ``labels``, or None when it trains on plain classes.

    A dataset trains on regions when some label is a list of more than one class (nnU-Net's rule);
    the ``background`` entry, entries that are only class 0, and ``ignore`` are left out.
    """
    if not any(_is_region(v) for v in labels.values()):
        return None
    regions = []
    for name, value in labels.items():
        if name == "ignore":
            continue
        classes = [int(value)] if isinstance(value, int) else [int(c) for c in value]
        if set(classes) == {0}:
            continue
        regions.append(classes)
    return regions


def build_training_loss(
    labels: Mapping[str, int | Sequence[int]],
    ignore_label: int | None,
    batch_dice: bool,
    deep_supervision_scales: Sequence[float | Sequence[float]] | None,
) -> nn.Module:
    """The loss nnU-Net trains with for these labels (its ``_build_loss``).

    Args:
        labels: the dataset's label names to a class or, for region training, a list of classes.
        ignore_label: label value excluded from the loss, or None.
        batch_dice: the plan's batch Dice flag.
        deep_supervision_scales: one scale per network output when deep supervision is on, else None.

    Returns:
        ``dice_ce`` (Dice without background, smooth 1e-5) or ``dice_bce_regions`` (Dice on every region),
        wrapped in ``DeepSupervisionLoss`` when scales are given.
    """
    regions = regions_from_labels(labels)
    if regions is None:
        loss = build_loss("dice_ce", batch_dice=batch_dice, do_bg=False, smooth=1e-5, ignore_label=ignore_label)
    else:
        loss = build_loss(
            "dice_bce_regions", regions=regions, batch_dice=batch_dice, smooth=1e-5, ignore_label=ignore_label
        )
    if deep_supervision_scales is None:
        return loss
    return DeepSupervisionLoss(loss, deep_supervision_weights(len(deep_supervision_scales)))
