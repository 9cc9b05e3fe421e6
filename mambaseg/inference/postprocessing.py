"""Postprocessing of predicted masks as plain-data steps, and the inference instructions that carry them.

A step is a dict, ``{"op": "keep_largest_component", "labels": [1, 2], "jointly": true}``: keep the largest
connected component of the union of ``labels`` (``jointly``), or of each label on its own, and set the
voxels of every other component to background (0). Components connect through faces, edges and corners
(26-connectivity in 3-D, 8 in 2-D), as in nnU-Net.

``inference_instructions.json``, written by ``mambaseg find-best``, names the runs (folders relative to the
workspace; several are an ensemble whose probabilities are averaged), the folds, and the postprocessing
steps to apply after prediction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

KEEP_LARGEST_COMPONENT = "keep_largest_component"
ARGMAX_SLAB = 8  # image slices per argmax step
SCHEMA_VERSION = 1

Step = dict[str, Any]


class PostprocessingError(ValueError):
    """A postprocessing step or an instructions file that cannot be used."""


def keep_largest_component_step(labels: Sequence[int], jointly: bool) -> Step:
    """The step that keeps the largest component of ``labels`` (their union if ``jointly``)."""
    return {"op": KEEP_LARGEST_COMPONENT, "labels": [int(label) for label in labels], "jointly": bool(jointly)}


def keep_largest_component(mask: np.ndarray, labels: Sequence[int], jointly: bool = True) -> np.ndarray:
    """A copy of ``mask`` where only the largest connected component of ``labels`` remains, the rest background.

    Args:
        mask: label map.
        labels: the labels to clean; other labels are untouched.
        jointly: one component for the union of ``labels``; else the largest of each label separately.
    """
    result = mask.copy()
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    for group in [list(labels)] if jointly else [[label] for label in labels]:
        selected = np.isin(mask, group)
        components, count = ndimage.label(selected, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        result[selected & (components != int(np.argmax(sizes)))] = 0
    return result


def check_steps(steps: Any, source: str = "postprocessing") -> list[Step]:
    """The steps, validated; PostprocessingError naming ``source`` and the offending value otherwise."""
    if not isinstance(steps, list):
        raise PostprocessingError(f"{source}: postprocessing must be a list of steps, got {steps!r}")
    for index, step in enumerate(steps):
        where = f"{source}: postprocessing step {index}"
        if not isinstance(step, Mapping) or step.get("op") != KEEP_LARGEST_COMPONENT:
            raise PostprocessingError(f"{where}: unknown step {step!r}; known ops: {KEEP_LARGEST_COMPONENT}")
        labels = step.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(v, int) and v > 0 for v in labels):
            raise PostprocessingError(f"{where}: 'labels' must be a non-empty list of positive labels, got {labels!r}")
        if not isinstance(step.get("jointly"), bool):
            raise PostprocessingError(f"{where}: 'jointly' must be true or false, got {step.get('jointly')!r}")
    return [dict(step) for step in steps]


def apply_postprocessing(mask: np.ndarray, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``mask`` after each step in order (the input is left unchanged)."""
    for step in check_steps(list(steps)):
        mask = keep_largest_component(mask, step["labels"], step["jointly"])
    return mask


@dataclass
class InferenceInstructions:
    """What ``mambaseg find-best`` chose: runs and folds to predict with, then the postprocessing.

    Attributes:
        dataset: dataset name.
        runs: run folders relative to the workspace (``DATASET/runs/CONFIG__NETWORK``); several form an ensemble.
        folds: the folds of each run whose models are averaged.
        postprocessing: steps for ``apply_postprocessing``.
        ranking: every candidate with its cross-validation scores, best first.
        skipped: candidates left out, each with the reason.
        cross_validation: scores of the chosen candidate before and after postprocessing.
    """

    dataset: str
    runs: list[str]
    folds: list[int]
    postprocessing: list[Step] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    cross_validation: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON, ``schema_version`` first."""
        content = asdict(self)
        return {"schema_version": content.pop("schema_version"), **content}


def load_instructions(path: str | Path) -> InferenceInstructions:
    """Read and validate ``inference_instructions.json``.

    Raises:
        PostprocessingError: unreadable JSON, another schema version, or a malformed field (named with the file).
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PostprocessingError(f"{path}: cannot be read as JSON: {error}") from error
    if not isinstance(content, dict):
        raise PostprocessingError(f"{path}: expected a JSON object, got {type(content).__name__}")
    version = content.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PostprocessingError(f"{path}: schema_version {version!r} is not the supported {SCHEMA_VERSION}")
    if not isinstance(content.get("dataset"), str):
        raise PostprocessingError(f"{path}: 'dataset' must be the dataset name, got {content.get('dataset')!r}")
    runs, folds = content.get("runs"), content.get("folds")
    if not isinstance(runs, list) or not runs or not all(isinstance(run, str) for run in runs):
        raise PostprocessingError(f"{path}: 'runs' must be a non-empty list of run folders, got {runs!r}")
    if not isinstance(folds, list) or not folds or not all(isinstance(f, int) and f >= 0 for f in folds):
        raise PostprocessingError(f"{path}: 'folds' must be a non-empty list of fold numbers, got {folds!r}")
    unknown = sorted(set(content) - set(InferenceInstructions.__dataclass_fields__))
    if unknown:
        raise PostprocessingError(f"{path}: unknown fields {unknown}")
    return InferenceInstructions(
        **{**content, "postprocessing": check_steps(content.get("postprocessing", []), str(path))}
    )


def _argmax_labels(probabilities: np.ndarray) -> np.ndarray:
    """The most probable class of each voxel of (k, *input), as uint8 (uint16 from 256 classes).

    Computed in slabs along the first image axis, so no int64 index volume of the whole image is made.
    """
    mask = np.empty(probabilities.shape[1:], dtype=np.uint8 if len(probabilities) < 256 else np.uint16)
    for start in range(0, mask.shape[0], ARGMAX_SLAB):
        mask[start : start + ARGMAX_SLAB] = probabilities[:, start : start + ARGMAX_SLAB].argmax(0)
    return mask


REGION_THRESHOLD = 0.5


def _regions_to_labels(probabilities: np.ndarray, regions_class_order: Sequence[int]) -> np.ndarray:
    """The label map of region-based predictions, as nnU-Net makes it: region i's voxels above 0.5 get
    ``regions_class_order[i]``, later regions painted over earlier ones (the nested, smaller regions last).

    Args:
        probabilities: (r, *input) sigmoid probabilities, one channel per region.
        regions_class_order: the label each region's voxels get, one per region (``dataset.json``).
    """
    if len(regions_class_order) != len(probabilities):
        raise PostprocessingError(
            f"regions_class_order {list(regions_class_order)}: one label per region needed, got {len(probabilities)} "
            "region channels"
        )
    mask = np.zeros(probabilities.shape[1:], dtype=np.uint8 if max(regions_class_order, default=0) < 256 else np.uint16)
    for channel, label in zip(probabilities, regions_class_order, strict=True):
        mask[channel > REGION_THRESHOLD] = label
    return mask


def to_labels(probabilities: np.ndarray, regions_class_order: Sequence[int] | None = None) -> np.ndarray:
    """The mask of softmax probabilities (argmax) or, with ``regions_class_order``, of region sigmoids.

    The one place where probabilities become labels: prediction, ensembles, cascades, validation and find-best all
    call it.
    """
    if regions_class_order is None:
        return _argmax_labels(probabilities)
    return _regions_to_labels(probabilities, regions_class_order)
