"""Where outputs go wrong: the input folder as output, a read-only folder, a full disk."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from mambaseg.cli.main import main
from mambaseg.io import Image, files, read_image, write_image
from mambaseg.planning.checkpoint import load_checkpoint, save_checkpoint
from tests.data.synthetic import file_states, write_nnunet_dataset
from tests.reliability.helpers import read_only, temp_files


def _image(seed: int, shape: tuple[int, ...] = (4, 5, 6)) -> Image:
    array = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return Image(array, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))


def _out(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_predict_refuses_the_input_folder_or_one_inside_it_as_output(tmp_path, capsys):
    source = write_nnunet_dataset(tmp_path / "raw", n_cases=0, n_test=2) / "imagesTs"
    before = file_states(tmp_path)
    for output in (source, source / "masks"):
        assert main(["predict", "-i", str(source), "-o", str(output), "-m", str(tmp_path / "no_run")]) == 1
        assert f"output folder {output} is" in _out(capsys)
    assert file_states(tmp_path) == before and not (source / "masks").exists()


def test_preprocess_into_a_read_only_folder_fails_clearly_and_writes_no_case(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    root = write_nnunet_dataset(tmp_path / "raw" / "Dataset001_Tiny", n_cases=3)
    workspace = tmp_path / "ws"
    assert main(["plan", str(root), "--workspace", str(workspace), "--workers", "1"]) == 0
    target = workspace / "Synthetic" / "preprocessed" / "3d_fullres"
    target.mkdir(parents=True)
    before = file_states(tmp_path)
    capsys.readouterr()
    with read_only(target):
        assert main(["preprocess", str(root), "--workspace", str(workspace), "--workers", "1", "-c", "3d_fullres"]) == 1
    out = _out(capsys)
    assert "error:" in out and str(target) in out and ("not permitted" in out or "Permission denied" in out)
    assert list(target.iterdir()) == []
    assert file_states(tmp_path) == before


def test_disk_full_while_writing_an_image_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "case.nii.gz"
    write_image(_image(1), target)
    before = file_states(tmp_path)
    real_write = files.write_nifti

    def fill_the_disk(image: Image, path: Path) -> None:
        real_write(image, path)
        with open(path, "r+b") as handle:  # what is on disk when the device fills up: a cut file
            handle.truncate(path.stat().st_size // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_nifti", fill_the_disk)
    with pytest.raises(OSError, match="No space left on device") as info:
        write_image(_image(2), target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert file_states(tmp_path) == before and temp_files(tmp_path) == []
    np.testing.assert_array_equal(read_image(target).array, _image(1).array)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only): writes beyond it fail with ENOSPC as on a really full disk."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = (
        os.geteuid() == 0
        and not subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=False, capture_output=True
        ).returncode
    )
    if not mounted:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_really_full_disk_names_the_file_and_keeps_the_previous_ones(small_disk):
    image_path, checkpoint_path = small_disk / "case.nii.gz", small_disk / "checkpoint_latest.pt"
    write_image(_image(1), image_path)
    save_checkpoint(checkpoint_path, model=nn.Linear(4, 2), epoch=1)
    before = file_states(small_disk)
    with pytest.raises(OSError) as info:
        write_image(_image(2, (40, 40, 40)), image_path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(image_path)
    with pytest.raises(OSError) as info:
        save_checkpoint(checkpoint_path, model=nn.Linear(300, 200), epoch=2)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(checkpoint_path)
    assert "cannot write the checkpoint: No space left on device" in str(info.value)
    assert file_states(small_disk) == before and temp_files(small_disk) == []
    np.testing.assert_array_equal(read_image(image_path).array, _image(1).array)
    assert load_checkpoint(checkpoint_path).epoch == 1


def test_a_write_removes_what_a_killed_writer_left_but_not_a_running_writers_files(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    target = tmp_path / "case.nii.gz"
    left_by_killed = tmp_path / f".case.nii.gz.{dead.pid}.k1ll3d.tmp"
    in_progress = tmp_path / f".case.nii.gz.{os.getpid()}.busy00.tmp"
    for folder in (left_by_killed, in_progress):
        folder.mkdir()
        (folder / "case.nii.gz").write_bytes(b"half a file")
    write_image(_image(1), target)
    assert temp_files(tmp_path) == [in_progress.name]
    np.testing.assert_array_equal(read_image(target).array, _image(1).array)


def _fake_run(folder: Path) -> Path:
    """A run folder whose plans and checkpoint open (prediction is refused before its network is built)."""
    from mambaseg.planning.plans import ConfigurationPlan, Normalization, Plans
    from mambaseg.training.setup import write_run_files
    from mambaseg.workspace.layout import RunFiles

    zscore = Normalization("zscore", {})
    plan = ConfigurationPlan(3, [1.0, 1.0, 1.0], [16, 16, 16], [16, 16, 16], 2, "unet_resenc", {}, [zscore], 0.0)
    labels = {"background": 0, "a": 1}
    plans = Plans("Fake", {"0": "MRI"}, labels, 2, 8.0, [0, 1, 2], [0, 1, 2], {}, {"3d_fullres": plan})
    fold = RunFiles(folder, "3d_fullres", "unet_resenc").fold(0)
    write_run_files(fold, {}, plan)
    save_checkpoint(fold.checkpoints.final, model=nn.Identity(), epoch=0, plans=plans.to_dict())
    return folder


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_is_never_an_input_file_under_any_path(tmp_path, capsys, overwrite):
    run = _fake_run(tmp_path / "ws" / "Fake" / "runs" / "3d_fullres__unet_resenc")
    scans = tmp_path / "scans"
    write_image(_image(0), scans / "case.nii.gz")
    linked, hard = tmp_path / "linked", tmp_path / "hard"
    linked.mkdir(), hard.mkdir()
    (linked / "case.nii.gz").symlink_to(scans / "case.nii.gz")
    os.link(scans / "case.nii.gz", hard / "case.nii.gz")
    before = file_states(tmp_path)
    forms = {
        "the input file's own folder": (scans / "case.nii.gz", scans),
        "a link to the input under the mask's name": (scans / "case.nii.gz", linked),
        "a hard link to the input under the mask's name": (scans / "case.nii.gz", hard),
        "a folder of inputs, one linked in the output folder": (scans, linked),
    }
    for form, (source, output) in forms.items():
        command = ["predict", "-i", str(source), "-o", str(output), "-m", str(run), *overwrite]
        assert main(command) == 1, form
        shown = _out(capsys)
        assert f"output {output / 'case.nii.gz'} of case 'case' would be the input {scans / 'case.nii.gz'}" in shown
    assert file_states(tmp_path) == before


def _file_size_limit(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_file_size_limit_names_the_file_being_written(tmp_path):
    dataset = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=2, shape=(8, 12, 12), spacing=(1, 1, 1))
    ws = tmp_path / "ws"
    assert main(["plan", str(dataset), "--workspace", str(ws)]) == 0
    command = [sys.executable, "-m", "mambaseg", "preprocess", str(dataset), "--workspace", str(ws), "-c", "3d_fullres"]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_file_size_limit(2000), timeout=300)
    shown = " ".join(done.stdout.split())
    assert done.returncode == 1, shown
    assert "File too large" in shown and "cannot write" in shown
    assert str(ws / "Synthetic" / "preprocessed" / "3d_fullres") in shown  # which file, not only [Errno 27]
