"""DICOM-SEG of a predicted mask, referencing the DICOM series it was predicted from (through highdicom).

The mask's array is (z, y, x) in the order ``read_dicom_series`` gives: slices sorted along the slice
normal, rows and columns as stored. Each mask slice is matched to its source instance by physical
position (its first voxel against ImagePositionPatient), never by file order, and the slice
orientation must equal the instances' ImageOrientationPatient, so frame k of the SEG lies exactly
on the instance it references.

Segments are labelled with the dataset's label names (``dataset.json``, through the plans) and coded as
SCT "Tissue" unless a mapping file gives a label its coded concept, as highdicom expects them::

    {"liver": {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}}

Each code is ``[coding scheme designator, code value, code meaning]`` (an optional fourth item: the scheme
version); ``category`` is the segmented property category, ``type`` the segmented property type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import mambaseg
from mambaseg.io import Image

_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
_EMPTY_ALLOWED = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
_ORIENTATION_TOLERANCE = 1e-3


class DicomSegError(ValueError):
    """A DICOM-SEG that cannot be made for this series; the message names the file or folder and the value."""


@dataclass(frozen=True)
class SegmentCode:
    """The coded concept of one segment: its property category and type."""

    category: Code
    type: Code


DEFAULT_SEGMENT_CODE = SegmentCode(codes.SCT.Tissue, codes.SCT.Tissue)
_CODE_KEYS = ("category", "type")


def _code(path: Path, label: str, key: str, value: object) -> Code:
    if (
        not isinstance(value, list)
        or len(value) not in (3, 4)
        or not all(isinstance(item, str) and item.strip() for item in value)
    ):
        raise DicomSegError(
            f'{path}: label {label!r}: {key!r} must be [scheme, value, meaning] (e.g. ["SCT", "10200004", '
            f'"Liver"]), got {value!r}'
        )
    scheme, code_value, meaning, *version = value
    try:
        return Code(code_value, scheme, meaning, *version)
    except (TypeError, ValueError) as err:
        raise DicomSegError(f"{path}: label {label!r}: {key!r} {value!r} is not a valid code: {err}") from err


def load_segment_codes(path: str | Path, label_names: Mapping[int, str]) -> dict[int, SegmentCode]:
    """The coded concept of each label a mapping file names, by class index (see the module's docstring).

    Args:
        path: a JSON object, label name -> ``{"category": [...], "type": [...]}``.
        label_names: class index -> label name, of the model.

    Raises:
        DicomSegError: unreadable JSON, an unknown or background label, or a malformed entry; naming the file and
            the label.
    """
    path = Path(path).expanduser()
    try:
        content = json.loads(path.read_text())
    except OSError as err:
        raise DicomSegError(f"{path}: cannot read the segment codes: {err.strerror}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DicomSegError(f"{path}: the segment codes are not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise DicomSegError(f"{path}: expected a JSON object of label name -> codes, got {type(content).__name__}")
    index = {name: k for k, name in label_names.items() if k > 0}
    found = {}
    for label, entry in content.items():
        if label not in index:
            raise DicomSegError(f"{path}: label {label!r} is not a label of the model (its labels: {', '.join(index)})")
        if not isinstance(entry, dict) or sorted(entry) != sorted(_CODE_KEYS):
            keys = sorted(entry) if isinstance(entry, dict) else entry
            raise DicomSegError(f"{path}: label {label!r}: needs exactly 'category' and 'type', got {keys!r}")
        found[index[label]] = SegmentCode(*(_code(path, label, key, entry[key]) for key in _CODE_KEYS))
    return found


def read_series_datasets(folder: str | Path, series_uid: str) -> list[pydicom.Dataset]:
    """The headers (no pixel data) of every instance of series ``series_uid`` directly in ``folder``.

    Patient and study attributes that DICOM requires but allows empty are added, empty, where absent (in
    memory only), since the SEG copies them.
    """
    datasets = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue
        if str(dataset.get("SeriesInstanceUID", "")) == series_uid and "ImagePositionPatient" in dataset:
            dataset.filename = str(path)
            for key in _EMPTY_ALLOWED:
                if key not in dataset:
                    setattr(dataset, key, None)
            datasets.append(dataset)
    if not datasets:
        raise DicomSegError(f"{folder}: no DICOM instance of series {series_uid!r}")
    return datasets


def check_source_series(folder: str | Path, series_uid: str) -> None:
    """Raise DicomSegError unless a DICOM-SEG can reference the series (before spending time predicting it)."""
    _check_uids(read_series_datasets(folder, series_uid))


def missing_uids(datasets: list[pydicom.Dataset]) -> str | None:
    """``FILE: empty or missing UID, ...`` for the first instance lacking a UID that an object referencing the
    series (a DICOM-SEG, an RT structure set) needs; None when every instance has them."""
    for dataset in datasets:
        missing = [key for key in _REQUIRED_UIDS if not str(dataset.get(key, "")).strip()]
        if missing:
            return f"{dataset.filename}: empty or missing {', '.join(missing)}"
    return None


def _check_uids(datasets: list[pydicom.Dataset]) -> None:
    problem = missing_uids(datasets)
    if problem:
        raise DicomSegError(
            f"{problem}; a DICOM-SEG must reference them (the series was probably anonymised too strictly)"
        )


def match_slices(mask: Image, datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The source instance of each mask slice, in mask slice order.

    Raises:
        DicomSegError: the in-plane orientation or size differs, or a slice has no instance at its position.
    """
    direction = np.asarray(mask.direction, dtype=float).reshape(3, 3)
    first = datasets[0]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    if np.abs(orientation - np.concatenate([direction[:, 0], direction[:, 1]])).max() > _ORIENTATION_TOLERANCE:
        raise DicomSegError(
            f"{first.filename}: ImageOrientationPatient {orientation.tolist()} differs from the mask's row and column "
            f"directions {direction[:, 0].tolist()}, {direction[:, 1].tolist()}"
        )
    if (int(first.Rows), int(first.Columns)) != mask.array.shape[1:]:
        raise DicomSegError(
            f"{first.filename}: {first.Rows} x {first.Columns} pixels, the mask's slices are {mask.array.shape[1:]}"
        )
    positions = np.array([np.asarray(d.ImagePositionPatient, dtype=float) for d in datasets])  # (n, 3)
    n_slices = mask.array.shape[0]
    corners = mask.physical_points(np.array([[k, 0, 0] for k in range(n_slices)]))  # (z, 3)
    distances = np.linalg.norm(corners[:, None] - positions[None], axis=-1)  # (z, n)
    nearest = distances.argmin(axis=1)
    tolerance = 0.5 * mask.spacing[2]
    far = np.flatnonzero(distances[np.arange(n_slices), nearest] > tolerance)
    if far.size:
        k = int(far[0])
        raise DicomSegError(
            f"{mask.source or 'mask'}: no instance of the series lies at slice {k} (position {corners[k].tolist()})"
        )
    if len(set(nearest.tolist())) != n_slices:
        raise DicomSegError(f"{mask.source or 'mask'}: several mask slices fall on one instance of the series")
    return [datasets[i] for i in nearest]


def build_dicom_seg(
    mask: Image,
    series_folder: str | Path,
    series_uid: str,
    label_names: Mapping[int, str],
    model_name: str,
    segment_codes: Mapping[int, SegmentCode] | None = None,
) -> hd.seg.Segmentation:
    """A BINARY DICOM-SEG of ``mask`` with one segment per foreground class, referencing the source series.

    Args:
        mask: the predicted label map in the geometry of the series as read by ``read_dicom_series``.
        series_folder: the folder holding the series.
        series_uid: its SeriesInstanceUID.
        label_names: class index -> name; every class from 1 to the largest is described.
        model_name: the algorithm's name in the segment descriptions (the run folder's name).
        segment_codes: class index -> coded concept (``load_segment_codes``); others are coded SCT Tissue.
    """
    datasets = read_series_datasets(series_folder, series_uid)
    _check_uids(datasets)
    sources = match_slices(mask, datasets)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.cid7162.ArtificialIntelligence, version=mambaseg.__version__, source="mambaseg"
    )
    n_segments = max([*(k for k in label_names if k > 0), int(mask.array.max())])
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=label_names.get(k, f"label {k}"),
            segmented_property_category=(segment_codes or {}).get(k, DEFAULT_SEGMENT_CODE).category,
            segmented_property_type=(segment_codes or {}).get(k, DEFAULT_SEGMENT_CODE).type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k in range(1, n_segments + 1)
    ]
    pixels = np.ascontiguousarray(mask.array, dtype=np.uint8 if n_segments < 256 else np.uint16)  # (z, y, x)
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="mambaseg",
            manufacturer_model_name=model_name,
            software_versions=mambaseg.__version__,
            device_serial_number="0",
            omit_empty_frames=bool(pixels.any()),
        )
    except (AttributeError, TypeError, ValueError) as err:
        raise DicomSegError(f"{series_folder}: cannot make a DICOM-SEG of series {series_uid!r}: {err}") from err
