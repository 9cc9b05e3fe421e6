"""The cascade's second stage: a previous stage's mask as one-hot input channels after the image's.

Dimension letters: c image channels, f foreground labels of the previous stage, k classes, *case the preprocessed
case's axes.

A ``3d_cascade_fullres`` network takes ``c + f`` channels: the preprocessed image, then one channel per foreground
label of the ``3d_lowres`` mask (1 inside that label, 0 elsewhere), the mask brought onto the preprocessed grid the
way a label map is (transposed, cropped to the image's box, resampled label by label), as nnU-Net v2 does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mambaseg.inference.predictor import Predictor
from mambaseg.io import Image
from mambaseg.preprocessing.case import CaseProperties, preprocess_image_for_inference, restore_to_original
from mambaseg.preprocessing.cropping import bbox_slices
from mambaseg.preprocessing.resampling import resample_labels

PreviousStage = Callable[[Sequence[Image]], Image]
"""The previous stage's mask (in the input's geometry) of a case given as one Image per channel."""


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


class CascadePredictor(Predictor):
    """A ``Predictor`` of a cascade stage: every case gets its previous stage's one-hot mask as extra channels.

    Args:
        previous: the previous stage's mask of a case (e.g. the lowres run's prediction, or its validation mask).
        labels: the foreground labels one-hot encoded, in channel order (the plan's ``previous_stage_labels``).
        **kwargs: as ``Predictor``.
    """

    def __init__(self, *args, previous: PreviousStage, labels: Sequence[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.previous = previous
        self.labels = [int(label) for label in labels]

    @classmethod
    def around(cls, predictor: Predictor, previous: PreviousStage, labels: Sequence[int]) -> CascadePredictor:
        """The same models and settings as ``predictor``, with the previous stage's channels."""
        return cls(
            predictor.models,
            predictor.spec,
            predictor.patch_size,
            predictor.num_classes,
            predictor.device,
            mirror_axes=predictor.mirror_axes,
            step=predictor.step,
            batch_size=predictor.batch_size,
            autocast_dtype=predictor.autocast_dtype,
            previous=previous,
            labels=labels,
        )

    def input_probabilities(self, images: Sequence[Image]) -> np.ndarray:
        """As ``Predictor``'s, with the one-hot previous stage mask after the image channels: (c + f, *case) in."""
        data, properties = preprocess_image_for_inference(images, self.spec)
        seg = mask_on_grid(self.previous(images).array, properties)
        data = np.concatenate([data, one_hot(seg, self.labels)])  # (c + f, *case)
        probabilities = self.probabilities(data)  # (k, *case)
        del data
        return restore_to_original(probabilities, properties)
