"""Per-structure measurements of a segmentation: voxel count, volume, connected components, image intensities.

A structure is one label value of a mask, named as in the dataset's labels. ``predict --statistics`` and
``evaluate --statistics`` write one ``CASE_statistics.json`` per case and one ``statistics.csv`` for the folder.

``CASE_statistics.json`` holds ``schema_version``, ``case``, ``prediction`` (the measurements of the predicted
mask) and, from ``evaluate`` only, ``reference`` (those of the reference mask). The measurements of one mask::

    mask              the file measured
    spacing           voxel size in mm, ITK order (x, y, z)
    voxel_volume_ml   one voxel's volume in mL: the product of the spacing (mm³) / 1000
    channels          the images whose intensities were measured, in channel order ([] without images)
    structures        per label > 0 of the dataset, present or not: name, label, voxels, volume_ml, components
                      (connected, any face, edge or corner touching) and intensity: per channel the mean, median,
                      p5 and p95 of the image's voxels inside the structure (null for a structure of no voxel)

``statistics.csv`` has a row per case, mask (``prediction`` or ``reference``) and structure: ``case, mask,
structure, label, voxels, volume_ml, components``, then ``chK_mean, chK_median, chK_p5, chK_p95`` for each
channel K from 0; a null is an empty cell. Both files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mambaseg.inference.inputs import InputCase, discover_cases, load_case
from mambaseg.io import Image, geometry_differences, read_image
from mambaseg.io.atomic import write_text_atomically

CASE_STATISTICS_ENDING = "_statistics.json"
"""The per-case file is ``CASE_statistics.json``."""
STATISTICS_TABLE = "statistics.csv"
"""The table of every case of a folder."""
SCHEMA_VERSION = 1
INTENSITY_STATISTICS = ("mean", "median", "p5", "p95")
_FIXED_COLUMNS = ("case", "mask", "structure", "label", "voxels", "volume_ml", "components")


class MeasurementError(ValueError):
    """Images that cannot be measured together, or a statistics file that cannot be read."""


def case_statistics_file(folder: Path, case: str) -> Path:
    """``FOLDER/CASE_statistics.json``."""
    return folder / f"{case}{CASE_STATISTICS_ENDING}"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _intensities(values: np.ndarray) -> dict[str, float | None]:
    """Mean, median, p5 and p95 (numpy's linear percentiles) of the voxels given; nulls for none."""
    if values.size == 0:
        return dict.fromkeys(INTENSITY_STATISTICS)
    values = values.astype(np.float64)
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {"mean": _finite(np.mean(values)), "median": _finite(median), "p5": _finite(p5), "p95": _finite(p95)}


def _checked_channels(mask: Image, images: Sequence[Image]) -> None:
    for index, image in enumerate(images):
        differences = geometry_differences(image, mask)
        if differences:
            described = "; ".join(difference.describe() for difference in differences)
            name = image.source or f"channel {index}"
            raise MeasurementError(f"{name}: {described} of the mask ({mask.source or 'in memory'})")


def measure_structures(
    mask: Image, label_names: Mapping[int, str], images: Sequence[Image] | None = None
) -> dict[str, Any]:
    """The measurements of each structure of ``mask`` (see the module docstring for the keys).

    A voxel's volume is the product of the spacing: the direction matrix only turns the grid (its columns are
    orthonormal), so an oblique grid has the same volumes as an axis-aligned one. A 2-D mask's voxel is taken as
    1 mm thick: its ``volume_ml`` is the area in mm² / 1000.

    Args:
        mask: the label map; a float or boolean mask is rounded to labels.
        label_names: the structures, as label value -> name; values 0 and below are left out.
        images: the case's channel images on the mask's grid, for intensities; None or empty: no intensities.

    Raises:
        MeasurementError: an image on another grid than the mask, naming the image's file.
    """
    images = list(images or [])
    _checked_channels(mask, images)
    array = mask.array
    labels = array if np.issubdtype(array.dtype, np.integer) else np.rint(array.astype(np.float64)).astype(np.int64)
    wanted = sorted(label for label in label_names if label > 0)
    voxel_volume_ml = float(np.prod(mask.spacing)) / 1000.0
    connectivity = ndimage.generate_binary_structure(labels.ndim, labels.ndim)  # as nnU-Net's postprocessing
    boxes = ndimage.find_objects(np.where(labels > 0, labels, 0), max_label=wanted[-1]) if wanted else []
    structures = []
    for label in wanted:
        box = boxes[label - 1]  # the label's bounding box, None where it is absent
        if box is None:
            voxels, components, values = 0, 0, [np.empty(0)] * len(images)
        else:
            inside = labels[box] == label  # (z, y, x) within the box
            voxels = int(np.count_nonzero(inside))
            components = int(ndimage.label(inside, structure=connectivity)[1])
            values = [image.array[box][inside] for image in images]  # (voxels,) per channel
        structures.append(
            {
                "name": label_names[label],
                "label": int(label),
                "voxels": voxels,
                "volume_ml": voxels * voxel_volume_ml,
                "components": components,
                "intensity": [_intensities(channel) for channel in values],
            }
        )
    return {
        "mask": mask.source,
        "spacing": [float(value) for value in mask.spacing],
        "voxel_volume_ml": voxel_volume_ml,
        "channels": [image.source for image in images],
        "structures": structures,
    }


def write_case_statistics(
    path: Path, case: str, measurements: Mapping[str, Any], reference: Mapping[str, Any] | None = None
) -> None:
    """Write ``CASE_statistics.json``: the measurements of the predicted mask, and of the reference where given.

    Args:
        path: the file, usually ``case_statistics_file(folder, case)``; its folder is made if missing.
        case: the case name.
        measurements: ``measure_structures`` of the predicted mask.
        reference: ``measure_structures`` of the reference mask (``evaluate``).
    """
    content: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "case": case, "prediction": dict(measurements)}
    if reference is not None:
        content["reference"] = dict(reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(content, indent=2, allow_nan=False) + "\n")


def read_case_statistics(path: Path) -> tuple[str, dict[str, Any]]:
    """The case and its masks' measurements (``prediction``, and ``reference`` where measured) of one file.

    Raises:
        MeasurementError: not JSON, or without ``case`` and ``prediction``, naming the file.
    """
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MeasurementError(f"{path}: not a statistics file: {err}") from err
    if not isinstance(content, dict) or not isinstance(content.get("case"), str) or "prediction" not in content:
        raise MeasurementError(f"{path}: not a statistics file: no 'case' and 'prediction'")
    return content["case"], {mask: content[mask] for mask in ("prediction", "reference") if mask in content}


def collect_statistics(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """``read_case_statistics`` of every ``*_statistics.json`` in ``folder`` (hidden files left out), by case."""
    files = [path for path in folder.glob(f"*{CASE_STATISTICS_ENDING}") if path.is_file() and path.name[0] != "."]
    return sorted((read_case_statistics(path) for path in files), key=lambda row: row[0])


def _cell(value: Any) -> Any:
    return "" if value is None else value


def write_statistics_table(path: Path, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Write ``statistics.csv``: a row per case, mask and structure (columns in the module docstring).

    Args:
        path: the file; its folder is made if missing.
        rows: per case its name and its masks' measurements, ``{"prediction": .., "reference": ..}`` (the
            reference optional), as ``read_case_statistics`` and ``collect_statistics`` return them.
    """
    measured = [
        (case, mask, masks[mask]) for case, masks in rows for mask in ("prediction", "reference") if mask in masks
    ]
    n_channels = max((len(measurements["channels"]) for _, _, measurements in measured), default=0)
    channel_columns = [f"ch{k}_{statistic}" for k in range(n_channels) for statistic in INTENSITY_STATISTICS]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([*_FIXED_COLUMNS, *channel_columns])
    for case, mask, measurements in measured:
        for s in measurements["structures"]:
            cells = [case, mask, s["name"], s["label"], s["voxels"], s["volume_ml"], s["components"]]
            intensities = [
                _cell(channel[statistic]) for channel in s["intensity"] for statistic in INTENSITY_STATISTICS
            ]
            writer.writerow([*cells, *intensities, *[""] * (len(channel_columns) - len(intensities))])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, text.getvalue())


def _case_images(images: Path | None, found: Mapping[str, InputCase], case: str) -> list[Image]:
    if images is None:
        return []
    if case not in found:
        raise MeasurementError(f"{images}: no image for case {case!r} (expected {case}_0000.nii.gz, ...)")
    return load_case(found[case])


def write_evaluation_statistics(folder: Path, summary: Mapping[str, Any], images: Path | None = None) -> Path:
    """Measure the predicted and the reference mask of every case an evaluation scored; write the statistics files.

    The structures are the labels scored (each label of a region), named by the summary's ``label_names``,
    else ``label_N``.

    Args:
        folder: where each ``CASE_statistics.json`` and ``statistics.csv`` go.
        summary: the evaluation summary (``mambaseg.evaluation.summary``): its cases' files, labels, label names.
        images: the cases' images (nnU-Net channel files ``CASE_0000.nii.gz``, ..., or one file per case) for
            intensities; None: none measured.

    Returns:
        The path of ``statistics.csv``.

    Raises:
        MeasurementError: a case without an image in ``images``, or an image on another grid than its masks.
    """
    labels = {label for item in summary["labels"] for label in (item if isinstance(item, list | tuple) else [item])}
    names = {int(label): summary["label_names"].get(str(label), f"label_{label}") for label in labels}
    found = {case.name: case for case in discover_cases(images)} if images is not None else {}
    rows = []
    for case, files in summary["cases"].items():
        channels = _case_images(images, found, case)
        masks = {
            mask: measure_structures(read_image(files[f"{mask}_file"]), names, channels)
            for mask in ("prediction", "reference")
        }
        write_case_statistics(case_statistics_file(folder, case), case, masks["prediction"], masks["reference"])
        rows.append((case, masks))
    table = folder / STATISTICS_TABLE
    write_statistics_table(table, rows)
    return table
