"""DICOM folders as scanners and PACS exports leave them: several series, a missing slice, shuffled file names."""

from __future__ import annotations

import numpy as np
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
