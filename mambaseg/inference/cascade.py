"""The cascade's hand-off to its second stage: a previous stage's mask as one-hot input channels after the image's.

Dimension letters: c image channels, f foreground labels of the previous stage, k classes, *case the preprocessed
case's axes.

A ``3d_cascade_fullres`` network takes ``c + f`` channels: the preprocessed image, then one channel per foreground
label of the ``3d_lowres`` mask (1 inside that label, 0 elsewhere), the mask brought onto the preprocessed grid the
way a label map is (transposed, cropped to the image's box, resampled label by label), as nnU-Net v2 does. Training
(augmentation of the extra channels) and prediction (``pipeline.ModelStage``) both use these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mambaseg.preprocessing.case import CaseProperties
from mambaseg.preprocessing.cropping import bbox_slices
from mambaseg.preprocessing.resampling import resample_labels


def mask_on_grid(mask: np.ndarray, properties: CaseProperties) -> np.ndarray:
    """A mask in the input's array order and shape, on the preprocessed grid of ``properties``: (1, *case) int16.

    Raises:
        ValueError: the mask does not have the input's shape.
    """
    if mask.shape != properties.original_shape:
        raise ValueError(
            f"previous stage mask of shape {mask.shape} does not have the input shape {properties.original_shape}"
        )
    seg = np.rint(mask) if np.issubdtype(mask.dtype, np.floating) else mask
    seg = seg.astype(np.int16).transpose(properties.transpose_forward)[bbox_slices(properties.bbox)]
    return resample_labels(
        seg[None], properties.transposed_spacing, properties.target_spacing, properties.shape_after_resampling
    )


def one_hot(seg: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """(1, *case) label map -> (f, *case) float32, one channel per label in ``labels``."""
    return np.concatenate([(seg == label) for label in labels]).astype(np.float32)
