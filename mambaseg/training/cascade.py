"""Training a cascade stage: the previous stage's mask, moved into the image as one-hot channels and perturbed.

Dimension letters: c image channels, f foreground labels of the previous stage, *s the spatial axes.

A cascade sample comes out of patch sampling as ``{"image": (c, *s), "label": (2, *s)}``: label channel 0 is the
reference, channel 1 the previous stage's mask, so that the spatial transforms move both as labels (nearest). After
the other transforms, as in nnU-Net v2's training pipeline for a cascade:

- ``MoveMaskToImaged`` (nnU-Net's ``MoveSegAsOneHotToData``): label channel 1 becomes ``f`` one-hot image channels,
  one per foreground label, after the image's; the label keeps channel 0 only;
- ``RandBinaryOperatord`` (nnU-Net's ``ApplyRandomBinaryOperatorTransform``): each one-hot channel, in random
  order and with probability ``p_per_label``, is dilated, eroded, opened or closed (one chosen at random) with a
  ball whose radius is drawn from ``radius``; voxels it adds are taken out of the other one-hot channels;
- ``RandRemoveComponentd`` (nnU-Net's ``RemoveRandomConnectedComponentFromOneHotEncodingTransform``): in each
  one-hot channel, with probability ``p_per_label``, one connected component (of those covering at most
  ``max_fraction`` of the patch) chosen at random is removed, and with probability ``p_fill`` given to another
  one-hot channel.

The defaults are nnU-Net v2's: radius 1 to 8 and p 0.4 for the binary operators; p 0.2, at most 15% of the patch and
no filling for the component removal. These teach the network not to trust the previous stage's mask blindly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, MapTransform, RandomizableTransform
from scipy import ndimage

from mambaseg.training.augmentation import IMAGE, LABEL

OPERATORS = ("dilation", "erosion", "opening", "closing")
BINARY_RADIUS = (1, 8)
BINARY_P_PER_LABEL = 0.4
REMOVE_P_PER_LABEL = 0.2
REMOVE_MAX_FRACTION = 0.15
REMOVE_P_FILL = 0.0


def ball(radius: int, ndim: int) -> np.ndarray:
    """A ball (disk in 2-D) of ``radius`` voxels as a boolean structuring element of edge ``2 * radius + 1``."""
    grid = np.ogrid[tuple(slice(-radius, radius + 1) for _ in range(ndim))]
    return sum(axis**2 for axis in grid) <= radius**2


def binary_operator(mask: np.ndarray, operator: str, structure: np.ndarray) -> np.ndarray:
    """``operator`` (one of ``OPERATORS``) applied to a boolean mask; the outside counts as background."""
    if operator == "dilation":
        return ndimage.binary_dilation(mask, structure)
    if operator == "erosion":
        return ndimage.binary_erosion(mask, structure)
    if operator == "opening":
        return ndimage.binary_opening(mask, structure)
    if operator == "closing":  # padded so that closing near the border does not lose voxels there
        pad = structure.shape[0] // 2
        closed = ndimage.binary_closing(np.pad(mask, pad), structure)
        return closed[tuple(slice(pad, pad + n) for n in mask.shape)]
    raise ValueError(f"binary operator {operator!r} is not one of {', '.join(OPERATORS)}")


class MoveMaskToImaged(MapTransform):
    """Label channel 1 (the previous stage's mask) -> one-hot image channels per foreground label; label keeps 0."""

    def __init__(self, labels: Sequence[int]) -> None:
        MapTransform.__init__(self, (IMAGE, LABEL))
        self.labels = [int(label) for label in labels]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image, label = torch.as_tensor(d[IMAGE]), torch.as_tensor(d[LABEL])  # (c, *s), (2, *s)
        if label.shape[0] != 2:
            raise ValueError(
                f"a cascade sample's label has 2 channels (reference, previous stage), got {label.shape[0]}"
            )
        hot = torch.stack([label[1] == value for value in self.labels]).to(image.dtype)  # (f, *s)
        d[IMAGE] = torch.cat([image, hot])
        d[LABEL] = label[:1]
        return d


class _PerLabel(RandomizableTransform, MapTransform):
    """Works on the last ``count`` image channels (the one-hot previous stage), each with ``p_per_label``."""

    def __init__(self, count: int, p_per_label: float) -> None:
        MapTransform.__init__(self, IMAGE)
        RandomizableTransform.__init__(self, prob=1.0)
        self.count = count
        self.p_per_label = p_per_label

    def change(self, hot: np.ndarray, channel: int) -> None:
        """Change channel ``channel`` of the one-hot (f, *s) boolean array in place."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d[IMAGE])
        first = image.shape[0] - self.count
        order = self.R.permutation(self.count)
        chosen = [int(c) for c in order if self.R.uniform() < self.p_per_label]
        if not chosen:
            return d
        hot = image[first:].numpy() > 0.5  # (f, *s)
        for channel in chosen:
            self.change(hot, channel)
        image = image.clone()
        image[first:] = torch.from_numpy(hot).to(image.dtype)
        d[IMAGE] = image
        return d


class RandBinaryOperatord(_PerLabel):
    """Random dilation, erosion, opening or closing of each one-hot channel (see the module doc)."""

    def __init__(
        self, count: int, p_per_label: float = BINARY_P_PER_LABEL, radius: tuple[int, int] = BINARY_RADIUS
    ) -> None:
        super().__init__(count, p_per_label)
        self.radius = (int(radius[0]), int(radius[1]))

    def change(self, hot: np.ndarray, channel: int) -> None:
        operator = OPERATORS[self.R.randint(len(OPERATORS))]
        structure = ball(int(self.R.randint(self.radius[0], self.radius[1] + 1)), hot.ndim - 1)
        before = hot[channel]
        after = binary_operator(before, operator, structure)
        added = after & ~before
        hot[:, added] = False  # one label per voxel: what the channel gained, the others lose
        hot[channel] = after


class RandRemoveComponentd(_PerLabel):
    """Removal of one random connected component per one-hot channel (see the module doc)."""

    def __init__(
        self,
        count: int,
        p_per_label: float = REMOVE_P_PER_LABEL,
        max_fraction: float = REMOVE_MAX_FRACTION,
        p_fill: float = REMOVE_P_FILL,
    ) -> None:
        super().__init__(count, p_per_label)
        self.max_fraction = max_fraction
        self.p_fill = p_fill

    def change(self, hot: np.ndarray, channel: int) -> None:
        components, n = ndimage.label(hot[channel], structure=np.ones((3,) * (hot.ndim - 1), dtype=bool))
        if n == 0:
            return
        sizes = np.bincount(components.ravel())[1:]
        small = np.flatnonzero(sizes <= self.max_fraction * hot[channel].size) + 1
        if small.size == 0:
            return
        removed = components == small[self.R.randint(small.size)]
        hot[channel][removed] = False
        others = [c for c in range(hot.shape[0]) if c != channel]
        if others and self.R.uniform() < self.p_fill:
            hot[others[self.R.randint(len(others))]][removed] = True


def cascade_transforms(labels: Sequence[int], train: bool) -> list[MapTransform]:
    """What follows the ordinary pipeline for a cascade: the move to one-hot, then (training) the perturbations."""
    transforms: list[MapTransform] = [MoveMaskToImaged(labels)]
    if train:
        transforms += [RandBinaryOperatord(len(labels)), RandRemoveComponentd(len(labels))]
    return transforms


def with_cascade(pipeline: Compose, labels: Sequence[int] | None, train: bool) -> Compose:
    """``pipeline`` followed by the cascade's transforms when ``labels`` (the previous stage's) are given."""
    if not labels:
        return pipeline
    return Compose([pipeline, *cascade_transforms(labels, train)])
