"""Per-case, per-class metrics of label maps: Dice, HD95 and normalised surface Dice (NSD).

Distances are in mm: ``spacing`` is the voxel size in array-axis order (``Image.array_spacing``) of the
reference. HD95 is MONAI's symmetric 95th-percentile Hausdorff distance between the surfaces of the two
masks; NSD is MONAI's surface Dice at a tolerance in mm (default 1 mm, one value per class if wanted).

Empty masks (a class absent from the prediction, the reference, or both):

    both empty      Dice, HD95 and NSD are NaN: the class is not scored in that case and is left out of
                    every mean (nnU-Net's rule for Dice, applied to all three so each mean covers the same cases).
    one side empty  Dice 0, NSD 0, and HD95 the image diagonal in mm (the largest distance the image allows),
                    so a missed or a hallucinated structure is penalised instead of dropped.

An ignore label, where given, takes its voxels out of both masks before scoring.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from mambaseg.evaluation.dice import Item, dice_per_class, item_key, item_mask

METRICS = ("dice", "hd95", "nsd")
DEFAULT_TOLERANCE_MM = 1.0

ClassScores = dict[str, float]


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the diagonal of an image of ``shape`` voxels of size ``spacing`` (array order)."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def without_ignored(
    prediction: np.ndarray, reference: np.ndarray, ignore_label: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Both label maps with the voxels the reference marks ``ignore_label`` set to background."""
    if ignore_label is None:
        return prediction, reference
    ignored = reference == ignore_label
    return np.where(ignored, 0, prediction), np.where(ignored, 0, reference)


def _cropped(prediction: np.ndarray, reference: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both masks cut to their joint bounding box plus one voxel, as (1, 1, *box) tensors; surfaces are unchanged."""
    union = prediction | reference
    box = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, union.shape[axis])))
    pred, ref = (torch.from_numpy(np.ascontiguousarray(m[tuple(box)]))[None, None] for m in (prediction, reference))
    return pred, ref


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between two non-empty boolean masks."""
    pred, ref = _cropped(prediction, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI warns about its own deprecated internal argument
        distance = compute_hausdorff_distance(pred, ref, include_background=True, percentile=95, spacing=list(spacing))
    return float(distance.item())


def surface_dice(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """Normalised surface Dice of two non-empty boolean masks: surface within ``tolerance_mm`` of the other's."""
    pred, ref = _cropped(prediction, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        score = compute_surface_dice(
            pred, ref, class_thresholds=[float(tolerance_mm)], include_background=True, spacing=list(spacing)
        )
    return float(score.item())


def case_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    labels: Sequence[Item],
    spacing: Sequence[float],
    tolerance_mm: float | Mapping[Item, float] = DEFAULT_TOLERANCE_MM,
    ignore_label: int | None = None,
    metrics: Sequence[str] = METRICS,
) -> dict[Item, ClassScores]:
    """The ``metrics`` (default Dice, HD95 and NSD) and the voxel counts ``n_pred`` and ``n_ref`` of each label.

    Args:
        prediction: label map, the shape of ``reference``.
        reference: ground-truth label map.
        labels: the labels to score (background usually left out), or regions (tuples of labels, scored as their
            union).
        spacing: voxel size in mm in array order.
        tolerance_mm: NSD tolerance, one for all labels or one per label.
        ignore_label: reference value whose voxels count for neither mask.
        metrics: which of ``METRICS`` to compute, in that order; HD95 and NSD cost most.
    """
    metrics = checked_metrics(metrics)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the reference's {reference.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not fit a {reference.ndim}-D image")
    prediction, reference = without_ignored(prediction, reference, ignore_label)
    dices = dice_per_class(prediction, reference, labels)
    diagonal = image_diagonal_mm(reference.shape, spacing)
    scores = {}
    for label in map(item_key, labels):
        pred, ref = item_mask(prediction, label), item_mask(reference, label)
        n_pred, n_ref = int(pred.sum()), int(ref.sum())
        if not (n_pred or n_ref):
            scores[label] = unscored(metrics)
            continue
        values: ClassScores = {"dice": dices[label]}
        if "hd95" in metrics:
            values["hd95"] = hd95(pred, ref, spacing) if n_pred and n_ref else diagonal
        if "nsd" in metrics:
            tolerance = tolerance_mm[label] if isinstance(tolerance_mm, Mapping) else tolerance_mm
            values["nsd"] = surface_dice(pred, ref, spacing, tolerance) if n_pred and n_ref else 0.0
        scores[label] = {**{m: values[m] for m in metrics}, "n_pred": n_pred, "n_ref": n_ref}
    return scores


def checked_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """``metrics`` in the order of ``METRICS``; ValueError naming any unknown one, or none given."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ValueError(f"metrics {list(metrics)}: choose one or more of {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in metrics)


def unscored(metrics: Sequence[str] = METRICS) -> ClassScores:
    """The scores of a label absent from both masks of a case: NaN for each metric, no voxels."""
    return {**{metric: math.nan for metric in checked_metrics(metrics)}, "n_pred": 0, "n_ref": 0}
