"""DICOM RT Structure Set (RTSTRUCT) of a predicted mask, referencing the DICOM series it was predicted from.

Each foreground class becomes one ROI (ROIGenerationAlgorithm AUTOMATIC): its name from the dataset's label names,
its ROI number the class index, and a display colour fixed by the class index (``roi_colour``: a class has the same
colour in every file). A class of the model absent from the mask still gets its ROI, with no contours, so that every
file of a model lists the same structures; a mask value the model does not name becomes an ROI named ``label K``.

Contours: on each slice, the class's binary image (padded by one voxel, so that contours close at the image
border) is contoured at level 0.5 with contourpy, in voxel indices, then taken to patient coordinates (mm, LPS)
through the mask's geometry and snapped along the slice normal onto the plane of the instance the slice was
matched to (by physical position, as for the DICOM-SEG). Outer boundaries and hole boundaries are separate
CLOSED_PLANAR contours of the same ROI, read with the **even-odd rule**: a point is inside when it lies inside
an odd number of the ROI's contours on its slice, as most planning systems read them. A contour at level 0.5
runs half a voxel from every voxel centre, so rasterising it back (``read_rtstruct``) gives the mask again.

The dataset is built with pydicom's own Dataset API (rt-utils would do the same, but pulls in OpenCV for its
contours; contourpy comes with matplotlib).

Dimension letters: z, y, x voxel axes of the mask (array order); n contour points.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from contourpy import LineType, contour_generator
from matplotlib.path import Path as Polygon
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

import mambaseg
from mambaseg.inference.dicom_seg import DicomSegError, match_slices, missing_uids, read_series_datasets
from mambaseg.io import GEOMETRY_TOLERANCE, Image

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RTReferencedStudySequence items cite (Detached Study Management)
_COPIED = (  # Patient and General Study modules, copied from the source series (empty where it has none)
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
MAX_VALUE_BYTES = 0xFFFE
"""Longest ContourData of one contour, in bytes: explicit VR gives DS a 16-bit length (even): some 2,400 points."""
_LO = 64  # longest Long String (names, descriptions), in characters
_GOLDEN = (5**0.5 - 1) / 2
_OFF_PLANE = 0.1  # largest distance, in slices, of a contour from the slice it is rasterised on


class RtStructError(ValueError):
    """An RT structure set that cannot be made for this series or read on this grid; the message names the file
    or folder and the value."""


def roi_colour(label: int) -> tuple[int, int, int]:
    """The display colour (RGB, 0-255) of class ``label``: hues a golden ratio apart, distinct for labels 1-617."""
    red, green, blue = colorsys.hsv_to_rgb((label * _GOLDEN) % 1.0, 0.75, 0.95)
    return round(255 * red), round(255 * green), round(255 * blue)


def check_rtstruct_source(folder: str | Path, series_uid: str) -> None:
    """Raise RtStructError unless an RT structure set can reference the series (before spending time predicting)."""
    _check_uids(_series_datasets(folder, series_uid))


def _series_datasets(folder: str | Path, series_uid: str) -> list[pydicom.Dataset]:
    try:
        return read_series_datasets(folder, series_uid)
    except DicomSegError as err:
        raise RtStructError(str(err)) from err


def _check_uids(datasets: list[pydicom.Dataset]) -> None:
    problem = missing_uids(datasets)
    if problem:
        raise RtStructError(
            f"{problem}; an RT structure set must reference them (the series was probably anonymised too strictly)"
        )


def _plane_offsets(mask: Image, sources: list[pydicom.Dataset], folder: str | Path) -> np.ndarray:
    """Per mask slice, the shift along the slice normal onto its instance's plane, in mm; (z, 3).

    Raises:
        RtStructError: the in-plane spacing differs from PixelSpacing, or a slice lies beside its instance.
    """
    first = sources[0]
    pixel_spacing = np.asarray(first.PixelSpacing, dtype=float)  # (row spacing, column spacing): (y, x)
    if np.abs(pixel_spacing - np.asarray(mask.spacing[1::-1])).max() > GEOMETRY_TOLERANCE:
        raise RtStructError(
            f"{folder}: {first.filename}: PixelSpacing {pixel_spacing.tolist()} differs from the mask's "
            f"(y, x) spacing {list(mask.spacing[1::-1])}; the mask is not on the series' grid"
        )
    normal = np.asarray(mask.direction, dtype=float).reshape(3, 3)[:, 2]
    corners = mask.physical_points(np.array([[k, 0, 0] for k in range(len(sources))]))  # (z, 3)
    positions = np.array([np.asarray(d.ImagePositionPatient, dtype=float) for d in sources])  # (z, 3)
    along = (positions - corners) @ normal  # (z,)
    beside = np.linalg.norm(positions - corners - along[:, None] * normal, axis=1)  # (z,)
    if beside.max() > GEOMETRY_TOLERANCE:
        k = int(beside.argmax())
        raise RtStructError(
            f"{folder}: {sources[k].filename}: ImagePositionPatient {positions[k].tolist()} lies {beside[k]:.4f} mm "
            f"within its plane from the mask's slice {k} ({corners[k].tolist()}); the mask is not on the series' grid"
        )
    return along[:, None] * normal  # (z, 3)


def _slice_contours(binary: np.ndarray) -> list[np.ndarray]:
    """The closed level-0.5 contours of a binary slice (y, x), as (x, y) voxel indices, each (n, 2), unrepeated."""
    padded = np.pad(binary.astype(np.float64), 1)  # (y + 2, x + 2)
    rows, columns = binary.shape
    generator = contour_generator(
        np.arange(-1, columns + 1), np.arange(-1, rows + 1), padded, name="serial", line_type=LineType.Separate
    )
    return [_corners(line[:-1]) for line in generator.lines(0.5)]  # padding closes every line: last point = first


def _corners(line: np.ndarray) -> np.ndarray:
    """The points of a closed line (n, 2) where it turns: the same polygon in about a third of the points."""
    before, after = line - np.roll(line, 1, axis=0), np.roll(line, -1, axis=0) - line  # (n, 2) each
    return line[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]  # exact: points are on a half-voxel grid


def _contour_item(values: list[str], number: int, source: pydicom.Dataset) -> pydicom.Dataset:
    image = pydicom.Dataset()
    image.ReferencedSOPClassUID = source.SOPClassUID
    image.ReferencedSOPInstanceUID = source.SOPInstanceUID
    contour = pydicom.Dataset()
    contour.ContourImageSequence = [image]
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = len(values) // 3
    contour.ContourNumber = number
    contour.ContourData = values
    return contour


def _roi_contours(
    mask: Image,
    label: int,
    box: tuple[slice, ...] | None,
    sources: list[pydicom.Dataset],
    offsets: np.ndarray,
    where: str,
) -> list[pydicom.Dataset]:
    """The contour items of class ``label`` within its bounding box ``box``; ``where`` names it in errors."""
    if box is None:
        return []
    items = []
    for k in range(box[0].start, box[0].stop):
        crop = mask.array[k, box[1], box[2]] == label  # (y, x) within the label's bounding box
        for line in _slice_contours(crop):
            index = np.column_stack(
                [np.full(len(line), k), line[:, 1] + box[1].start, line[:, 0] + box[2].start]
            )  # (n, 3) in (z, y, x)
            points = mask.physical_points(index) + offsets[k]  # (n, 3) in mm, on the instance's plane
            values = [f"{value:.10g}" for value in np.round(points, 3).ravel()]  # x1, y1, z1, x2, ... to 1 um
            size = sum(map(len, values)) + len(values) - 1
            if size > MAX_VALUE_BYTES:
                raise RtStructError(
                    f"{where}, slice {k}: a contour of {len(line)} points takes {size} bytes, over the "
                    f"{MAX_VALUE_BYTES} that ExplicitVRLittleEndian allows one value; the mask is too ragged to "
                    "encode (postprocess it, e.g. keep the largest component or smooth it)"
                )
            items.append(_contour_item(values, len(items) + 1, sources[k]))
    return items


def _image_reference(dataset: pydicom.Dataset) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    return item


def _frame_of_reference(datasets: list[pydicom.Dataset]) -> pydicom.Dataset:
    first = datasets[0]
    series = pydicom.Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = [_image_reference(d) for d in datasets]
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID = _STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _new_file(first: pydicom.Dataset, model_name: str) -> pydicom.FileDataset:
    sop_uid, now = generate_uid(), datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset = pydicom.FileDataset("", pydicom.Dataset(), file_meta=meta, preamble=b"\0" * 128)
    dataset.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: any patient or label name
    dataset.SOPClassUID, dataset.SOPInstanceUID = RTSTRUCT_SOP_CLASS, sop_uid
    for key in _COPIED:
        setattr(dataset, key, first.get(key))
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = date, time
    dataset.SeriesDate, dataset.SeriesTime = date, time
    dataset.Modality = "RTSTRUCT"
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SeriesNumber, dataset.InstanceNumber = 1, 1
    dataset.SeriesDescription = f"mambaseg {model_name}"[:_LO]
    dataset.OperatorsName = None
    dataset.Manufacturer = "mambaseg"
    dataset.ManufacturerModelName = model_name[:_LO]
    dataset.SoftwareVersions = mambaseg.__version__
    dataset.StructureSetLabel = "mambaseg"
    dataset.StructureSetName = model_name[:_LO]
    dataset.StructureSetDate, dataset.StructureSetTime = date, time
    return dataset


def build_rtstruct(
    mask: Image, series_folder: str | Path, series_uid: str, label_names: Mapping[int, str], model_name: str
) -> pydicom.FileDataset:
    """An RT structure set of ``mask`` with one ROI per foreground class, referencing the source series.

    Args:
        mask: the predicted label map in the geometry of the series as read by ``read_dicom_series``.
        series_folder: the folder holding the series.
        series_uid: its SeriesInstanceUID.
        label_names: class index -> name; every class above 0 gets an ROI (see the module's docstring).
        model_name: the model in the series description and structure set name (the run folder's name).

    Raises:
        RtStructError: the series lacks the UIDs to reference, or the mask is not on the series' grid; naming the
            folder or file and the value.
    """
    datasets = _series_datasets(series_folder, series_uid)
    _check_uids(datasets)
    try:
        sources = match_slices(mask, datasets)  # the instance of each mask slice
    except DicomSegError as err:
        raise RtStructError(f"{series_folder}: series {series_uid!r} does not match the mask: {err}") from err
    offsets = _plane_offsets(mask, sources, series_folder)  # (z, 3)
    labels = sorted({k for k in label_names if k > 0} | set(np.unique(mask.array[mask.array > 0]).tolist()))
    boxes = ndimage.find_objects(mask.array)  # boxes[k - 1]: class k's (z, y, x) slices, or None
    dataset = _new_file(datasets[0], model_name)
    frame_uid = datasets[0].FrameOfReferenceUID
    dataset.ReferencedFrameOfReferenceSequence = [_frame_of_reference(datasets)]
    rois, contours, observations = [], [], []
    for label in labels:
        roi = pydicom.Dataset()
        roi.ROINumber = label
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = label_names.get(label, f"label {label}")[:_LO]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = f"mambaseg {model_name}"[:_LO]
        rois.append(roi)
        contour = pydicom.Dataset()
        contour.ReferencedROINumber = label
        contour.ROIDisplayColor = list(roi_colour(label))
        box = boxes[label - 1] if label <= len(boxes) else None
        items = _roi_contours(mask, label, box, sources, offsets, f"{series_folder}: ROI {roi.ROIName!r}")
        if items:
            contour.ContourSequence = items
        contours.append(contour)
        observation = pydicom.Dataset()
        observation.ObservationNumber = label
        observation.ReferencedROINumber = label
        observation.RTROIInterpretedType = None
        observation.ROIInterpreter = None
        observations.append(observation)
    dataset.StructureSetROISequence = rois
    dataset.ROIContourSequence = contours
    dataset.RTROIObservationsSequence = observations
    return dataset


def _read(dataset_or_path: pydicom.Dataset | str | Path) -> tuple[pydicom.Dataset, str]:
    if isinstance(dataset_or_path, pydicom.Dataset):
        return dataset_or_path, str(getattr(dataset_or_path, "filename", "") or "RT structure set")
    try:
        return pydicom.dcmread(dataset_or_path), str(dataset_or_path)
    except (InvalidDicomError, OSError) as err:
        raise RtStructError(f"{dataset_or_path}: cannot read it as DICOM: {err}") from err


def _contour_points(contour: pydicom.Dataset) -> np.ndarray:
    """ContourData as (n, 3): from the raw bytes where not yet decoded, skipping pydicom's per-value DS checks."""
    values = contour.get_item("ContourData").value
    return np.array(values.split(b"\\") if isinstance(values, bytes) else values, dtype=float).reshape(-1, 3)


def _to_indices(points: np.ndarray, reference: Image) -> np.ndarray:
    """Fractional voxel indices (z, y, x) of physical points (x, y, z) on the reference grid; (n, 3)."""
    direction = np.asarray(reference.direction, dtype=float).reshape(3, 3)
    scaled = np.linalg.solve(direction, (points - np.asarray(reference.origin)).T).T  # (n, 3) in (x, y, z), mm
    return (scaled / np.asarray(reference.spacing))[:, ::-1]


def _fill(target: np.ndarray, outline: np.ndarray) -> None:
    """Flip (even-odd) the voxels of ``target`` (y, x) whose centres lie inside ``outline`` ((n, 2) as (y, x))."""
    low = np.maximum(np.ceil(outline.min(axis=0)).astype(int), 0)
    high = np.minimum(np.floor(outline.max(axis=0)).astype(int) + 1, target.shape)
    if (high <= low).any():
        return
    rows, columns = np.mgrid[low[0] : high[0], low[1] : high[1]]  # (h, w) each
    centres = np.column_stack([rows.ravel(), columns.ravel()])  # (h * w, 2)
    inside = Polygon(outline).contains_points(centres).reshape(rows.shape)
    target[low[0] : high[0], low[1] : high[1]] ^= inside


def read_rtstruct(dataset_or_path: pydicom.Dataset | str | Path, reference: Image) -> dict[str, np.ndarray]:
    """Rasterise each ROI of an RT structure set onto the reference grid: ROI name -> boolean mask (z, y, x).

    CLOSED_PLANAR contours are filled with the even-odd rule per slice (voxel centres inside an odd number of the
    ROI's contours); point and open contours enclose nothing and are skipped. An ROI without contours gives an
    empty mask.

    Args:
        dataset_or_path: the RT structure set, read or as a file.
        reference: the grid to rasterise on, e.g. the series read by ``read_dicom_series``.

    Raises:
        RtStructError: not an RT structure set, two ROIs of one name, or a contour off the reference's slices;
            naming the file and the value.
    """
    dataset, name = _read(dataset_or_path)
    if str(dataset.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS:
        raise RtStructError(f"{name}: SOPClassUID {dataset.get('SOPClassUID', '')!r} is not an RT structure set")
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in dataset.get("StructureSetROISequence", [])}
    if len(set(names.values())) != len(names):
        raise RtStructError(f"{name}: several ROIs share a name: {sorted(names.values())}")
    masks = {roi: np.zeros(reference.array.shape, dtype=bool) for roi in names.values()}
    for roi_contour in dataset.get("ROIContourSequence", []):
        number = int(roi_contour.ReferencedROINumber)
        if number not in names:
            raise RtStructError(
                f"{name}: ROIContourSequence refers to ROI {number}, which StructureSetROISequence lacks"
            )
        for contour in roi_contour.get("ContourSequence", []):
            if contour.ContourGeometricType != "CLOSED_PLANAR":
                continue
            points = _contour_points(contour)  # (n, 3) in mm
            indices = _to_indices(points, reference)  # (n, 3) in (z, y, x)
            k = int(np.rint(indices[:, 0].mean()))
            if np.abs(indices[:, 0] - k).max() > _OFF_PLANE or not 0 <= k < reference.array.shape[0]:
                raise RtStructError(
                    f"{name}: ROI {names[number]!r}: a contour at slice index {indices[:, 0].min():.2f} to "
                    f"{indices[:, 0].max():.2f} does not lie on a slice of the reference ({reference.source or 'grid'}"
                    f" of {reference.array.shape[0]} slices)"
                )
            _fill(masks[names[number]][k], indices[:, 1:])
    return masks
