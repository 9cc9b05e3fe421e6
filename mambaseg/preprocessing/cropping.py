"""Cropping to the nonzero region of all channels, and pasting a cropped array back.

Dimension letters: c channels; z, y, x the spatial axes in array order (2-D images have y, x only).

A bounding box is one ``[start, stop)`` pair per spatial axis, in array order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

BBox = list[list[int]]

OUTSIDE_LABEL = -1
"""Label given to background voxels outside the nonzero mask, so that normalisation and training can tell them apart."""


class Cropped(NamedTuple):
    """The result of ``crop_to_nonzero``."""

    data: np.ndarray  # (c, z', y', x')
    seg: np.ndarray  # (1, z', y', x') int16, OUTSIDE_LABEL on background outside the mask
    mask: np.ndarray  # (z', y', x') bool, the nonzero mask
    bbox: BBox


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels that are nonzero in any channel, with enclosed holes filled.

    Args:
        data: Channels first, ``(c, z, y, x)``.

    Returns:
        A boolean ``(z, y, x)`` mask.
    """
    mask = np.any(data != 0, axis=0)
    return ndimage.binary_fill_holes(mask)


def bbox_of_mask(mask: np.ndarray) -> BBox:
    """The smallest box holding every True voxel of ``mask``; the whole array when it has none."""
    bbox = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        bbox.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, mask.shape[axis]])
    return bbox


def bbox_slices(bbox: BBox) -> tuple[slice, ...]:
    """Index expression selecting ``bbox`` from the spatial axes."""
    return tuple(slice(start, stop) for start, stop in bbox)


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None) -> Cropped:
    """Crops channels (and label map) to the box around the nonzero voxels of all channels together.

    As nnU-Net does, the returned label map marks background outside the nonzero mask with
    ``OUTSIDE_LABEL`` (-1); without a label map it is 0 inside the mask and -1 outside. Foreground
    inside the box keeps its label, in the mask or not; foreground outside the box is cut away.

    Args:
        data: Channels, ``(c, z, y, x)``.
        seg: Label map, ``(1, z, y, x)``, or None.

    Returns:
        The cropped data, label map and nonzero mask, and the box.
    """
    mask = nonzero_mask(data)
    bbox = bbox_of_mask(mask)
    region = bbox_slices(bbox)
    cropped = data[(slice(None), *region)]
    mask = mask[region]
    if seg is None:
        out_seg = np.where(mask, 0, OUTSIDE_LABEL).astype(np.int16)[None]
    else:
        out_seg = seg[(slice(None), *region)].astype(np.int16)
        out_seg[(out_seg == 0) & ~mask[None]] = OUTSIDE_LABEL
    return Cropped(cropped, out_seg, mask, bbox)


def paste_into(cropped: np.ndarray, bbox: BBox, shape: tuple[int, ...], fill: np.ndarray | float = 0) -> np.ndarray:
    """Puts ``cropped`` back at ``bbox`` inside a new array of spatial ``shape``.

    Args:
        cropped: ``(..., z', y', x')``; leading axes (channels) are kept.
        bbox: The box it was cropped with.
        shape: The spatial shape before cropping.
        fill: Value outside the box; an array broadcasts over the leading axes (one value per channel).

    Returns:
        ``(..., z, y, x)`` with the dtype of ``cropped``; ``cropped`` itself, not a copy, when the box is the
        whole shape (no second volume of probabilities for an uncropped CT).
    """
    if [list(pair) for pair in bbox] == [[0, size] for size in shape]:
        return cropped
    leading = cropped.shape[: cropped.ndim - len(shape)]
    full = np.empty((*leading, *shape), dtype=cropped.dtype)
    full[...] = np.reshape(fill, np.shape(fill) + (1,) * len(shape)) if np.ndim(fill) else fill
    full[(Ellipsis, *bbox_slices(bbox))] = cropped
    return full
