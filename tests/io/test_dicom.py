"""DICOM series written here with SimpleITK: order, geometry, several series, missing and duplicate slices."""

import numpy as np
import pytest

from mambaseg.io import Image, ImageReadError, list_dicom_series, read_dicom_series, read_image
from tests.io.cases import DIRECTIONS_3D, make_image, write_dicom_series
from tests.io.test_nifti import assert_same

UID_A = "1.2.826.0.1.3680043.8.498.101"
UID_B = "1.2.826.0.1.3680043.8.498.202"
RIGHT_HANDED = ["identity", "flipped_twice", "permuted", "oblique"]


@pytest.mark.parametrize("name", RIGHT_HANDED)
def test_shuffled_files_read_in_slice_order(tmp_path, name):
    image = make_image(DIRECTIONS_3D[name])
    files = write_dicom_series(image, tmp_path, UID_A)
    assert sorted(files) != files  # the names do not follow the slices
    back = read_image(tmp_path)
    assert_same(back, image, tol=1e-6)
    assert back.metadata["SeriesInstanceUID"] == UID_A
    assert back.metadata["Modality"] == "MR"
    assert back.metadata["StudyInstanceUID"] == "1.2.826.0.1.3680043.8.498.1"
    assert back.source == str(tmp_path)


@pytest.mark.parametrize("name", ["flipped", "oblique_reflected"])
def test_left_handed_volume_comes_back_right_handed_in_place(tmp_path, name):
    image = make_image(DIRECTIONS_3D[name])
    write_dicom_series(image, tmp_path, UID_A)
    back = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(back.array, image.array[::-1])
    corners = np.array([[0, 0, 0], [4, 6, 5], [4, 0, 5]])
    flipped_corners = corners * [-1, 1, 1] + [4, 0, 0]
    np.testing.assert_allclose(back.physical_points(flipped_corners), image.physical_points(corners), atol=1e-6)
    direction = np.asarray(back.direction).reshape(3, 3)
    assert np.linalg.det(direction) == pytest.approx(1.0)


def test_two_series_in_one_folder(tmp_path):
    first = make_image(DIRECTIONS_3D["identity"], seed=1)
    second = make_image(DIRECTIONS_3D["oblique"], seed=2)
    write_dicom_series(first, tmp_path, UID_A, prefix="a")
    write_dicom_series(second, tmp_path, UID_B, shuffle_seed=3, prefix="b")
    listed = sorted(list_dicom_series(tmp_path))
    assert [(s.uid, s.n_files) for s in listed] == [(UID_A, 5), (UID_B, 5)]
    assert listed[0].description == "synthetic .101"
    with pytest.raises(ValueError, match="2 DICOM series") as info:
        read_image(tmp_path)
    assert UID_A in str(info.value) and UID_B in str(info.value) and "series_uid" in str(info.value)
    assert_same(read_dicom_series(tmp_path, series_uid=UID_B), second, tol=1e-6)
    assert_same(read_dicom_series(tmp_path, series_uid=UID_A), first, tol=1e-6)
    with pytest.raises(ValueError, match="1.2.3"):
        read_dicom_series(tmp_path, series_uid="1.2.3")


def test_missing_middle_slice(tmp_path):
    image = make_image(DIRECTIONS_3D["oblique"])
    files = write_dicom_series(image, tmp_path, UID_A)
    files[2].unlink()
    with pytest.raises(ImageReadError, match="slice missing") as info:
        read_dicom_series(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "5.000 mm" in message and files[1].name in message


def test_duplicate_position(tmp_path):
    image = make_image(DIRECTIONS_3D["identity"])
    write_dicom_series(image, tmp_path, UID_A)
    shifted = Image(
        image.array, image.spacing, (image.origin[0], image.origin[1], image.origin[2] + 2.5), image.direction
    )
    write_dicom_series(shifted, tmp_path, UID_A, prefix="echo2_")
    with pytest.raises(ImageReadError, match="share the slice position"):
        read_dicom_series(tmp_path)


def _replace_top_slice(folder, image: Image, files, shift_mm: float, array=None, spacing=None) -> None:
    """The last slice of the series written again ``shift_mm`` further along z, with another array or spacing."""
    files[-1].unlink()
    origin = (image.origin[0], image.origin[1], image.origin[2] + (len(files) - 1) * image.spacing[2] + shift_mm)
    top = image.array[-1:] if array is None else array
    write_dicom_series(Image(top, spacing or image.spacing, origin, image.direction), folder, UID_A, prefix="top")


def test_irregular_spacing_is_refused_naming_the_slice(tmp_path):
    image = make_image(DIRECTIONS_3D["identity"])
    files = write_dicom_series(image, tmp_path, UID_A)
    _replace_top_slice(tmp_path, image, files, 0.5)
    with pytest.raises(ImageReadError, match=r"top000.dcm: 3.0000 mm from the slice before it .* spacing is 2.5000 mm"):
        read_dicom_series(tmp_path)


def test_a_slice_of_another_size_or_pixel_spacing_is_refused_naming_it(tmp_path):
    image = make_image(DIRECTIONS_3D["identity"])
    files = write_dicom_series(image, tmp_path / "rows", UID_A)
    _replace_top_slice(tmp_path / "rows", image, files, 0.0, array=image.array[-1:, :-1])
    with pytest.raises(ImageReadError, match=r"top000.dcm: \d+ rows x \d+ columns, the series' slice .* has") as info:
        read_dicom_series(tmp_path / "rows")
    assert "every slice of a series must have the same size" in str(info.value)
    files = write_dicom_series(image, tmp_path / "spacing", UID_A)
    wider = (image.spacing[0] * 1.5, image.spacing[1], image.spacing[2])
    _replace_top_slice(tmp_path / "spacing", image, files, 0.0, spacing=wider)
    with pytest.raises(ImageReadError, match=r"top000.dcm: pixel spacing .* the same in-plane spacing"):
        read_dicom_series(tmp_path / "spacing")


@pytest.mark.parametrize(("tilt", "refused"), [(0.3, True), (0.01, True), (1e-5, False)])
def test_slices_stacked_off_their_normal_are_refused_naming_the_slice(tmp_path, tilt, refused):
    """A gantry tilt: each slice's position drifts within the slice plane; ITK would stack them along the normal."""
    direction = np.eye(3)
    direction[:, 2] = (0.0, np.sin(tilt), np.cos(tilt))
    image = make_image(direction)
    files = write_dicom_series(image, tmp_path, UID_A)
    if not refused:  # a drift of 1e-5 mm per mm is rounding: read as stacked along the normal
        assert read_dicom_series(tmp_path).array.shape == image.array.shape
        return
    with pytest.raises(ImageReadError) as info:
        read_dicom_series(tmp_path)
    drift = (len(files) - 1) * image.spacing[2] * np.sin(tilt)
    assert str(info.value).startswith(f"{files[-1]}: its ImagePositionPatient lies {drift:.3f} mm beside the normal")
    assert f"stacked {np.degrees(tilt):.1f} degrees off their normal (a gantry tilt?)" in str(info.value)


def test_an_enhanced_multi_frame_file_is_refused_clearly(tmp_path):
    import pydicom

    image = make_image(DIRECTIONS_3D["identity"])
    files = write_dicom_series(image, tmp_path, UID_A)
    for file in files[1:]:
        file.unlink()
    dataset = pydicom.dcmread(files[0])
    dataset.NumberOfFrames = 3
    dataset.PixelData = dataset.PixelData * 3
    dataset.save_as(files[0])
    with pytest.raises(ImageReadError, match=r"an enhanced multi-frame DICOM file \(3 frames in one file\)"):
        read_dicom_series(tmp_path)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    write_dicom_series(make_image(DIRECTIONS_3D["identity"]), tmp_path / "series1", UID_A)
    assert list_dicom_series(tmp_path) == []
    with pytest.raises(ImageReadError, match=r"no DICOM image files.*series1"):
        read_image(tmp_path)
    with pytest.raises(NotADirectoryError, match="notes.txt"):
        read_dicom_series(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="absent"):
        list_dicom_series(tmp_path / "absent")


def test_single_file_series(tmp_path):
    image = make_image(DIRECTIONS_3D["oblique"])
    single = Image(image.array[:1], image.spacing, image.origin, image.direction)
    write_dicom_series(single, tmp_path, UID_A)
    back = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(back.array, single.array)
    np.testing.assert_allclose(back.origin, single.origin, atol=1e-6)
