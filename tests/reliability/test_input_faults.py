"""Input files that lie: headers claiming more than the file holds, bad NIfTI geometry, non-finite or absurd values."""

from __future__ import annotations

import gzip
import logging
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mambaseg.cli.main import main
from mambaseg.io import Image, ImageReadError, read_image
from mambaseg.preprocessing.case import PreprocessingSpec, preprocess_image_for_inference
from mambaseg.preprocessing.normalization import ChannelNormalization
from tests.data.synthetic import file_states, write_nifti, write_nnunet_dataset

SHAPE, SPACING = (8, 10, 12), (2.0, 1.0, 1.0)
CLAIM = "its header claims 1024 x 1024 x 1024 voxels (4.3 GB)"
_PIXDIM_2 = 76 + 2 * 4  # byte offset of pixdim[2] in a NIfTI-1 header


def _bomb_header() -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    return header.binaryblock + b"\0" * 4


def _nii_gz(path):
    path.write_bytes(gzip.compress(_bomb_header() + b"\0" * 100))


def _nii(path):
    path.write_bytes(_bomb_header() + b"\0" * 100)


def _meta(path):
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 1024 1024 1024\nElementType = MET_FLOAT\n"
                    "ElementDataFile = LOCAL\n" + "\0" * 50)


def _nrrd(path):
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 1024 1024 1024\nendian: little\nencoding: gzip\n\n"
                     + gzip.compress(b"\0" * 1000))


BOMBS = {"nii.gz": _nii_gz, "nii": _nii, "mha": _meta, "nrrd": _nrrd}


@pytest.mark.parametrize("ending", list(BOMBS))
def test_a_header_claiming_more_than_the_file_holds_is_refused_before_allocating(tmp_path, ending):
    path = tmp_path / f"bomb.{ending}"
    BOMBS[ending](path)
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match="header claims") as info:
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path}: ") and CLAIM in str(info.value)
    assert peak < 50e6  # nothing near the claimed 4.3 GB was allocated


def test_check_reports_a_header_bomb_in_a_training_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    root = write_nnunet_dataset(tmp_path / "raw" / "Dataset001_Bomb", n_cases=3, shape=SHAPE, spacing=SPACING)
    _nii_gz(root / "imagesTr" / "case_001_0000.nii.gz")
    before = file_states(tmp_path / "raw")
    assert main(["check", str(root), "--workers", "1"]) == 1
    rows = [line for line in capsys.readouterr().out.splitlines() if "header claims" in line]
    assert len(rows) == 1 and "case_001_0000.nii.gz" in rows[0] and "4.3 GB" in rows[0]
    assert file_states(tmp_path / "raw") == before


@pytest.mark.parametrize("pixdim", [0.0, -2.0, float("nan"), float("inf")])
def test_bad_nifti_spacing_is_an_error_naming_the_file_and_nibabel_prints_nothing(tmp_path, capfd, pixdim):
    path = write_nifti(tmp_path / "image.nii.gz", np.ones(SHAPE, np.float32), SPACING)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[_PIXDIM_2 : _PIXDIM_2 + 4] = np.float32(pixdim).tobytes()  # nibabel would fix it on saving
    path.write_bytes(gzip.compress(bytes(raw)))
    capfd.readouterr()
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value).startswith(f"{path}: ") and f"pixdim[2] = {pixdim:g}" in str(info.value)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("s_code", "used"), [(1, "sform (code 1)"), (2, "qform (code 1)")])
def test_disagreeing_sform_and_qform_warn_naming_the_file_and_the_transform_used(tmp_path, caplog, s_code, used):
    path = tmp_path / "image.nii.gz"
    qform, sform = np.diag([1.0, 1.0, 2.0, 1.0]), np.diag([1.0, 1.0, 2.0, 1.0])
    sform[:3, 3] = (10.0, -5.0, 3.0)
    nii = nib.Nifti1Image(np.ones((4, 5, 6), np.float32), None)
    nii.set_qform(qform, code=1)
    nii.set_sform(sform, code=s_code)
    nib.save(nii, path)
    with caplog.at_level(logging.WARNING, logger="mambaseg.io.nifti"):
        image = read_image(path)
    assert f"{path}: the sform and the qform disagree" in caplog.text and f"using the {used}" in caplog.text
    np.testing.assert_allclose(image.origin, sitk.ReadImage(str(path)).GetOrigin(), atol=1e-4)  # ITK's choice


def _spec(scheme: str = "zscore") -> PreprocessingSpec:
    return PreprocessingSpec((2.0, 1.0, 1.0), (ChannelNormalization(scheme),))


def _image(array: np.ndarray, source: str = "scan.nii.gz") -> Image:
    return Image(array, SPACING[::-1], (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), source=source)


def test_inf_voxels_in_a_prediction_input_are_an_error_naming_the_file_and_the_count():
    array = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    array[2:4, 3:5, 4:6] = np.inf
    with pytest.raises(ValueError, match=r"^scan.nii.gz: 8 voxels are NaN or infinite$"):
        preprocess_image_for_inference([_image(array)], _spec())


@pytest.mark.parametrize("scheme", ["zscore", "rescale_0_1"])
def test_huge_finite_values_normalise_to_finite_data(scheme):
    array = (np.random.default_rng(0).uniform(-1, 1, size=SHAPE) * 1e38).astype(np.float32)
    data, _ = preprocess_image_for_inference([_image(array)], _spec(scheme))
    assert np.isfinite(data).all() and data.std() > 0


def test_values_beyond_float32_are_an_error_naming_the_file_and_the_range():
    array = np.random.default_rng(0).normal(size=SHAPE) * 1e300
    with pytest.raises(ValueError, match=r"^scan.nii.gz: values from -.*e\+300 to .*e\+300 overflow float32"):
        preprocess_image_for_inference([_image(array)], _spec())


def test_check_and_preprocess_refuse_a_training_image_beyond_float32(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    root = write_nnunet_dataset(tmp_path / "raw" / "Dataset001_Huge", n_cases=3, shape=SHAPE, spacing=SPACING)
    file = root / "imagesTr" / "case_001_0000.nii.gz"
    write_nifti(file, np.random.default_rng(1).normal(size=SHAPE) * 1e300, SPACING)
    before = file_states(tmp_path / "raw")
    workspace = tmp_path / "ws"
    assert main(["preprocess", str(root), "--workspace", str(workspace), "--workers", "1"]) == 1
    rows = [line for line in capsys.readouterr().out.splitlines() if "exceed the float32 range" in line]
    assert len(rows) == 1 and "case_001_0000.nii.gz" in rows[0] and "e+300" in rows[0]
    assert not workspace.exists() or not any(workspace.rglob("*"))
    assert file_states(tmp_path / "raw") == before
