"""nnU-Net as a benchmark contestant (``mambaseg.workspace.nnunet``): finding it, converting our data for it, reading
its log, and the record of a finished fold; one slow test trains it for real where ``MAMBASEG_NNUNET_PYTHON`` names
an nnU-Net 2.x python."""

import json
import os
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from mambaseg.data import load_dataset
from mambaseg.io import read_image
from mambaseg.workspace import nnunet
from mambaseg.workspace.nnunet import NnUNetError, NnUNetSettings
from tests.data.synthetic import read_nifti_array, write_decathlon_dataset, write_nnunet_dataset

NNUNET_PYTHON = os.environ.get("MAMBASEG_NNUNET_PYTHON")
TINY = NnUNetSettings(
    "3d_fullres", epochs=1, iterations_per_epoch=2, val_iterations=1, batch_size=2, threads=1, workers=0
)

# as nnU-Net 2.8.1's print_to_log_file writes them (str(datetime): no fraction when the microsecond is 0)
NNUNET_LOG = """
#######################################################################
Please cite the following paper when using nnU-Net:
2026-12-01 15:10:00.250000: Epoch 0
2026-12-01 15:10:40.760000: Pseudo dice [np.float32(0.1), np.float32(0.2)]
2026-12-01 15:10:40.770000: Epoch time: 40.5 s
2026-12-01 15:10:41.000000: Epoch 1
2026-12-01 15:11:05: Epoch time: 24 s
2026-12-01 15:11:05.100000: Epoch 2
2026-12-01 15:11:30.770000: Epoch time: 26.0 s
2026-12-01 15:11:31.000000: Training done.
"""


def _splits(names):
    return [{"train": names[:3], "val": names[3:]}, {"train": names[2:], "val": names[:2]}]


def test_missing_python_is_named(tmp_path):
    missing = tmp_path / "no_venv" / "bin" / "python"
    with pytest.raises(NnUNetError, match=f"{missing}: no such file"):
        nnunet.check_nnunet(missing)


def test_a_file_that_cannot_run_is_named(tmp_path):
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(NnUNetError, match=f"{script}: not executable"):
        nnunet.check_nnunet(script)


def test_python_without_nnunet_is_named_with_its_error():
    with pytest.raises(NnUNetError, match="nnunetv2 does not import") as error:
        nnunet.check_nnunet(sys.executable)
    assert sys.executable in str(error.value)
    assert "ModuleNotFoundError" in str(error.value)


def test_nnunet_v2_layout_is_linked(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=3, channels={0: "CT", 1: "PET"})
    dataset = load_dataset(source)

    folder = nnunet.convert_dataset(dataset, tmp_path / "raw")

    assert folder == tmp_path / "raw" / "Dataset990_Synthetic"
    description = json.loads((folder / "dataset.json").read_text())
    assert description == {
        "name": "Synthetic",
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "foreground": 1},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    for case in ("case_000", "case_001", "case_002"):
        for channel in ("0000", "0001"):
            image = folder / "imagesTr" / f"{case}_{channel}.nii.gz"
            assert image.is_symlink() and image.resolve() == (source / "imagesTr" / image.name).resolve()
        label = folder / "labelsTr" / f"{case}.nii.gz"
        assert label.is_symlink() and label.resolve() == (source / "labelsTr" / label.name).resolve()
    assert len(list((folder / "imagesTr").iterdir())) == 6


def test_decathlon_4d_image_is_split_into_channels(tmp_path):
    labels = {"background": 0, "edema": 1, "tumour": 2}
    channels = {0: "FLAIR", 1: "T1w"}
    source = write_decathlon_dataset(
        tmp_path / "Task01_BrainTumour", n_cases=2, channels=channels, labels=labels, spacing=(1.0, 1.5, 2.0)
    )
    dataset = load_dataset(source)

    folder = nnunet.convert_dataset(dataset, tmp_path / "raw")

    description = json.loads((folder / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    assert description["labels"] == labels
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "case_000_0000.nii.gz",
        "case_000_0001.nii.gz",
        "case_001_0000.nii.gz",
        "case_001_0001.nii.gz",
    ]
    for case in ("case_000", "case_001"):
        original = source / "imagesTr" / f"{case}.nii.gz"
        stacked = read_nifti_array(original)  # (c, z, y, x)
        for channel in range(2):
            split = folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz"
            assert not split.is_symlink()
            np.testing.assert_array_equal(read_nifti_array(split), stacked[channel])
            np.testing.assert_allclose(nib.load(split).affine, nib.load(original).affine, atol=1e-6)
        assert (folder / "labelsTr" / f"{case}.nii.gz").is_symlink()


def test_decathlon_background_gets_nnunets_name(tmp_path):
    source = write_decathlon_dataset(tmp_path / "Task02_Heart", n_cases=1, labels={"bg": 0, "atrium": 1})

    folder = nnunet.convert_dataset(load_dataset(source), tmp_path / "raw")

    assert json.loads((folder / "dataset.json").read_text())["labels"] == {"background": 0, "atrium": 1}


def test_epoch_times_from_the_log_leave_the_first_epoch_out():
    seconds = nnunet.nnunet_epoch_seconds(NNUNET_LOG)
    assert seconds == [40.5, 24.0, 26.0]
    rate, per_epoch = nnunet.training_speed(seconds, iterations=20, batch=2)
    assert per_epoch == pytest.approx(25.0)
    assert rate == pytest.approx(40 / 25.0)
    assert nnunet.training_speed([12.5], iterations=4, batch=2) == (pytest.approx(8 / 12.5), 12.5)
    assert nnunet.training_speed([], iterations=4, batch=2) == (None, None)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="batch_size 0"):
        NnUNetSettings("2d", epochs=1, iterations_per_epoch=1, val_iterations=1, batch_size=0, threads=1, workers=0)
    with pytest.raises(ValueError, match="device 'tpu'"):
        NnUNetSettings("2d", 1, 1, 1, 1, 1, 0, device="tpu")


def _fake_nnunet(monkeypatch):
    """Replaces nnU-Net's commands by a stand-in that writes what its training program would; counts its runs."""
    runs = []

    def prepare(python, dataset, root, settings):
        (root / "preprocessed" / "Dataset990_Synthetic").mkdir(parents=True, exist_ok=True)

    def run(command, env, log_file, shown):
        job = json.loads(command[-1])
        fold = log_file.parents[1] / "results" / "Dataset990_Synthetic" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
        fold = fold / f"fold_{job['fold']}"
        (fold / "validation").mkdir(parents=True)
        (fold / "training_log.txt").write_text(NNUNET_LOG)
        result = {
            "validation_seconds": 3.0,
            "parameters": 1234,
            "patch_size": [8, 8, 8],
            "batch_size": job["batch_size"],
            "log_file": str(fold / "training_log.txt"),
            "output_folder": str(fold),
        }
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("nnU-Net says hello\n" + nnunet.RESULT_MARKER + json.dumps(result) + "\n")
        runs.append(job)
        return 2048.0  # MB

    monkeypatch.setattr(nnunet, "_prepare", prepare)
    monkeypatch.setattr(nnunet, "_run", run)
    return runs


def test_a_finished_fold_is_returned_and_other_settings_are_refused(tmp_path, monkeypatch):
    runs = _fake_nnunet(monkeypatch)
    dataset = load_dataset(write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5))
    splits = _splits(dataset.case_names())
    root = tmp_path / "nnunet"

    first = nnunet.train_nnunet_fold("python", dataset, root, splits, "0", TINY)

    assert first.cases == ["case_003", "case_004"]
    assert (first.samples, first.parameters, first.patch_size, first.precision) == (4, 1234, [8, 8, 8], "float32")
    assert first.samples_per_second == pytest.approx(4 / 25.0)
    assert first.peak_memory_mb == pytest.approx(2048)
    assert first.inference_seconds_per_case == pytest.approx(1.5)
    assert json.loads((root / "preprocessed" / "Dataset990_Synthetic" / "splits_final.json").read_text()) == splits
    again = nnunet.train_nnunet_fold("python", dataset, root, splits, "0", TINY)
    assert again == first and len(runs) == 1

    more_epochs = NnUNetSettings("3d_fullres", 2, 2, 1, 2, 1, 0)
    with pytest.raises(NnUNetError, match=r"fold_0\.benchmark\.json: .*other settings: epochs 1 \(asked: 2\)"):
        nnunet.train_nnunet_fold("python", dataset, root, splits, "0", more_epochs)
    with pytest.raises(NnUNetError, match=r"other settings: train \['case_000', 'case_001', 'case_002'\] \(asked"):
        nnunet.train_nnunet_fold("python", dataset, root, _splits(dataset.case_names()[::-1]), "0", TINY)
    assert len(runs) == 1


def test_an_unknown_fold_or_case_is_refused_before_anything_runs(tmp_path, monkeypatch):
    runs = _fake_nnunet(monkeypatch)
    dataset = load_dataset(write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5))
    splits = _splits(dataset.case_names())
    with pytest.raises(ValueError, match="fold '2' does not exist"):
        nnunet.train_nnunet_fold("python", dataset, tmp_path / "nnunet", splits, "2", TINY)
    splits[0]["val"].append("case_999")
    with pytest.raises(ValueError, match=r"splits\[0\]: case\(s\) \['case_999'\]"):
        nnunet.train_nnunet_fold("python", dataset, tmp_path / "nnunet", splits, "0", TINY)
    assert runs == []


def test_a_failing_command_is_named_with_its_log(tmp_path):
    log_file = tmp_path / "logs" / "fail.log"
    command = [sys.executable, "-c", "import sys; print('the last words'); sys.exit(3)"]
    with pytest.raises(NnUNetError, match=r"(?s)shown command failed \(exit status 3\).*fail\.log.*the last words"):
        nnunet._run(command, dict(os.environ), log_file, "shown command")


@pytest.mark.slow
@pytest.mark.nnunet
@pytest.mark.skipif(not NNUNET_PYTHON, reason="set MAMBASEG_NNUNET_PYTHON to the python of an nnU-Net 2.x install")
def test_nnunet_trains_and_validates_our_fold(tmp_path):
    assert nnunet.check_nnunet(NNUNET_PYTHON).startswith("2.")
    dataset = load_dataset(write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, shape=(20, 20, 20)))
    splits = _splits(dataset.case_names())
    root = tmp_path / "nnunet"

    result = nnunet.train_nnunet_fold(NNUNET_PYTHON, dataset, root, splits, "0", TINY)

    masks = sorted(path.name for path in result.predictions.glob("*.nii.gz"))
    assert masks == ["case_003.nii.gz", "case_004.nii.gz"] == [f"{case}.nii.gz" for case in result.cases]
    for case in result.cases:
        mask = read_image(result.predictions / f"{case}.nii.gz")
        assert mask.same_geometry(read_image(dataset.root / "labelsTr" / f"{case}.nii.gz"))
        assert set(np.unique(mask.array)) <= {0, 1}
    assert result.samples == 4 and result.batch_size == 2 and len(result.patch_size) == 3
    assert result.parameters > 0 and result.peak_memory_mb and result.inference_seconds_per_case
    assert result.samples_per_second and result.seconds_per_epoch

    log_file = next((root / "logs").glob("train_*.log"))
    before = log_file.stat()
    start = time.perf_counter()
    again = nnunet.train_nnunet_fold(NNUNET_PYTHON, dataset, root, splits, "0", TINY)
    assert time.perf_counter() - start < 5
    assert again == result
    assert (log_file.stat().st_size, log_file.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

