"""Resampling to a target spacing: images with cubic splines, label maps and probabilities linearly.

Dimension letters: c channels; z, y, x the spatial axes in array order.

Resizing maps voxel centres as ``skimage.transform.resize`` does (and so nnU-Net): output index ``i``
samples input coordinate ``(i + 0.5) * n_in / n_out - 0.5``, with edge values repeated beyond the border.
Spline interpolation on a grid is separable, so each axis is resampled on its own with a 1-D spline:
the result equals ``scipy.ndimage.zoom(order=3, mode="nearest", grid_mode=True)`` but costs four taps
per axis instead of 64 per voxel, and every axis may use its own order.

Anisotropic data (largest spacing over smallest above ``ANISOTROPY_THRESHOLD``, in the image or the
target) keeps the interpolation order in-plane and uses nearest-neighbour along the low-resolution
axis, as nnU-Net does, so that thick slices are not smeared into each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

ANISOTROPY_THRESHOLD = 3.0
IMAGE_ORDER = 3
LABEL_ORDER = 1
OUT_OF_PLANE_ORDER = 0
_SPLINE_PAD = 12


def compute_new_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Spatial shape covering the same extent at ``target_spacing`` (each size rounded, at least 1)."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_spacing, strict=True))


def low_resolution_axis(spacing: Sequence[float], target_spacing: Sequence[float]) -> int | None:
    """The axis to resample with nearest neighbours, or None to use one order on every axis.

    The image spacing decides first, then the target spacing; a spacing with more than one coarsest
    axis (e.g. 0.5, 3, 3) has no single low-resolution axis, so it returns None.
    """
    for candidate in (spacing, target_spacing):
        values = np.asarray(candidate, dtype=float)
        if values.max() / values.min() > ANISOTROPY_THRESHOLD:
            coarsest = np.flatnonzero(values == values.max())
            return int(coarsest[0]) if coarsest.size == 1 else None
    return None


def axis_orders(ndim: int, order: int, spacing: Sequence[float], target_spacing: Sequence[float]) -> list[int]:
    """Interpolation order per spatial axis: ``order`` everywhere, 0 along the low-resolution axis."""
    orders = [order] * ndim
    axis = low_resolution_axis(spacing, target_spacing)
    if axis is not None:
        orders[axis] = OUT_OF_PLANE_ORDER
    return orders


def resize(array: np.ndarray, shape: Sequence[int], orders: Sequence[int]) -> np.ndarray:
    """Resizes the trailing ``len(shape)`` axes of ``array`` to ``shape``, axis by axis.

    Args:
        array: ``(..., z, y, x)``; leading axes (channels) are carried along.
        shape: The new spatial shape.
        orders: Interpolation order (0, 1 or 3) per spatial axis.

    Returns:
        A float32 array ``(..., *shape)`` (the input itself when the shape is unchanged).
    """
    lead = array.ndim - len(shape)
    out = array.astype(np.float32, copy=False)
    steps = [(lead + i, size, order) for i, (size, order) in enumerate(zip(shape, orders, strict=True))]
    steps.sort(key=lambda step: step[1] / out.shape[step[0]])
    for axis, size, order in steps:
        out = _resize_axis(out, axis, size, order)
    return out


def _resize_axis(array: np.ndarray, axis: int, size: int, order: int) -> np.ndarray:
    n = array.shape[axis]
    if n == size:
        return array
    coords = (np.arange(size) + 0.5) * (n / size) - 0.5
    if order == 0 or n == 1:
        index = np.clip(np.floor(coords + 0.5).astype(np.intp), 0, n - 1)
        return np.take(array, index, axis=axis)
    if order == 1:
        coords = np.clip(coords, 0, n - 1)
        low = np.minimum(np.floor(coords).astype(np.intp), n - 2)
        weight = _along(coords - low, axis, array.ndim).astype(np.float32)
        return np.take(array, low, axis=axis) * (1 - weight) + np.take(array, low + 1, axis=axis) * weight
    if order == 3:
        return _cubic_axis(array, axis, coords)
    raise ValueError(f"interpolation order {order} is not supported; use 0, 1 or 3")


def _cubic_axis(array: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """Cubic B-spline interpolation along one axis; edge values extend past the border."""
    pad = [(0, 0)] * array.ndim
    pad[axis] = (_SPLINE_PAD, _SPLINE_PAD)
    padded = np.pad(array, pad, mode="edge")
    coefficients = ndimage.spline_filter1d(padded, order=3, axis=axis, mode="mirror", output=np.float32)
    base = np.floor(coords)
    t = _along(coords - base, axis, array.ndim).astype(np.float32)
    weights = ((1 - t) ** 3 / 6, (4 - 6 * t**2 + 3 * t**3) / 6, (1 + 3 * t + 3 * t**2 - 3 * t**3) / 6, t**3 / 6)
    first = base.astype(np.intp) - 1 + _SPLINE_PAD
    out = np.zeros_like(np.take(coefficients, first, axis=axis))
    for tap, weight in enumerate(weights):
        out += np.take(coefficients, first + tap, axis=axis) * weight
    return out


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``values`` shaped to broadcast along ``axis`` of an ``ndim``-D array."""
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def resample_image(
    data: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float], shape: Sequence[int] | None = None
) -> np.ndarray:
    """Resamples image channels ``(c, z, y, x)`` to ``target_spacing`` (or to ``shape``) with cubic splines.

    Args:
        data: Image channels.
        spacing: Current spacing, array order.
        target_spacing: New spacing, array order.
        shape: The new spatial shape; computed from the spacings when None.
    """
    shape = compute_new_shape(data.shape[1:], spacing, target_spacing) if shape is None else tuple(shape)
    return resize(data, shape, axis_orders(len(shape), IMAGE_ORDER, spacing, target_spacing))


def resample_probabilities(
    probabilities: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float], shape: Sequence[int]
) -> np.ndarray:
    """Resamples class probabilities ``(c, z, y, x)`` linearly to ``shape`` (nearest along a low-resolution axis)."""
    return resize(probabilities, shape, axis_orders(len(shape), LABEL_ORDER, spacing, target_spacing))


def resample_labels(
    seg: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float], shape: Sequence[int] | None = None
) -> np.ndarray:
    """Resamples a label map ``(..., z, y, x)`` without inventing label values.

    Each label present is resampled as a one-hot channel with linear interpolation (nearest along a
    low-resolution axis) and every voxel takes the label of the largest channel, the smallest label
    winning ties. One channel is held at a time.

    Args:
        seg: Integer label map; leading axes of size 1 are kept.
        spacing: Current spacing, array order.
        target_spacing: New spacing, array order.
        shape: The new spatial shape; computed from the spacings when None.

    Returns:
        The label map at the new shape, with the dtype of ``seg``.
    """
    spatial_ndim = len(spacing)
    old_shape = seg.shape[seg.ndim - spatial_ndim :]
    shape = compute_new_shape(old_shape, spacing, target_spacing) if shape is None else tuple(shape)
    if tuple(old_shape) == shape:
        return seg
    orders = axis_orders(spatial_ndim, LABEL_ORDER, spacing, target_spacing)
    lead = seg.shape[: seg.ndim - spatial_ndim]
    best_score = np.full((*lead, *shape), -1.0, dtype=np.float32)
    best_label = np.zeros((*lead, *shape), dtype=seg.dtype)
    for label in np.unique(seg):
        score = resize((seg == label).astype(np.float32), shape, orders)
        better = score > best_score
        best_score[better] = score[better]
        best_label[better] = label
    return best_label
