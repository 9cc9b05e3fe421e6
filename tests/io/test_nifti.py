"""NIfTI: round trips, agreement with SimpleITK's reader, qform/sform choice, 4-D channels."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mambaseg.io import Image, from_sitk, nifti_affine, read_image, read_image_channels, to_sitk, write_image
from tests.io.cases import DIRECTIONS_2D, DIRECTIONS_3D, make_image

TOL = 1e-5  # NIfTI-1 stores the transform in float32


def assert_same(actual: Image, expected: Image, tol: float = TOL) -> None:
    assert actual.array.shape == expected.array.shape
    np.testing.assert_array_equal(actual.array, expected.array)
    np.testing.assert_allclose(actual.spacing, expected.spacing, atol=tol)
    np.testing.assert_allclose(actual.origin, expected.origin, atol=tol)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=tol)


@pytest.mark.parametrize("extension", [".nii", ".nii.gz"])
@pytest.mark.parametrize("name", sorted(DIRECTIONS_3D))
def test_round_trip_3d(tmp_path, extension, name):
    image = make_image(DIRECTIONS_3D[name])
    path = tmp_path / f"case{extension}"
    write_image(image, path)
    back = read_image(path)
    assert_same(back, image)
    assert back.array.dtype == image.array.dtype
    assert back.source == str(path)


@pytest.mark.parametrize("name", sorted(DIRECTIONS_2D))
def test_round_trip_2d(tmp_path, name):
    image = make_image(DIRECTIONS_2D[name], dtype=np.float32)
    write_image(image, tmp_path / "slice.nii.gz")
    assert_same(read_image(tmp_path / "slice.nii.gz"), image)


def test_header_codes_and_units(tmp_path):
    write_image(make_image(DIRECTIONS_3D["oblique"]), tmp_path / "a.nii.gz")
    header = nib.load(tmp_path / "a.nii.gz").header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-5)
    assert header.get_xyzt_units()[0] == "mm"


@pytest.mark.parametrize("name", sorted(DIRECTIONS_3D))
def test_simpleitk_reads_what_we_write(tmp_path, name):
    image = make_image(DIRECTIONS_3D[name])
    write_image(image, tmp_path / "ours.nii.gz")
    assert_same(from_sitk(sitk.ReadImage(str(tmp_path / "ours.nii.gz")))[0], image)


@pytest.mark.parametrize("name", sorted(DIRECTIONS_3D))
def test_we_read_what_simpleitk_writes(tmp_path, name):
    image = make_image(DIRECTIONS_3D[name], dtype=np.float32)
    sitk.WriteImage(to_sitk(image), str(tmp_path / "theirs.nii.gz"))
    ours = read_image(tmp_path / "theirs.nii.gz")
    assert_same(ours, from_sitk(sitk.ReadImage(str(tmp_path / "theirs.nii.gz")))[0], tol=1e-6)
    assert_same(ours, image)


def _header_case(tmp_path, q_code, s_code, q_shift=0.0, pixdim=None):
    """A nibabel-made file whose qform is shifted by ``q_shift`` mm from its sform."""
    affine = nifti_affine(make_image(DIRECTIONS_3D["oblique"]))
    qform = affine.copy()
    qform[:3, 3] += q_shift
    nii = nib.Nifti1Image(np.arange(210, dtype=np.int16).reshape(6, 7, 5), affine)
    nii.set_sform(affine, code=s_code)
    nii.set_qform(qform, code=q_code)
    if pixdim is not None:
        nii.header["pixdim"][1:4] = pixdim
    path = tmp_path / f"q{q_code}s{s_code}.nii"
    nib.save(nii, path)
    return path


@pytest.mark.parametrize(
    ("q_code", "s_code", "q_shift", "pixdim"),
    [
        (1, 1, 0.0, None),
        (1, 2, 5.0, None),  # sform "aligned", qform "scanner" and different: ITK takes the qform
        (2, 1, 5.0, None),  # sform "scanner": ITK takes the sform
        (0, 2, 0.0, None),
        (2, 0, 0.0, None),
        (2, 4, 0.0, None),
        (0, 0, 0.0, None),  # neither coded: origin 0 and identity direction
        (1, 1, 0.0, (1.0, 1.0, 1.0)),  # pixdim disagrees with the affine: ITK's spacing is pixdim
    ],
)
def test_transform_choice_matches_simpleitk(tmp_path, q_code, s_code, q_shift, pixdim):
    path = _header_case(tmp_path, q_code, s_code, q_shift, pixdim)
    assert_same(read_image(path), from_sitk(sitk.ReadImage(str(path)))[0])


def test_scaled_voxels_match_simpleitk(tmp_path):
    nii = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    nii.header.set_slope_inter(0.5, -3.0)
    nib.save(nii, tmp_path / "scaled.nii.gz")
    ours = read_image(tmp_path / "scaled.nii.gz")
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "scaled.nii.gz")))
    np.testing.assert_allclose(ours.array, theirs)


def test_four_d_splits_into_channels(tmp_path):
    reference = make_image(DIRECTIONS_3D["oblique"])
    data = np.stack([np.asarray(reference.array.T) + 1000 * c for c in range(3)], axis=-1)  # (x, y, z, c)
    nib.save(nib.Nifti1Image(data, nifti_affine(reference)), tmp_path / "multi.nii.gz")
    channels = read_image_channels(tmp_path / "multi.nii.gz")
    assert len(channels) == 3
    for c, channel in enumerate(channels):
        assert_same(channel, reference.with_array(reference.array + 1000 * c))
    with pytest.raises(ValueError, match="read_image_channels"):
        read_image(tmp_path / "multi.nii.gz")


def test_single_volume_four_d_reads_as_3d(tmp_path):
    reference = make_image(DIRECTIONS_3D["flipped"])
    nib.save(nib.Nifti1Image(reference.array.T[..., None], nifti_affine(reference)), tmp_path / "one.nii.gz")
    assert_same(read_image(tmp_path / "one.nii.gz"), reference)
    assert len(read_image_channels(tmp_path / "one.nii.gz")) == 1


def test_simpleitk_vector_file_splits(tmp_path):
    reference = make_image(DIRECTIONS_3D["oblique"], dtype=np.float32)
    vector = sitk.Compose([to_sitk(reference), to_sitk(reference.with_array(reference.array * 2))])
    sitk.WriteImage(vector, str(tmp_path / "vector.nii.gz"))
    channels = read_image_channels(tmp_path / "vector.nii.gz")
    assert len(channels) == 2
    assert_same(channels[1], reference.with_array(reference.array * 2))


def test_types_written_as_given(tmp_path):
    image = make_image(DIRECTIONS_3D["identity"])
    for array in (image.array > 100, image.array.astype(np.int64), image.array.astype(np.float16)):
        write_image(image.with_array(array), tmp_path / "t.nii.gz")
        np.testing.assert_array_equal(read_image(tmp_path / "t.nii.gz").array, array)


def test_nan_is_not_an_io_error(tmp_path):
    image = make_image(DIRECTIONS_3D["identity"], dtype=np.float32)
    image.array[0, 0, 0] = np.nan
    write_image(image, tmp_path / "nan.nii.gz")
    assert np.isnan(read_image(tmp_path / "nan.nii.gz").array[0, 0, 0])
