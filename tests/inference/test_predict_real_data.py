"""`mambaseg predict` on the real DICOM series in ``$MAMBASEG_REAL_DATA/dicom`` (skipped where it is absent).

A tiny run trained on synthetic data predicts them; what is checked is where the masks lie: their geometry
equals SimpleITK's reading of each series, and each DICOM-SEG frame sits on the instance it references.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from mambaseg.cli.main import main
from mambaseg.io import read_dicom_series, read_image
from tests.data.synthetic import write_nnunet_dataset
from tests.real_data import real_data, skip_reason

DICOM = real_data("dicom")
pytestmark = pytest.mark.skipif(DICOM is None, reason=skip_reason("dicom"))
TRAIN = ["-c", "3d_fullres", "-n", "unet_resenc", "-f", "0", "trainer=cpu_short", "trainer.num_epochs=1"]
TRAIN += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "num_workers=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    dataset = write_nnunet_dataset(root / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1))
    assert main(["train", str(dataset), "--workspace", str(root / "ws"), *TRAIN]) == 0
    return root / "ws" / "Synthetic" / "runs" / "3d_fullres__unet_resenc"


def predict(run: Path, source: Path, out: Path, *extra: str) -> int:
    return main(["predict", "-i", str(source), "-o", str(out), "-m", str(run), "--device", "cpu", *extra])


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_geometry_of_series(mask_file: Path, folder: Path) -> sitk.Image:
    mask, series = sitk.ReadImage(str(mask_file)), sitk_series(folder)
    assert mask.GetSize() == series.GetSize()
    for get in (sitk.Image.GetSpacing, sitk.Image.GetOrigin, sitk.Image.GetDirection):
        np.testing.assert_allclose(get(mask), get(series), atol=1e-4)
    return mask


def test_a_folder_of_mr_series_gives_one_mask_and_seg_per_series_on_the_source_slices(run, tmp_path):
    source = DICOM / "mr_hippocampus_crops"
    assert predict(run, source, tmp_path, "--dicom-seg", "--no-mirroring") == 0
    names = sorted(p.name for p in source.iterdir() if p.is_dir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{n}.dcm" for n in names] + [f"{n}.nii.gz" for n in names]
    )
    for name in names:
        mask = assert_geometry_of_series(tmp_path / f"{name}.nii.gz", source / name)
        labels = sitk.GetArrayFromImage(mask)  # (z, y, x)
        seg = hd.seg.segread(tmp_path / f"{name}.dcm")
        for file in sorted((source / name).iterdir()):
            instance = pydicom.dcmread(file, stop_before_pixels=True)
            k = mask.TransformPhysicalPointToIndex([float(v) for v in instance.ImagePositionPatient])[2]
            frame = seg.get_pixels_by_source_instance(
                [instance.SOPInstanceUID], segment_numbers=[1], assert_missing_frames_are_empty=True
            )
            np.testing.assert_array_equal(frame[0, ..., 0], labels[k] == 1, err_msg=str(file))


@pytest.mark.slow
def test_the_ct_series_gives_a_mask_in_its_geometry_and_refuses_a_seg_without_uids(run, tmp_path, capsys):
    source = DICOM / "ct_totalsegmentator" / "example_ct_dicom"
    assert predict(run, source, tmp_path / "seg", "--dicom-seg") == 1
    assert "empty or missing StudyInstanceUID" in capsys.readouterr().out
    assert not (tmp_path / "seg").exists()
    assert predict(run, source, tmp_path / "out", "--no-mirroring", "--step", "1") == 0
    assert_geometry_of_series(tmp_path / "out" / "example_ct_dicom.nii.gz", source)


def test_the_ct_nifti_mask_lines_up_with_the_ct_although_its_axes_are_flipped():
    ct = read_dicom_series(DICOM / "ct_totalsegmentator" / "example_ct_dicom")
    mask = read_image(DICOM / "ct_totalsegmentator" / "example_seg_dicom.nii.gz")
    assert mask.array.shape == ct.array.shape and not np.allclose(mask.direction, ct.direction)
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in ct.array.shape])))  # (8, 3)
    ct_points, mask_points = ct.physical_points(corners), mask.physical_points(corners)
    nearest = np.linalg.norm(ct_points[:, None] - mask_points[None], axis=-1).min(axis=1)
    assert (nearest < 0.5 * min(ct.spacing)).all()
    foreground = np.argwhere(mask.array > 0)  # (n, 3) in the mask's (z, y, x)
    direction = np.asarray(ct.direction).reshape(3, 3)
    relative = (mask.physical_points(foreground) - np.asarray(ct.origin)) @ direction / np.asarray(ct.spacing)
    index = np.rint(relative[:, ::-1]).astype(int)  # CT (z, y, x) of each mask voxel
    assert ((index >= 0) & (index < ct.array.shape)).all()
    hounsfield = ct.array[tuple(index.T)]
    assert np.mean(hounsfield > -500) > 0.95  # structures lie on tissue, not on the air around the body
