"""Crop, normalise, resample: the same functions prepare training cases and new images for inference."""

from mambaseg.preprocessing.case import (
    CaseProperties,
    PreprocessingSpec,
    class_locations,
    preprocess_case,
    preprocess_image_for_inference,
    restore_to_original,
)
from mambaseg.preprocessing.cropping import crop_to_nonzero, nonzero_mask, paste_into
from mambaseg.preprocessing.dataset import (
    PreprocessSummary,
    load_spec,
    preprocess_cases,
    preprocess_dataset,
)
from mambaseg.preprocessing.normalization import ChannelNormalization, normalize
from mambaseg.preprocessing.resampling import compute_new_shape, resample_image, resample_labels
from mambaseg.preprocessing.storage import PreprocessedCase, is_finished, load_case, save_case

__all__ = [
    "CaseProperties",
    "ChannelNormalization",
    "PreprocessSummary",
    "PreprocessedCase",
    "PreprocessingSpec",
    "class_locations",
    "compute_new_shape",
    "crop_to_nonzero",
    "is_finished",
    "load_case",
    "load_spec",
    "nonzero_mask",
    "normalize",
    "paste_into",
    "preprocess_case",
    "preprocess_cases",
    "preprocess_dataset",
    "preprocess_image_for_inference",
    "resample_image",
    "resample_labels",
    "restore_to_original",
    "save_case",
]
