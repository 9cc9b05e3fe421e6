"""DICOM folders as scanners and PACS exports leave them: several series, a missing slice, shuffled file names,
stray files, localizers and corrupt slices."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest

from mambaseg.inference.inputs import discover_cases, load_case
from mambaseg.io import ImageReadError, read_dicom_series, read_image
from tests.data.synthetic import file_states
from tests.io.cases import DIRECTIONS_3D, make_image, write_dicom_series

UID_A = "1.2.826.0.1.3680043.8.498.301"
UID_B = "1.2.826.0.1.3680043.8.498.302"


def test_two_series_in_one_folder_are_named_and_predicted_as_two_cases(tmp_path):
    first, second = make_image(DIRECTIONS_3D["identity"], seed=1), make_image(DIRECTIONS_3D["oblique"], seed=2)
    write_dicom_series(first, tmp_path / "export", UID_A, prefix="a")
    write_dicom_series(second, tmp_path / "export", UID_B, prefix="b")
    before = file_states(tmp_path)
    with pytest.raises(ValueError, match="2 DICOM series") as info:
        read_image(tmp_path / "export")
    assert str(tmp_path / "export") in str(info.value) and UID_A in str(info.value) and UID_B in str(info.value)
    cases = discover_cases(tmp_path / "export")
    assert [(case.name, case.series_uid) for case in cases] == [(UID_A, UID_A), (UID_B, UID_B)]
    np.testing.assert_array_equal(load_case(cases[0])[0].array, first.array)
    np.testing.assert_array_equal(load_case(cases[1])[0].array, second.array)
    assert [case.name for case in discover_cases(tmp_path / "export", series_uid=UID_B)] == ["export"]
    assert file_states(tmp_path) == before


def test_missing_slice_is_an_error_naming_the_folder_and_the_gap(tmp_path):
    files = write_dicom_series(make_image(DIRECTIONS_3D["oblique"]), tmp_path / "series", UID_A)
    files[3].unlink()
    before = file_states(tmp_path)
    with pytest.raises(ImageReadError, match="slice missing") as info:
        read_dicom_series(tmp_path / "series")
    message = str(info.value)
    assert str(tmp_path / "series") in message and f"after {files[2].name}" in message and "gap of 5.000 mm" in message
    with pytest.raises(ImageReadError, match="slice missing"):
        load_case(discover_cases(tmp_path / "series")[0])  # what `predict` reads
    assert file_states(tmp_path) == before


@pytest.mark.parametrize("direction", ["identity", "permuted", "oblique"])
def test_unsorted_file_names_read_in_slice_order(tmp_path, direction):
    image = make_image(DIRECTIONS_3D[direction], seed=4)
    files = write_dicom_series(image, tmp_path / "series", UID_A, shuffle_seed=7)
    assert sorted(f.name for f in files) != [f.name for f in files]
    before = file_states(tmp_path)
    back = read_image(tmp_path / "series")
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-6)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-6)
    assert file_states(tmp_path) == before


def _write_report(path, series_uid: str) -> None:
    """A DICOM file that is no image: a Basic Text structured report, without pixel data."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = f"{series_uid}.1"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.SeriesInstanceUID, dataset.Modality = series_uid, "SR"
    dataset.save_as(path, enforce_file_format=True)


def test_other_files_in_a_series_folder_are_ignored_with_a_line_naming_them(tmp_path, caplog):
    image = make_image(DIRECTIONS_3D["oblique"], seed=5)
    folder = tmp_path / "series"
    write_dicom_series(image, folder, UID_A)
    (folder / "preview.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "README").write_text("exported by a PACS")
    _write_report(folder / "report.dcm", UID_B)
    before = file_states(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mambaseg.io.dicom"):
        cases = discover_cases(folder)
        assert [(case.name, case.series_uid) for case in cases] == [("series", UID_A)]
        np.testing.assert_array_equal(load_case(cases[0])[0].array, image.array)
        np.testing.assert_array_equal(read_image(folder).array, image.array)
    logged = caplog.text
    assert f"{folder / 'preview.png'}: ignored: not DICOM" in logged
    assert f"{folder / 'README'}: ignored: not DICOM" in logged
    assert f"{folder / 'report.dcm'}: ignored: DICOM but not an image: a structured report" in logged
    assert file_states(tmp_path) == before


@pytest.mark.parametrize("by", ["image_type", "slice_count"])
def test_a_localizer_never_renames_or_replaces_the_main_series(tmp_path, caplog, by):
    main = make_image(DIRECTIONS_3D["identity"], seed=1)
    scout = make_image(DIRECTIONS_3D["permuted"], seed=2)
    folder = tmp_path / "ct"
    write_dicom_series(main, folder, UID_A, prefix="z")
    tags = {"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"} if by == "image_type" else {}
    scout_files = write_dicom_series(scout, folder, UID_B, prefix="a", extra_tags=tags)
    if by == "slice_count":
        for file in scout_files[2:]:
            file.unlink()
    with caplog.at_level(logging.WARNING):
        cases = discover_cases(folder)
        assert [(case.name, case.series_uid) for case in cases] == [("ct", UID_A)]
        np.testing.assert_array_equal(load_case(cases[0])[0].array, main.array)
        np.testing.assert_array_equal(read_image(folder).array, main.array)
    assert f"localizer series {UID_B}" in caplog.text and str(folder) in caplog.text
    picked = discover_cases(folder, series_uid=UID_B)  # still reachable on request
    assert [(case.name, case.series_uid) for case in picked] == [("ct", UID_B)]


def test_localizer_images_inside_the_main_series_are_set_aside(tmp_path, caplog):
    main = make_image(DIRECTIONS_3D["identity"], seed=1)
    folder = tmp_path / "mr"
    write_dicom_series(main, folder, UID_A, prefix="b")
    scout = write_dicom_series(
        make_image(DIRECTIONS_3D["permuted"], seed=2),
        folder,
        UID_A,
        prefix="a",
        extra_tags={"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER", "0008|0018": "1.2.3.999"},
    )
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(read_image(folder).array, main.array)
    assert f"{scout[0]}: ignored: a localizer" in caplog.text


def _cut_pixels(file):
    file.write_bytes(file.read_bytes()[:-20])


def _cut_header(file):
    file.write_bytes(file.read_bytes()[:400])


def _garbage(file):
    file.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 300)


def _no_magic(file):
    file.write_bytes(b"this is no DICOM at all, but it is named like a slice")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_cut_pixels, "the pixel data is cut short: 64 of 84 bytes"),
        (_cut_header, "no pixel data (the file ends at 400 bytes)"),
        (_garbage, "no SOP class"),
        (_no_magic, "no SOP class"),
    ],
)
def test_a_corrupt_slice_is_named_as_corrupt_not_as_a_missing_slice(tmp_path, damage, reason):
    folder = tmp_path / "series"
    files = write_dicom_series(make_image(DIRECTIONS_3D["oblique"]), folder, UID_A)
    damage(files[2])
    before = file_states(tmp_path)
    with pytest.raises(ImageReadError) as info:
        load_case(discover_cases(folder)[0])
    message = str(info.value)
    assert "corrupt DICOM file" in message and f"{files[2]}: {reason}" in message
    assert "slice missing" not in message
    assert file_states(tmp_path) == before
