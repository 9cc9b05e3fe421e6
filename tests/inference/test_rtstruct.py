"""RT structure sets of a mask: one ROI per class, even-odd contours on the source slices, read back to the mask."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath
from pydicom.uid import CTImageStorage, generate_uid

from mambaseg.inference import rtstruct
from mambaseg.inference.rtstruct import (
    RTSTRUCT_SOP_CLASS,
    RtStructError,
    build_rtstruct,
    check_rtstruct_source,
    read_rtstruct,
)
from mambaseg.io import Image, from_sitk, read_dicom_series, read_image, to_sitk
from tests.io.cases import DIRECTIONS_3D, write_dicom_series
from tests.real_data import real_data, skip_reason

LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "kidney"}
UID = "1.2.826.0.1.3680043.8.498.77"
DICOM = real_data("dicom")


def synthetic_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """Liver: a ring with a hole on slices 1-3, an island in the hole on slice 1, touching the border on slice 2;
    spleen: two components on slice 2, one at the border on slice 3; kidney: absent."""
    mask = np.zeros(shape, np.uint8)  # (z, y, x)
    mask[1:4, 3:14, 3:12] = 1
    mask[1:4, 5:11, 5:10] = 0
    mask[1, 7:9, 7:8] = 1
    mask[2, 0:4, 0:6] = 1
    mask[2, 15:18, 14:17], mask[2, 15:19, 19:23] = 2, 2
    mask[3, 16:20, 20:24] = 2
    return mask


def write_series(folder: Path, direction: str = "identity") -> Image:
    values = np.arange(5 * 20 * 24, dtype=np.int16).reshape(5, 20, 24)
    image = Image(values, (0.8, 0.9, 2.0), (10.0, -5.0, 3.0), tuple(DIRECTIONS_3D[direction].ravel()))
    write_dicom_series(image, folder, UID)
    return read_dicom_series(folder)


def sop_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in folder.iterdir()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def pixel_masks(structure_set: pydicom.Dataset, folder: Path, roi: int) -> dict[str, np.ndarray]:
    """An ROI filled even-odd on each instance's pixels, in the instance's own (row, column) grid, from its DICOM
    header alone (ImagePositionPatient, ImageOrientationPatient, PixelSpacing): independent of ``mambaseg.io``."""
    headers = {}
    for path in folder.iterdir():
        header = pydicom.dcmread(path, stop_before_pixels=True)
        headers[str(header.SOPInstanceUID)] = header
    filled = {uid: np.zeros((int(h.Rows), int(h.Columns)), bool) for uid, h in headers.items()}
    (item,) = [r for r in structure_set.ROIContourSequence if int(r.ReferencedROINumber) == roi]
    for contour in item.ContourSequence:
        uid = str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)
        header = headers[uid]
        orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
        offsets = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3) - np.asarray(header.ImagePositionPatient)
        row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
        outline = np.column_stack([offsets @ orientation[3:] / row_spacing, offsets @ orientation[:3] / column_spacing])
        centres = np.argwhere(np.ones(filled[uid].shape, bool))  # (rows * columns, 2) as (row, column)
        filled[uid] ^= MplPath(outline).contains_points(centres).reshape(filled[uid].shape)
    return filled


def slice_of_instance(image: Image, folder: Path) -> dict[str, int]:
    """SOP Instance UID -> the image's slice at its ImagePositionPatient."""
    corners = image.physical_points(np.array([[k, 0, 0] for k in range(image.array.shape[0])]))  # (z, 3)
    found = {}
    for path in folder.iterdir():
        header = pydicom.dcmread(path, stop_before_pixels=True)
        distances = np.linalg.norm(corners - np.asarray(header.ImagePositionPatient, dtype=float), axis=1)  # (z,)
        found[str(header.SOPInstanceUID)] = int(distances.argmin())
    return found


def assert_references(structure_set: pydicom.Dataset, folder: Path) -> None:
    """Every instance of the series is listed, every contour references one, and lies on its plane."""
    instances = {}
    for path in folder.iterdir():
        header = pydicom.dcmread(path, stop_before_pixels=True)
        instances[str(header.SOPInstanceUID)] = header
    study = structure_set.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    listed = [str(item.ReferencedSOPInstanceUID) for item in study.RTReferencedSeriesSequence[0].ContourImageSequence]
    assert sorted(listed) == sorted(instances)
    for roi in structure_set.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            header = instances[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
            normal = np.cross(orientation[:3], orientation[3:])
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)  # (n, 3)
            assert len(points) == contour.NumberOfContourPoints
            np.testing.assert_allclose((points - np.asarray(header.ImagePositionPatient, float)) @ normal, 0, atol=2e-3)


@pytest.mark.parametrize("direction", ["identity", "flipped", "oblique"])
def test_holes_and_components_survive_the_round_trip(tmp_path, direction):
    folder = tmp_path / "series"
    image = write_series(folder, direction)
    mask = synthetic_mask(image.array.shape)
    build_rtstruct(image.with_array(mask), folder, UID, LABELS, "3d_fullres__unet").save_as(tmp_path / "rt.dcm")
    written = pydicom.dcmread(tmp_path / "rt.dcm")
    assert written.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (written.Modality, written.SOPClassUID) == ("RTSTRUCT", RTSTRUCT_SOP_CLASS)
    assert written.SeriesDescription == "mambaseg 3d_fullres__unet"
    assert written.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert written.SeriesInstanceUID != UID
    assert {int(r.ROINumber): r.ROIName for r in written.StructureSetROISequence} == {
        1: "liver",
        2: "spleen",
        3: "kidney",
    }
    colours = [tuple(r.ROIDisplayColor) for r in written.ROIContourSequence]
    assert len(set(colours)) == 3
    contours = {int(r.ReferencedROINumber): r.get("ContourSequence", []) for r in written.ROIContourSequence}
    assert len(contours[3]) == 0  # a class of the model absent from the mask: its ROI, without contours
    assert len(contours[1]) == 3 + 2 + 2 and len(contours[2]) == 2 + 1  # outer, hole, island; one per component
    assert_references(written, folder)
    slices = slice_of_instance(image, folder)
    for label in (1, 2):
        for uid, filled in pixel_masks(written, folder, label).items():
            np.testing.assert_array_equal(filled, mask[slices[uid]] == label)
    masks = read_rtstruct(tmp_path / "rt.dcm", image)
    assert sorted(masks) == ["kidney", "liver", "spleen"]
    for label, name in [(1, "liver"), (2, "spleen")]:
        assert dice(masks[name], mask == label) >= 0.95
        np.testing.assert_array_equal(masks[name], mask == label)  # exact: contours run half a voxel from centres
    assert not masks["kidney"].any()


def test_a_mask_off_the_series_grid_is_refused_naming_the_folder(tmp_path):
    folder = tmp_path / "series"
    image = write_series(folder)
    mask = synthetic_mask(image.array.shape)
    shifted = Image(mask, image.spacing, (image.origin[0] + 0.4, *image.origin[1:]), image.direction)
    with pytest.raises(RtStructError, match=re.escape(f"{folder}: ") + ".*lies 0.4000 mm within its plane"):
        build_rtstruct(shifted, folder, UID, LABELS, "m")
    finer = Image(mask, (0.7, *image.spacing[1:]), image.origin, image.direction)
    with pytest.raises(RtStructError, match=re.escape(f"{folder}: ") + r".*PixelSpacing \[0.9, 0.8\] differs"):
        build_rtstruct(finer, folder, UID, LABELS, "m")
    lower = Image(mask, image.spacing, (*image.origin[:2], image.origin[2] - 6.0), image.direction)
    with pytest.raises(RtStructError, match=re.escape(f"{folder}: series {UID!r} does not match the mask: ")):
        build_rtstruct(lower, folder, UID, LABELS, "m")
    with pytest.raises(RtStructError, match=re.escape(f"{folder}: no DICOM instance of series '1.2.3'")):
        build_rtstruct(image.with_array(mask), folder, "1.2.3", LABELS, "m")


def test_a_contour_too_long_for_explicit_vr_is_refused_naming_the_roi_and_slice(tmp_path, monkeypatch):
    folder = tmp_path / "series"
    image = write_series(folder)
    monkeypatch.setattr(rtstruct, "MAX_VALUE_BYTES", 150)  # the liver's outer contour on slice 2 takes 179
    message = re.escape(f"{folder}: ROI 'liver', slice 2: a contour of 16 points takes 179 bytes, over the 150")
    with pytest.raises(RtStructError, match=message):
        build_rtstruct(image.with_array(synthetic_mask(image.array.shape)), folder, UID, LABELS, "m")


def test_a_series_without_uids_is_refused_naming_the_file(tmp_path):
    folder = tmp_path / "series"
    image = write_series(folder)
    path = sorted(folder.iterdir())[2]
    header = pydicom.dcmread(path)
    header.StudyInstanceUID = ""
    header.save_as(path)
    with pytest.raises(RtStructError, match=re.escape(f"{path}: empty or missing StudyInstanceUID")):
        check_rtstruct_source(folder, UID)
    with pytest.raises(RtStructError, match=re.escape(f"{path}: empty or missing StudyInstanceUID")):
        build_rtstruct(image.with_array(synthetic_mask(image.array.shape)), folder, UID, LABELS, "m")


def test_reading_names_the_file(tmp_path):
    folder = tmp_path / "series"
    image = write_series(folder)
    build_rtstruct(image.with_array(synthetic_mask(image.array.shape)), folder, UID, LABELS, "m").save_as(
        tmp_path / "rt.dcm"
    )
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    with pytest.raises(RtStructError, match=re.escape(f"{text}: cannot read it as DICOM")):
        read_rtstruct(text, image)
    instance = sorted(folder.iterdir())[0]
    with pytest.raises(RtStructError, match=re.escape(f"{instance}: SOPClassUID") + ".* is not an RT structure set"):
        read_rtstruct(instance, image)
    between = Image(image.array, image.spacing, (*image.origin[:2], image.origin[2] + 1.0), image.direction)
    with pytest.raises(RtStructError, match=re.escape(f"{tmp_path / 'rt.dcm'}: ROI 'liver': a contour at slice")):
        read_rtstruct(tmp_path / "rt.dcm", between)


def copy_with_uids(source: Path, folder: Path) -> None:
    """The TotalSegmentator CT has its UIDs blanked: give the copy a study, a series and an instance UID per file."""
    folder.mkdir()
    study, series = generate_uid(entropy_srcs=["study"]), generate_uid(entropy_srcs=["series"])
    for path in sorted(source.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = generate_uid(entropy_srcs=[path.name])
        dataset.SOPClassUID = CTImageStorage
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(folder / path.name)


@pytest.mark.slow
@pytest.mark.skipif(DICOM is None, reason=skip_reason("dicom"))
def test_the_totalsegmentator_mask_round_trips_on_its_ct(tmp_path):
    source = DICOM / "ct_totalsegmentator" / "example_ct_dicom"
    with pytest.raises(RtStructError, match="empty or missing StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID"):
        check_rtstruct_source(source, "")
    folder = tmp_path / "ct"
    copy_with_uids(source, folder)
    ct = read_dicom_series(folder)
    seg = read_image(DICOM / "ct_totalsegmentator" / "example_seg_dicom.nii.gz")  # its y axis runs the other way
    aligned = sitk.Resample(to_sitk(seg), to_sitk(ct), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    mask = from_sitk(aligned)[0].array  # (z, y, x) on the CT's grid
    labels = np.unique(seg.array[seg.array > 0])
    assert len(labels) == 31
    np.testing.assert_array_equal(np.bincount(mask.ravel()), np.bincount(seg.array.ravel()))  # a flip: no voxel lost
    names = {int(k): f"structure {k}" for k in labels}
    built = build_rtstruct(ct.with_array(mask), folder, str(ct.metadata["SeriesInstanceUID"]), names, "m")
    built.save_as(tmp_path / "rt.dcm")
    written = pydicom.dcmread(tmp_path / "rt.dcm")
    assert_references(written, folder)
    assert len({tuple(r.ROIDisplayColor) for r in written.ROIContourSequence}) == 31
    masks = read_rtstruct(tmp_path / "rt.dcm", ct)
    assert sorted(masks) == sorted(names.values())
    for k, name in names.items():  # every structure, the smallest (123 voxels) too: contours are exact
        assert dice(masks[name], mask == k) >= 0.95, name
