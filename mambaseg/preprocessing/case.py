"""Preprocessing of one case, and its inverse; training and inference run the same functions.

Dimension letters: c channels; z, y, x the spatial axes in array order (2-D images have y, x only).

A case goes through four steps, recorded in ``CaseProperties`` so that a prediction can be put back
into the input geometry:

1. transpose the axes by the plans' ``transpose_forward`` (coarsest spacing first); every shape and
   spacing below is in this order;
2. crop to the nonzero region of all channels (``shape_before_crop`` -> ``bbox`` -> ``shape_after_crop``);
3. normalise each channel (``ChannelNormalization``);
4. resample to the target spacing (``shape_after_crop`` -> ``shape_after_resampling``).

Non-finite values, one policy for training and prediction (both come through ``preprocess_case``):
NaN or Inf in an input image is an error naming the file and the count (as ``mambaseg check`` reports it);
finite values whose normalisation overflows float32 are an error naming the file and the value range; and
preprocessed data is never written with a NaN or Inf in it (an error naming the case).

``restore_to_original`` undoes 4, 2 and 1: it resamples back to ``shape_after_crop``, pastes the result
into an array of ``shape_before_crop`` that is background elsewhere, and transposes back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mambaseg.io import Image
from mambaseg.preprocessing.cropping import BBox, crop_to_nonzero, paste_into
from mambaseg.preprocessing.normalization import ChannelNormalization, normalize
from mambaseg.preprocessing.resampling import (
    compute_new_shape,
    resample_image,
    resample_labels,
    resample_probabilities,
)

if TYPE_CHECKING:
    from mambaseg.planning.plans import Plans

MAX_LOCATIONS = 10_000
MIN_LOCATION_COVERAGE = 0.01
LOCATION_SEED = 1234


@dataclass(frozen=True)
class PreprocessingSpec:
    """What preprocessing needs from the plans of one configuration.

    Attributes:
        target_spacing: Spacing to resample to, in transposed array order. One value fewer than the image
            has axes (a 2-D configuration of 3-D images) keeps the first axis at its own spacing.
        normalization: One entry per channel.
        transpose_forward: Permutation of the spatial array axes applied first; None keeps them.
    """

    target_spacing: tuple[float, ...]
    normalization: tuple[ChannelNormalization, ...]
    transpose_forward: tuple[int, ...] | None = None

    @classmethod
    def from_plans(cls, plans: Plans, configuration: str, source: str = "plans.json") -> PreprocessingSpec:
        """The spec of ``configuration`` in ``plans``; ``source`` names the plans file in errors."""
        if configuration not in plans.configurations:
            known = ", ".join(plans.configurations)
            raise ValueError(f"{source}: no configuration {configuration!r}; it has {known}")
        plan = plans.configurations[configuration]
        normalization = tuple(
            ChannelNormalization.from_dict({"scheme": n.scheme, "params": n.params}, source) for n in plan.normalization
        )
        return cls(tuple(float(s) for s in plan.spacing), normalization, tuple(plans.transpose_forward))

    def axes_for(self, ndim: int) -> tuple[int, ...]:
        """``transpose_forward`` for an image of ``ndim`` axes (the identity when there is none)."""
        order = tuple(range(ndim)) if self.transpose_forward is None else tuple(self.transpose_forward)
        if sorted(order) != list(range(ndim)):
            raise ValueError(f"transpose_forward {list(order)} is not a permutation of the {ndim} image axes")
        return order

    def spacing_for(self, spacing: Sequence[float]) -> tuple[float, ...]:
        """The target spacing for an image of ``spacing`` (array order)."""
        if len(self.target_spacing) == len(spacing) - 1:
            return (float(spacing[0]), *self.target_spacing)
        if len(self.target_spacing) != len(spacing):
            raise ValueError(f"target spacing {self.target_spacing} does not fit an image with spacing {spacing}")
        return self.target_spacing


@dataclass
class CaseProperties:
    """Everything needed to map a preprocessed case back to its input geometry. ``spacing``, ``origin``
    and ``direction`` are the input's, in ITK order; shapes, box and target spacing are in the array
    order after ``transpose_forward``."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    transpose_forward: tuple[int, ...]
    shape_before_crop: tuple[int, ...]
    bbox: BBox
    shape_after_crop: tuple[int, ...]
    target_spacing: tuple[float, ...]
    shape_after_resampling: tuple[int, ...]
    class_locations: dict[int, int] = field(default_factory=dict)

    @property
    def transposed_spacing(self) -> tuple[float, ...]:
        """The input spacing in transposed array order."""
        array_spacing = tuple(reversed(self.spacing))
        return tuple(array_spacing[axis] for axis in self.transpose_forward)

    @property
    def transpose_backward(self) -> tuple[int, ...]:
        return tuple(int(axis) for axis in np.argsort(self.transpose_forward))

    @property
    def original_shape(self) -> tuple[int, ...]:
        """The input's array shape."""
        return tuple(self.shape_before_crop[axis] for axis in self.transpose_backward)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        values = asdict(self)
        values["class_locations"] = {str(label): count for label, count in self.class_locations.items()}
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CaseProperties:
        """The inverse of ``to_dict``."""
        return cls(
            spacing=tuple(values["spacing"]),
            origin=tuple(values["origin"]),
            direction=tuple(values["direction"]),
            transpose_forward=tuple(values["transpose_forward"]),
            shape_before_crop=tuple(values["shape_before_crop"]),
            bbox=[list(pair) for pair in values["bbox"]],
            shape_after_crop=tuple(values["shape_after_crop"]),
            target_spacing=tuple(values["target_spacing"]),
            shape_after_resampling=tuple(values["shape_after_resampling"]),
            class_locations={int(label): count for label, count in values.get("class_locations", {}).items()},
        )

    def image_like(self, array: np.ndarray) -> Image:
        """``array`` (in input geometry, e.g. from ``restore_to_original``) as an Image with the input's geometry."""
        if array.shape != self.original_shape:
            raise ValueError(f"array of shape {array.shape} does not have the input shape {self.original_shape}")
        return Image(array, self.spacing, self.origin, self.direction)


def stack_channels(images: Sequence[Image]) -> np.ndarray:
    """The channels of one case as ``(c, z, y, x)``; they must share one shape."""
    if not images:
        raise ValueError("a case needs at least one image channel")
    for image in images[1:]:
        if image.array.shape != images[0].array.shape:
            raise ValueError(
                f"{image.source or 'channel'}: shape {image.array.shape} differs from the first channel's "
                f"{images[0].array.shape} ({images[0].source or 'channel 0'})"
            )
    return np.stack([image.array for image in images])


def check_finite(images: Sequence[Image]) -> None:
    """Raise ValueError naming the file and the count when an image holds NaN or infinite voxels."""
    for channel, image in enumerate(images):
        if np.issubdtype(image.array.dtype, np.inexact):
            bad = int(image.array.size - np.count_nonzero(np.isfinite(image.array)))
            if bad:
                raise ValueError(f"{image.source or f'channel {channel}'}: {bad} voxels are NaN or infinite")


def _normalized(
    images: Sequence[Image], data: np.ndarray, spec: PreprocessingSpec, mask: np.ndarray | None, ratio: float
) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked for below, naming the file
        normalized = normalize(data, spec.normalization, mask, ratio)
    for channel, (image, values) in enumerate(zip(images, normalized, strict=True)):
        if not np.isfinite(values).all():
            raw = data[channel]
            raise ValueError(
                f"{image.source or f'channel {channel}'}: values from {float(raw.min()):g} to {float(raw.max()):g} "
                f"overflow float32 in {spec.normalization[channel].scheme} normalisation"
            )
    return normalized


def preprocess_case(
    images: Sequence[Image], label: Image | None, spec: PreprocessingSpec
) -> tuple[np.ndarray, np.ndarray, CaseProperties]:
    """Crops, normalises and resamples one case.

    Args:
        images: One image per channel, all in one geometry.
        label: The label map in the same geometry, or None (inference).
        spec: Target spacing and normalisation.

    Raises:
        ValueError: NaN or Inf in an image or the label, or values whose normalisation overflows (see above).

    Returns:
        ``data`` ``(c, z, y, x)`` float32, always finite; ``seg`` ``(1, z, y, x)`` int16, -1 for background outside the
        nonzero mask (and everywhere outside it when there is no label); the properties.
    """
    reference = images[0]
    check_finite(images)
    if label is not None:
        check_finite([label])
    data = stack_channels(images)
    seg = None
    if label is not None:
        if label.array.shape != reference.array.shape:
            raise ValueError(
                f"{label.source or 'label'}: shape {label.array.shape} differs from the image's {reference.array.shape}"
            )
        seg = np.rint(label.array)[None] if np.issubdtype(label.array.dtype, np.floating) else label.array[None]
    order = spec.axes_for(reference.ndim)
    channel_order = (0, *(axis + 1 for axis in order))
    data = data.transpose(channel_order)
    seg = None if seg is None else seg.transpose(channel_order)
    cropped = crop_to_nonzero(data, seg)
    shape_after_crop = cropped.data.shape[1:]
    crop_ratio = float(np.prod(shape_after_crop) / np.prod(data.shape[1:]))
    normalized = _normalized(images, cropped.data, spec, cropped.mask, crop_ratio)
    spacing = tuple(reference.array_spacing[axis] for axis in order)
    target = spec.spacing_for(spacing)
    new_shape = compute_new_shape(shape_after_crop, spacing, target)
    out_data = resample_image(normalized, spacing, target, new_shape)
    out_seg = resample_labels(cropped.seg, spacing, target, new_shape)
    if not np.isfinite(out_data).all():
        bad = int(out_data.size - np.count_nonzero(np.isfinite(out_data)))
        raise ValueError(f"{reference.source or 'case'}: preprocessing produced {bad} NaN or infinite values")
    properties = CaseProperties(
        spacing=tuple(float(s) for s in reference.spacing),
        origin=tuple(float(o) for o in reference.origin),
        direction=tuple(float(d) for d in reference.direction),
        transpose_forward=order,
        shape_before_crop=tuple(data.shape[1:]),
        bbox=cropped.bbox,
        shape_after_crop=tuple(shape_after_crop),
        target_spacing=tuple(float(t) for t in target),
        shape_after_resampling=tuple(new_shape),
    )
    return out_data, out_seg, properties


def preprocess_image_for_inference(
    images: Sequence[Image], spec: PreprocessingSpec
) -> tuple[np.ndarray, CaseProperties]:
    """Preprocesses the channels of one new case exactly as training cases were; returns data and properties.

    Raises:
        ValueError: an image of another number of axes than the model's training images, naming its file.
    """
    trained_ndim = None if spec.transpose_forward is None else len(spec.transpose_forward)
    for image in images:
        if trained_ndim is not None and image.ndim != trained_ndim:
            raise ValueError(
                f"{image.source or 'the image'}: a {image.ndim}-D image of shape {image.array.shape}; the model was "
                f"trained on {trained_ndim}-D images and predicts only those"
            )
    data, _, properties = preprocess_case(images, None, spec)
    return data, properties


def restore_to_original(prediction: np.ndarray, properties: CaseProperties) -> np.ndarray:
    """Puts a prediction made on preprocessed data back into the input geometry.

    Args:
        prediction: Float class probabilities ``(c, z, y, x)`` (channel 0 background), resampled
            linearly; or an integer label map ``(z, y, x)`` or ``(1, z, y, x)``, resampled label by label.
        properties: The properties recorded when the case was preprocessed.

    Returns:
        The prediction in the input's array order and shape (``original_shape``), with the same leading
        axes; outside the crop box the background probability is 1 (the other classes 0), or the label is 0.
    """
    spacing, original_spacing = properties.target_spacing, properties.transposed_spacing
    shape = properties.shape_after_crop
    if np.issubdtype(prediction.dtype, np.floating):
        restored = resample_probabilities(prediction, spacing, original_spacing, shape)
        fill = np.zeros(prediction.shape[0], dtype=restored.dtype)
        fill[0] = 1
        full = paste_into(restored, properties.bbox, properties.shape_before_crop, fill)
    else:
        restored = resample_labels(prediction, spacing, original_spacing, shape)
        full = paste_into(restored, properties.bbox, properties.shape_before_crop, 0)
    lead = full.ndim - len(shape)
    return np.ascontiguousarray(
        full.transpose((*range(lead), *(lead + axis for axis in properties.transpose_backward)))
    )


def class_locations(
    seg: np.ndarray, labels: Iterable[int], max_samples: int = MAX_LOCATIONS, seed: int = LOCATION_SEED
) -> dict[int, np.ndarray]:
    """Voxel coordinates of each label, for oversampling foreground when patches are drawn.

    At most ``max(max_samples, 1% of the label's voxels)`` coordinates are kept per label, chosen with
    a seeded generator so that a re-run gives the same file.

    Args:
        seg: Label map ``(1, z, y, x)``.
        labels: The label values to locate (not background).
        max_samples: Coordinates kept per label.
        seed: Seed of the generator choosing them.

    Returns:
        Label -> ``(n, ndim)`` int32 coordinates in array order, sorted; labels absent give ``(0, ndim)``.
    """
    spatial = seg[0]
    rng = np.random.default_rng(seed)
    found = {}
    for label in labels:
        coords = np.argwhere(spatial == label)
        keep = min(len(coords), max(max_samples, int(np.ceil(len(coords) * MIN_LOCATION_COVERAGE))))
        if keep < len(coords):
            coords = coords[np.sort(rng.choice(len(coords), size=keep, replace=False))]
        found[int(label)] = coords.astype(np.int32)
    return found
