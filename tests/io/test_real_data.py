"""Real DICOM and label files from ``$MAMBASEG_REAL_DATA/dicom``; skipped where that folder is absent."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mambaseg.io import Image, from_sitk, list_dicom_series, read_dicom_series, read_image
from tests.real_data import real_data, skip_reason

DATA = real_data("dicom")

pytestmark = pytest.mark.skipif(DATA is None, reason=skip_reason("dicom"))

SERIES = [
    "mr_brain_study3/11_HCropVolume",
    "mr_brain_study3/37830-T2reg-78532",
    "mr_hippocampus_crops/13_HCropVolume",
    "mr_hippocampus_crops/14_HCropVolume",
    "ct_totalsegmentator/example_ct_dicom",
    "ct_liver_seg/ct-3slice",
]


def simpleitk_series(folder: Path) -> Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return from_sitk(reader.Execute())[0]


def slice_height(path: Path) -> float:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return float(reader.GetMetaData("0020|0032").split("\\")[2])


def in_grid_of(label: Image, reference: Image) -> np.ndarray:
    """The label's voxels in the reference's voxel order, for grids that differ only by axis flips."""
    n = label.ndim
    label_axes = np.asarray(label.direction).reshape(n, n).T[::-1]  # row a: physical direction of array axis a
    reference_axes = np.asarray(reference.direction).reshape(n, n).T[::-1]
    flips = tuple(a for a in range(n) if np.dot(label_axes[a], reference_axes[a]) < 0)
    return np.flip(label.array, axis=flips)


def corners(image: Image) -> np.ndarray:
    """The physical positions of the eight corner voxels, sorted so that orderings of the axes compare equal."""
    last = np.array(image.array.shape) - 1
    grid = np.array([[z, y, x] for z in (0, last[0]) for y in (0, last[1]) for x in (0, last[2])])
    return np.array(sorted(map(tuple, np.round(image.physical_points(grid), 4))))


@pytest.mark.parametrize("relative", SERIES)
def test_series_matches_simpleitk(relative):
    folder = DATA / relative
    assert len(list_dicom_series(folder)) == 1
    ours, theirs = read_image(folder), simpleitk_series(folder)
    assert ours.same_geometry(theirs, tol=1e-4)
    np.testing.assert_array_equal(ours.array, theirs.array)


def test_mr_t2_geometry():
    folder = DATA / "mr_brain_study3/37830-T2reg-78532"
    heights = [slice_height(path) for path in sorted(folder.iterdir())]
    assert heights != sorted(heights) and heights != sorted(heights, reverse=True)  # names are not in slice order
    image = read_dicom_series(folder)
    assert image.array.shape == (22, 320, 280)
    np.testing.assert_allclose(image.spacing, (0.6875, 0.6875, 6.5), atol=1e-5)
    direction = np.asarray(image.direction).reshape(3, 3)
    assert 0.18 < abs(direction[1, 2]) < 0.19  # tilted about the x axis by about 10.8 degrees
    assert image.metadata["Modality"] == "MR" and image.metadata["SeriesDescription"] == "T2_reg"


def test_study_folder_points_at_its_series():
    with pytest.raises(ValueError, match=r"11_HCropVolume.*37830-T2reg-78532"):
        read_image(DATA / "mr_brain_study3")


def test_jpeg2000_ct_decodes():
    image = read_image(DATA / "ct_totalsegmentator/example_ct_dicom")
    assert image.array.shape == (20, 512, 512)
    np.testing.assert_allclose(image.spacing, (0.9765625, 0.9765625, 2.0))
    assert image.metadata["Modality"] == "CT"
    assert image.array.min() >= -1024 and image.array.max() > 300  # Hounsfield units: air to bone


def test_totalsegmentator_label_lines_up_with_ct():
    ct = read_image(DATA / "ct_totalsegmentator/example_ct_dicom")
    seg = read_image(DATA / "ct_totalsegmentator/example_seg_dicom.nii.gz")
    assert seg.array.shape == ct.array.shape
    assert not np.allclose(seg.direction, ct.direction)  # the y axis runs the other way
    np.testing.assert_allclose(corners(seg), corners(ct), atol=1e-3)
    labelled = in_grid_of(seg, ct) > 0
    assert (ct.array[labelled] < -500).mean() < 0.05  # aligned: labels lie on tissue, not air
    assert (ct.array[seg.array > 0] < -500).mean() > 0.2  # ignoring the flip puts many on air
    assert seg.same_geometry(from_sitk(sitk.ReadImage(str(DATA / "ct_totalsegmentator/example_seg_dicom.nii.gz")))[0])


def test_liver_label_lines_up_with_ct():
    ct = read_image(DATA / "ct_liver_seg/ct-3slice")
    seg = read_image(DATA / "ct_liver_seg/liver_seg.nrrd")
    assert seg.array.shape == ct.array.shape
    np.testing.assert_allclose(corners(seg), corners(ct), atol=1e-3)
    assert seg.same_geometry(ct, tol=1e-4)
    assert 0 < ct.array[seg.array > 0].mean() < 100  # liver is soft tissue in Hounsfield units
