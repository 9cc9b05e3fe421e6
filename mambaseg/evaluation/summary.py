"""The one summary schema (``summary.json``), written by ``evaluate`` and by a fold's validation alike, and its CSV.

``evaluate_cases`` scores pairs of predicted and reference masks (files or images in memory);
``evaluate_folders`` first matches the files of two folders by case name (the file name without its image
ending). ``summary.json`` (``schema_version`` 2) holds:

    schema_version, prediction, reference   the schema, and where predictions and references came from
    labels                                  the label values scored, e.g. ``[1, 2]``
    label_names                             ``{"1": "anterior", ...}`` where known, else ``{}``
    metrics                                 the metrics computed, of ``dice``, ``hd95``, ``nsd``
    tolerance_mm                            the NSD tolerance per label, ``{"1": 1.0, ...}``
    cases                                   per case: ``prediction_file``, ``reference_file`` and
                                            ``metrics`` ``{"1": {"dice": .., "hd95": .., "nsd": .., "n_pred": ..,
                                            "n_ref": ..}, ...}``
    mean                                    per label, each metric's mean over cases (NaNs left out, see
                                            ``mambaseg.evaluation.metrics`` for the empty-mask rules)
    foreground_mean                         each metric's mean of the per-label means
    unmatched_predictions                   prediction files without a reference, not scored

NaN (a label absent from both masks, a mean over no case) is ``null`` in the JSON, never ``NaN``, and an
empty cell in the CSV. Both files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.evaluation.dice import item_key
from mambaseg.evaluation.metrics import (
    DEFAULT_TOLERANCE_MM,
    METRICS,
    ClassScores,
    case_metrics,
    checked_metrics,
    unscored,
)
from mambaseg.io import Image, geometry_differences, image_extension, read_image
from mambaseg.io.atomic import write_text_atomically

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2


class EvaluationError(ValueError):
    """Predictions and references that cannot be compared."""


@dataclass(frozen=True)
class CasePair:
    """A predicted and a reference mask of the same case: each a file, or an image already in memory."""

    name: str
    prediction: Path | Image
    reference: Path | Image


def case_name(path: Path) -> str | None:
    """The file name without its image ending; None for a file that is not an image."""
    try:
        extension = image_extension(path)
    except ValueError:
        return None
    return path.name[: -len(extension)]


def _images_by_case(folder: Path) -> dict[str, Path]:
    """Image files of a folder by case name (hidden files left out)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = case_name(path) if path.is_file() and not path.name.startswith(".") else None
        if name is None:
            continue
        if name in found:
            raise EvaluationError(f"{folder}: two files for case {name!r}: {found[name].name} and {path.name}")
        found[name] = path
    return found


def match_files(prediction: Path, reference: Path) -> tuple[list[CasePair], list[Path]]:
    """Pairs of files for the same case, and the prediction files without a reference.

    ``prediction`` and ``reference`` are two folders, or two files (one case named after the reference).

    Raises:
        EvaluationError: a reference without a prediction, or nothing to compare.
    """
    if prediction.is_file() and reference.is_file():
        return [CasePair(case_name(reference) or reference.name, prediction, reference)], []
    for path in (prediction, reference):
        if not path.exists():
            raise EvaluationError(f"{path}: no such file or folder")
        if not path.is_dir():
            raise EvaluationError(f"{path}: a file; give two folders, or two files")
    predicted, references = _images_by_case(prediction), _images_by_case(reference)
    if not references:
        raise EvaluationError(f"{reference}: no image files to evaluate against")
    missing = sorted(set(references) - set(predicted))
    if missing:
        expected = prediction / references[missing[0]].name
        raise EvaluationError(
            f"{expected}: no prediction for reference {references[missing[0]]}"
            + (f" ({len(missing)} cases missing: {', '.join(missing[:5])})" if len(missing) > 1 else "")
        )
    pairs = [CasePair(name, predicted[name], path) for name, path in references.items()]
    return pairs, [path for name, path in predicted.items() if name not in references]


def label_array(image: Image) -> np.ndarray:
    """Voxels of a mask as integers (float files rounded)."""
    array = image.array
    return array if np.issubdtype(array.dtype, np.integer) else np.rint(array).astype(np.int32)


def check_geometry(prediction: Image, reference: Image, prediction_file: str, reference_file: str) -> None:
    """EvaluationError naming both files where shape, spacing, origin or direction differ (``geometry_differences``)."""
    differences = geometry_differences(prediction, reference)
    if differences:
        described = "; ".join(difference.describe() for difference in differences)
        raise EvaluationError(f"{prediction_file}: {described} of the reference ({reference_file})")


def _source(mask: Path | Image) -> str:
    """The file a mask is or was read from ('' for an image made in memory)."""
    return str(mask) if isinstance(mask, Path) else mask.source


def _mask(mask: Path | Image) -> Image:
    return read_image(mask) if isinstance(mask, Path) else mask


def evaluate_pair(
    pair: CasePair,
    labels: Sequence[int] | None,
    tolerance_mm: float | Mapping[int, float] = DEFAULT_TOLERANCE_MM,
    ignore_label: int | None = None,
    metrics: Sequence[str] = METRICS,
) -> dict[int, ClassScores]:
    """Scores of one case; without ``labels``, of every non-zero value in either mask."""
    prediction, reference = _mask(pair.prediction), _mask(pair.reference)
    check_geometry(prediction, reference, _source(pair.prediction) or pair.name, _source(pair.reference) or pair.name)
    pred, ref = label_array(prediction), label_array(reference)
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0 and v != ignore_label]
    return case_metrics(pred, ref, labels, reference.array_spacing, tolerance_mm, ignore_label, metrics)


def class_means(
    per_case: Mapping[str, Mapping[int, ClassScores]], labels: Sequence[int], metrics: Sequence[str] = METRICS
) -> dict[int, dict[str, float]]:
    """Mean of each metric per label over cases, NaNs left out (NaN where a label was never scored)."""
    means = {}
    for label in labels:
        means[label] = {}
        for metric in metrics:
            values = [scores[label][metric] for scores in per_case.values() if label in scores]
            values = [v for v in values if not math.isnan(v)]
            means[label][metric] = float(np.mean(values)) if values else math.nan
    return means


def foreground_mean(means: Mapping[int, Mapping[str, float]], metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """Mean of the per-label means of each metric, labels never scored left out."""
    result = {}
    for metric in metrics:
        values = [m[metric] for m in means.values() if not math.isnan(m[metric])]
        result[metric] = float(np.mean(values)) if values else math.nan
    return result


def evaluate_cases(
    pairs: Sequence[CasePair],
    labels: Sequence[int] | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
    metrics: Sequence[str] = METRICS,
    tolerance_mm: float | Mapping[int, float] = DEFAULT_TOLERANCE_MM,
    ignore_label: int | None = None,
    workers: int = 1,
    prediction: str | Path = "",
    reference: str | Path = "",
    unmatched: Sequence[Path] = (),
) -> dict[str, Any]:
    """The summary (a JSON-ready dict, see the module docstring) of predicted against reference masks.

    Args:
        pairs: the cases, each a predicted and a reference mask (files, or images in memory).
        labels: labels to score, or regions (tuples of labels, scored as their union, keyed ``"(1, 2)"``);
            default: every non-zero value found in either mask of any case.
        label_names: a name per label value, stored in ``label_names`` (``dataset.json``'s labels inverted).
        metrics: which of ``dice``, ``hd95``, ``nsd`` to compute.
        tolerance_mm: NSD tolerance for all labels, or one per label.
        ignore_label: reference value left out of the scores.
        workers: processes scoring cases in parallel.
        prediction: where the predictions came from (a folder), as recorded in the summary.
        reference: where the references came from, as recorded in the summary.
        unmatched: prediction files without a reference, as recorded in the summary.

    Raises:
        EvaluationError: a pair whose masks differ in geometry.
        ValueError: an unknown metric.
    """
    metrics = checked_metrics(metrics)
    labels = None if labels is None else [item_key(label) for label in labels]  # regions as tuples
    score = partial(evaluate_pair, labels=labels, tolerance_mm=tolerance_mm, ignore_label=ignore_label, metrics=metrics)
    if workers > 1 and len(pairs) > 1:
        with ProcessPoolExecutor(min(workers, len(pairs)), mp_context=get_context("spawn")) as pool:
            results = list(pool.map(score, pairs))
    else:
        results = [score(pair) for pair in pairs]
    scored = sorted({label for result in results for label in result}) if labels is None else list(labels)
    per_case = {
        pair.name: {label: result.get(label, unscored(metrics)) for label in scored}
        for pair, result in zip(pairs, results, strict=True)
    }
    means = class_means(per_case, scored, metrics)
    tolerances = {label: tolerance_mm[label] if isinstance(tolerance_mm, Mapping) else tolerance_mm for label in scored}
    names = label_names or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "prediction": str(prediction),
        "reference": str(reference),
        "labels": scored,
        "label_names": {str(label): names[label] for label in scored if label in names},
        "metrics": list(metrics),
        "tolerance_mm": {str(label): float(value) for label, value in tolerances.items()},
        "cases": {
            pair.name: {
                "prediction_file": _source(pair.prediction),
                "reference_file": _source(pair.reference),
                "metrics": {str(label): scores for label, scores in per_case[pair.name].items()},
            }
            for pair in pairs
        },
        "mean": {str(label): values for label, values in means.items()},
        "foreground_mean": foreground_mean(means, metrics),
        "unmatched_predictions": [str(path) for path in unmatched],
    }


def evaluate_folders(
    prediction: str | Path,
    reference: str | Path,
    labels: Sequence[int] | None = None,
    tolerance_mm: float | Mapping[int, float] = DEFAULT_TOLERANCE_MM,
    ignore_label: int | None = None,
    workers: int = 1,
    label_names: Mapping[int, str] | None = None,
    metrics: Sequence[str] = METRICS,
) -> dict[str, Any]:
    """The summary of the predicted masks in a folder against the reference masks in another (or two files).

    Files are matched by case name with ``match_files``; see ``evaluate_cases`` for the other arguments.
    """
    prediction, reference = Path(prediction), Path(reference)
    pairs, unmatched = match_files(prediction, reference)
    for path in unmatched:
        log.warning("%s: prediction without a reference in %s, not evaluated", path, reference)
    return evaluate_cases(
        pairs,
        labels,
        label_names=label_names,
        metrics=metrics,
        tolerance_mm=tolerance_mm,
        ignore_label=ignore_label,
        workers=workers,
        prediction=prediction,
        reference=reference,
        unmatched=unmatched,
    )


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


def write_json(path: Path, content: Any) -> None:
    """``content`` as indented JSON, NaN and infinity as null, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(_json_ready(content), indent=2, allow_nan=False) + "\n")


def write_summary(summary: Mapping[str, Any], json_path: Path, csv_path: Path) -> None:
    """Write the summary as JSON and its per-case scores as CSV (one row per case and label)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(json_path, summary)
    columns = ["case", "label", *summary["metrics"], "n_pred", "n_ref"]

    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(columns)
    for name, case in summary["cases"].items():
        for label, scores in case["metrics"].items():
            values = [scores[key] for key in columns[2:]]
            writer.writerow([name, label, *("" if isinstance(v, float) and math.isnan(v) else v for v in values)])
    write_text_atomically(csv_path, rows.getvalue())
