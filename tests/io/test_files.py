"""Dispatch on the file ending, atomic and non-overwriting writes, and the errors users see."""

import gzip
import pickle
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from mambaseg.io import (
    SUPPORTED_EXTENSIONS,
    ChannelFilesError,
    ImageReadError,
    image_extension,
    read_case_channels,
    read_image,
    to_sitk,
    write_image,
)
from tests.io.cases import DIRECTIONS_3D, make_image


def test_image_extension():
    assert image_extension("a/b/case_0000.nii.gz") == ".nii.gz"
    assert image_extension("CASE.NII") == ".nii"
    assert image_extension("x.seg.nrrd") == ".nrrd"
    with pytest.raises(ValueError, match=r"scan\.jpg.*\.nii\.gz"):
        image_extension("scan.jpg")


def test_unknown_extension_lists_supported(tmp_path):
    (tmp_path / "scan.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match="scan.jpg") as info:
        read_image(tmp_path / "scan.jpg")
    assert all(extension in str(info.value) for extension in SUPPORTED_EXTENSIONS)
    with pytest.raises(ValueError, match="out.jpg"):
        write_image(make_image(np.eye(3)), tmp_path / "out.jpg")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.nii.gz"):
        read_image(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file_names_the_file(tmp_path, extension):
    path = tmp_path / f"cut{extension}"
    image = make_image(DIRECTIONS_3D["oblique"], dtype=np.float32)
    image = image.with_array(np.random.default_rng(0).random(image.array.shape, dtype=np.float32))
    write_image(image, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=f"cut{extension}: cannot read image"):
        read_image(path)


def test_not_gzip_and_not_nifti(tmp_path):
    (tmp_path / "text.nii.gz").write_bytes(b"this is not a gzip stream")
    with pytest.raises(ImageReadError, match="text.nii.gz"):
        read_image(tmp_path / "text.nii.gz")
    (tmp_path / "zeros.nii.gz").write_bytes(gzip.compress(bytes(400)))
    with pytest.raises(ImageReadError, match="zeros.nii.gz"):
        read_image(tmp_path / "zeros.nii.gz")


def test_write_is_atomic_and_creates_folders(tmp_path):
    target = tmp_path / "out" / "deep" / "case.nii.gz"
    write_image(make_image(DIRECTIONS_3D["flipped"]), target)
    assert [p.name for p in target.parent.iterdir()] == ["case.nii.gz"]


def test_overwrite(tmp_path):
    first, second = make_image(np.eye(3), seed=1), make_image(np.eye(3), seed=2)
    target = tmp_path / "case.nrrd"
    write_image(first, target)
    with pytest.raises(FileExistsError, match="case.nrrd"):
        write_image(second, target, overwrite=False)
    np.testing.assert_array_equal(read_image(target).array, first.array)
    write_image(second, target)
    np.testing.assert_array_equal(read_image(target).array, second.array)
    assert [p.name for p in tmp_path.iterdir()] == ["case.nrrd"]


def test_failed_write_leaves_previous_file(tmp_path):
    target = tmp_path / "case.nii.gz"
    good = make_image(np.eye(3))
    write_image(good, target)
    with pytest.raises(ValueError, match="case.nii.gz"):
        write_image(good.with_array(good.array.astype(np.complex256)), target)
    np.testing.assert_array_equal(read_image(target).array, good.array)
    assert [p.name for p in tmp_path.iterdir()] == ["case.nii.gz"]


def test_physical_points_match_simpleitk():
    image = make_image(DIRECTIONS_3D["oblique_reflected"])
    itk_image = to_sitk(image)
    indices = np.array([[0, 0, 0], [4, 6, 5], [1.5, 2, 0.25]])  # (z, y, x)
    expected = [itk_image.TransformContinuousIndexToPhysicalPoint(i[::-1].tolist()) for i in indices]
    np.testing.assert_allclose(image.physical_points(indices), expected, atol=1e-9)


def test_io_layer_does_not_import_torch():
    code = "import sys, mambaseg.io; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_case_is_one_file_of_every_channel_or_one_channel_per_file(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(6, 5, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    for c in range(3):
        sitk.WriteImage(sitk.GetImageFromArray(rgb[..., c]), str(tmp_path / f"c{c}.png"))
    for files in ([tmp_path / "rgb.png"], [tmp_path / f"c{c}.png" for c in range(3)]):
        channels = read_case_channels(files)
        np.testing.assert_array_equal(np.stack([channel.array for channel in channels], -1), rgb)
    with pytest.raises(
        ChannelFilesError,
        match=r"rgb\.png: holds 3 channels, but it is one of the case's 3 image files "
        r"\(rgb\.png, c1\.png, c2\.png\)",
    ) as info:
        read_case_channels([tmp_path / "rgb.png", tmp_path / "c1.png", tmp_path / "c2.png"])
    assert info.value.path == tmp_path / "rgb.png"
    copy = pickle.loads(pickle.dumps(info.value))  # it crosses the process pools of check and fingerprint whole
    assert (str(copy), copy.path, copy.reason) == (str(info.value), info.value.path, info.value.reason)
