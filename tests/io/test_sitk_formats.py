"""NRRD, MetaImage, PNG and TIFF through SimpleITK: round trips and what the 2-D formats refuse."""

import numpy as np
import pytest
import SimpleITK as sitk

from mambaseg.io import ImageReadError, read_image, read_image_channels, write_image
from tests.io.cases import DIRECTIONS_2D, DIRECTIONS_3D, make_image
from tests.io.test_nifti import assert_same


@pytest.mark.parametrize("extension", [".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("name", sorted(DIRECTIONS_3D))
def test_round_trip_3d_exact(tmp_path, extension, name):
    image = make_image(DIRECTIONS_3D[name], dtype=np.float32)
    write_image(image, tmp_path / f"case{extension}")
    assert_same(read_image(tmp_path / f"case{extension}"), image, tol=1e-12)


@pytest.mark.parametrize("extension", [".nrrd", ".mha"])
@pytest.mark.parametrize("name", sorted(DIRECTIONS_2D))
def test_round_trip_2d_exact(tmp_path, extension, name):
    image = make_image(DIRECTIONS_2D[name])
    write_image(image, tmp_path / f"slice{extension}")
    assert_same(read_image(tmp_path / f"slice{extension}"), image, tol=1e-12)


@pytest.mark.parametrize(("extension", "dtype"), [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint8)])
@pytest.mark.parametrize("extension_case", [str.lower, str.upper])
def test_planar_round_trip_keeps_spacing(tmp_path, extension, dtype, extension_case):
    image = make_image(DIRECTIONS_2D["identity"], dtype=dtype)
    image = type(image)(image.array, image.spacing, (0.0, 0.0), image.direction)
    path = tmp_path / f"slice{extension_case(extension)}"
    write_image(image, path)
    assert_same(read_image(path), image, tol=1e-6)  # TIFF stores the resolution in float32


def test_tiff_float_and_tiff_extension(tmp_path):
    image = make_image(DIRECTIONS_2D["identity"], dtype=np.float32)
    image = type(image)(image.array, (1.0, 1.0), (0.0, 0.0), image.direction)
    write_image(image, tmp_path / "slice.tiff")
    assert_same(read_image(tmp_path / "slice.tiff"), image)


@pytest.mark.parametrize("name", ["flipped", "oblique"])
def test_planar_refuses_geometry_it_cannot_store(tmp_path, name):
    image = make_image(DIRECTIONS_2D[name], dtype=np.uint8)
    with pytest.raises(ValueError, match="cannot store origin"):
        write_image(image, tmp_path / "slice.png")
    assert list(tmp_path.iterdir()) == []


def test_png_refuses_float_voxels(tmp_path):
    image = make_image(DIRECTIONS_2D["identity"], dtype=np.float64)
    image = type(image)(image.array, image.spacing, (0.0, 0.0), image.direction)
    with pytest.raises(ValueError, match=r"slice\.png.*float64"):
        write_image(image, tmp_path / "slice.png")
    assert list(tmp_path.iterdir()) == []


def test_rgb_png_needs_read_image_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(6, 5, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    with pytest.raises(ImageReadError, match=r"rgb\.png.*3 components.*read_image_channels"):
        read_image(tmp_path / "rgb.png")
    channels = read_image_channels(tmp_path / "rgb.png")
    assert len(channels) == 3
    for c, channel in enumerate(channels):
        np.testing.assert_array_equal(channel.array, rgb[..., c])
        assert channel.spacing == (1.0, 1.0)


def test_mhd_keeps_its_data_file(tmp_path):
    image = make_image(DIRECTIONS_3D["oblique"])
    write_image(image, tmp_path / "case.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.mhd", "case.zraw"]
    assert_same(read_image(tmp_path / "case.mhd"), image, tol=1e-12)
