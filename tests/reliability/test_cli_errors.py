"""Every mistake ends in one `error: ...` line and exit 1 (130 after Ctrl-C), before the work where it can."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

import mambaseg.preprocessing.dataset as preprocessing
from mambaseg.cli.main import main, parse_arguments
from mambaseg.inference.inputs import InputError, discover_cases
from mambaseg.workspace import Workspace
from tests.data.synthetic import write_nnunet_dataset
from tests.reliability.helpers import temp_files

TINY = ["-c", "3d_fullres", "-n", "unet_resenc", "trainer=cpu_short", "trainer.num_epochs=1"]
TINY += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "num_workers=0"]


def _error(capsys) -> str:
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


@pytest.fixture
def dataset(tmp_path):
    return write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, n_test=1, shape=(8, 12, 12), spacing=(1, 1, 1))


def _train(dataset, workspace, *extra) -> int:
    return main(["train", str(dataset), "--workspace", str(workspace), "--workers", "1", *TINY, *extra])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.num_epoch=3", "trainer.num_epoch"),
        ("trainer.num_epochs=abc", "trainer.num_epochs='abc': expected an integer"),
        ("batch_size=0", "batch_size=0: must be between 1 and 4096"),
        ("validation.step=1e-6", "validation.step=1e-06: must be between 0.1 and 1.0"),
    ],
)
def test_bad_overrides_are_one_line_naming_the_key_and_nothing_is_done(dataset, tmp_path, capsys, override, named):
    assert _train(dataset, tmp_path / "ws", override) == 1
    assert named in _error(capsys)
    assert not (tmp_path / "ws" / "Synthetic").exists()


def test_a_device_or_scan_backend_that_cannot_run_fails_before_any_work(dataset, tmp_path, capsys, monkeypatch):
    if not __import__("torch").cuda.is_available():
        assert _train(dataset, tmp_path / "ws", "--device", "cuda") == 1
        assert "device 'cuda': CUDA is not available on this machine" in _error(capsys)
    if not __import__("mambaseg.workspace.runtime").workspace.runtime.mps_available():
        assert _train(dataset, tmp_path / "ws", "--device", "mps") == 1
        assert "device 'mps': this PyTorch has no usable MPS backend" in _error(capsys)
    assert _train(dataset, tmp_path / "ws", "--device", "meta") == 1
    assert "device 'meta': mambaseg runs on cpu, cuda, mps, not meta" in _error(capsys)
    monkeypatch.setenv("MAMBASEG_SCAN_BACKEND", "mamba_ssm")
    assert _train(dataset, tmp_path / "ws", "--device", "cpu") == 1
    assert "MAMBASEG_SCAN_BACKEND=mamba_ssm" in _error(capsys)
    monkeypatch.setenv("MAMBASEG_SCAN_BACKEND", "fastest")
    assert _train(dataset, tmp_path / "ws", "--device", "cpu") == 1
    assert "MAMBASEG_SCAN_BACKEND='fastest' is not a selective-scan backend" in _error(capsys)
    assert not (tmp_path / "ws" / "Synthetic").exists()


def test_a_workspace_variable_pointing_at_a_file_is_one_line(dataset, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("MAMBASEG_WORKSPACE", str(tmp_path / "file"))
    assert main(["check", str(dataset)]) == 1
    assert f"workspace {tmp_path / 'file'}: exists and is not a folder" in _error(capsys)


def test_impossible_folds_fail_before_the_check_and_leave_no_fold_folder(dataset, tmp_path, capsys):
    assert _train(dataset, tmp_path / "ws", "-f", "7") == 1
    line = _error(capsys)
    assert "fold '7' does not exist" in line and "or use 'all'" in line
    files = Workspace(tmp_path / "ws").dataset("Synthetic")
    assert not files.preprocessed("3d_fullres").exists() and not files.runs_folder.exists()
    small = write_nnunet_dataset(tmp_path / "Dataset002_Two", n_cases=2, name="Two")
    assert main(["train", str(small), "--workspace", str(tmp_path / "ws"), *TINY]) == 1
    line = _error(capsys)
    assert "has 2 training case(s)" in line and "with fold 'all'" in line


def test_ctrl_c_during_preprocessing_exits_130_and_leaves_no_partial_file(dataset, tmp_path, capsys, monkeypatch):
    real = preprocessing.preprocess_and_save
    done = []

    def interrupted_after_one(case, *args):
        if done:
            raise KeyboardInterrupt
        done.append(real(case, *args))
        return done[-1]

    monkeypatch.setattr(preprocessing, "preprocess_and_save", interrupted_after_one)
    assert main(["preprocess", str(dataset), "--workspace", str(tmp_path / "ws"), "--workers", "1"]) == 130
    assert "interrupted" in capsys.readouterr().out
    assert temp_files(tmp_path / "ws") == []


def test_an_unforeseen_failure_is_one_line_and_its_traceback_is_behind_verbose(dataset, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk controller\nfell over")

    monkeypatch.setattr(preprocessing, "preprocess_and_save", broken)
    argv = ["preprocess", str(dataset), "--workspace", str(tmp_path / "ws"), "--workers", "1"]
    assert main(argv) == 1
    assert "RuntimeError: the disk controller fell over (run with -v for the traceback)" in _error(capsys)
    with pytest.raises(RuntimeError):
        main(["-v", *argv])


def test_numbers_in_messages_read_as_numbers(dataset, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError(f"spacing {np.float64(50.0)!r} and size {np.int64(3)!r}")

    monkeypatch.setattr(preprocessing, "preprocess_and_save", refuse)
    assert main(["preprocess", str(dataset), "--workspace", str(tmp_path / "ws"), "--workers", "1"]) == 1
    assert _error(capsys).endswith("spacing 50.0 and size 3")


def test_the_preprocess_usage_line_can_be_typed_as_shown(dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["preprocess", "--help"])
    assert "usage: mambaseg preprocess DATASET [-c CONFIG [CONFIG ...]]" in capsys.readouterr().out
    assert main(["preprocess", str(dataset), "-c", "3d_fullres", "--workspace", str(tmp_path / "ws")]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    dataset = write_nnunet_dataset(root / "Dataset001_Tiny", n_cases=5, n_test=1, shape=(8, 12, 12), spacing=(1, 1, 1))
    assert _train(dataset, root / "ws") == 0
    return Workspace(root / "ws").dataset("Synthetic").run("3d_fullres", "unet_resenc").folder, dataset / "imagesTs"


def _predict(images: Path, out: str, run: Path) -> int:
    return main(["predict", "-i", str(images), "-o", out, "-m", str(run), "--device", "cpu", "--no-mirroring"])


@pytest.mark.slow
def test_predict_refuses_an_unusable_output_before_loading_the_model(trained, tmp_path, capsys, monkeypatch):
    run, images = trained
    (tmp_path / "file").write_text("x")
    assert _predict(images, str(tmp_path / "file" / "masks"), run) == 1
    assert f"{tmp_path / 'file'} is not a folder" in _error(capsys)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    assert _predict(images, str(locked / "masks"), run) == 1
    assert f"{locked} is not writable" in _error(capsys)
    assert not (locked / "masks").exists()


@pytest.mark.slow
def test_predict_expands_home_and_redoes_an_empty_output(trained, tmp_path, capsys, monkeypatch):
    run, images = trained
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _predict(images, "~/masks", run) == 0
    mask = tmp_path / "home" / "masks" / "case_005.nii.gz"
    assert mask.stat().st_size > 0 and not Path("~").exists()
    mask.write_bytes(b"")  # a 0-byte file is not a finished mask
    assert _predict(images, "~/masks", run) == 0
    assert "1 case(s) predicted" in capsys.readouterr().out and mask.stat().st_size > 0


@pytest.mark.slow
def test_four_digit_case_numbers_are_case_names_for_a_one_channel_model(trained, tmp_path, capsys):
    run, images = trained
    folder = tmp_path / "patients"
    folder.mkdir()
    for number in (1, 2):
        shutil.copy(images / "case_005_0000.nii.gz", folder / f"patient_{number:04d}.nii.gz")
    assert _predict(folder, str(tmp_path / "masks"), run) == 0
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.nii.gz")) == [
        "patient_0001.nii.gz",
        "patient_0002.nii.gz",
    ]


def test_channel_names_that_do_not_fit_the_model_are_explained(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a_0000", "a_0001", "b_0000"):
        (folder / f"{name}.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"case 'b' has channels \[0\]; expected _0000 to _0001 for a model of 2"):
        discover_cases(folder, n_channels=2)
    with pytest.raises(InputError, match=r"case 'a' has channels \[0, 1\]; expected _0000 to _0000 for a model of 1"):
        discover_cases(folder, n_channels=1)
    (folder / "a_0000.nii.gz").unlink()
    (folder / "b_0000.nii.gz").rename(folder / "a_0002.nii.gz")
    assert sorted(case.name for case in discover_cases(folder, n_channels=1)) == ["a_0001", "a_0002"]


def test_argument_errors_are_one_error_line_and_exit_1_and_help_still_exits_0(capsys):
    assert main(["train"]) == 1
    assert "mambaseg train: the following arguments are required: dataset" in _error(capsys)
    assert main(["no-such-command"]) == 1
    assert "invalid choice: 'no-such-command'" in _error(capsys)
    assert main(["plan", "some_dataset", "--gpu-memory", "lots"]) == 1
    assert "--gpu-memory: invalid float value: 'lots'" in _error(capsys)
    assert main(["evaluate", "a", "b", "--no-such-option"]) == 1
    assert "unrecognized arguments: --no-such-option" in _error(capsys)
    with pytest.raises(SystemExit) as exited:
        main(["train", "--help"])
    assert exited.value.code == 0 and "usage: mambaseg train" in capsys.readouterr().out


def test_a_failing_demo_stage_ends_with_error_lines_and_exit_1_not_a_traceback(tmp_path, capsys):
    missing = tmp_path / "no_dataset"
    assert main(["demo", "--dataset", str(missing), "--workspace", str(tmp_path / "ws")]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2 and str(missing.name) in lines[0] and "demo: `mambaseg check" in lines[1]


def test_the_export_model_usage_lines_of_the_cli_reference_parse_as_written(capsys):
    reference = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    lines = [line for line in reference.splitlines() if line.startswith("mambaseg export-model ")]
    assert len(lines) == 2
    values = {
        "DATASET": "Demo",
        "[--workspace W]": "--workspace ws",
        "[--runs RUN [RUN ...]]": "--runs 3d_fullres__a 3d_fullres__b",
        "[--runs RUN]": "--runs 3d_fullres__a",
        "[--folds F [F ...]]": "--folds 0 1",
        "[--checkpoint {final,best}]": "--checkpoint best",
    }
    for line in lines:
        for placeholder, value in values.items():
            line = line.replace(placeholder, value)
        args = parse_arguments(shlex.split(line)[1:])
        assert (args.dataset, args.folds, args.checkpoint) == ("Demo", ["0", "1"], "best")
        assert args.output in ("OUT.zip", "OUT.pt2") and args.runs[0] == "3d_fullres__a"
    with pytest.raises(SystemExit):
        main(["export-model", "--help"])
    assert "usage: mambaseg export-model DATASET OUTPUT [--workspace W]" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("budget", ["nan", "inf", "-1"])
def test_a_memory_budget_that_is_no_positive_number_names_the_option(dataset, tmp_path, capsys, budget):
    assert main(["plan", str(dataset), "--workspace", str(tmp_path / "ws"), "--gpu-memory", budget]) == 1
    assert f"--gpu-memory must be a positive number of GB, got {float(budget)}" in _error(capsys)


def test_a_text_file_as_pretrained_weights_is_named_as_not_a_checkpoint(dataset, tmp_path, capsys):
    notes = tmp_path / "weights.pth"
    notes.write_text("these are not weights\n" * 20)
    command = ["train", str(dataset), "--workspace", str(tmp_path / "ws"), "-c", "2d", "-n", "vmunet", "num_workers=0"]
    assert main([*command, "trainer=cpu_short", f"network.pretrained={notes}"]) == 1
    shown = _error(capsys)
    assert f"{notes} is not a PyTorch checkpoint" in shown and "KeyError: 101" not in shown.split("(")[0]


def test_a_batch_that_cannot_fit_the_device_is_refused_before_training(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mambaseg.training.run.device_memory_bytes", lambda device: 2**30)  # a 1 GB machine
    assert _train(dataset, tmp_path / "ws", "batch_size=4096") == 1
    shown = _error(capsys)
    assert "batch_size=4096 with patch" in shown and "by the planner's memory model, and cpu has 1.0 GB" in shown
    assert "lower batch_size (the plan's is" in shown
    fold = tmp_path / "ws" / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    assert not (fold / "config.yaml").exists()  # refused before anything of the run was written


def test_a_bad_warm_up_names_the_setting_to_change(dataset, tmp_path, capsys):
    preset = "trainer.optimizers.adamw_vmunet.scheduler"
    command = ["train", str(dataset), "--workspace", str(tmp_path / "ws"), "-c", "2d", "-n", "vmunet"]
    assert main([*command, "trainer=cpu_short", "num_workers=0", f"{preset}.warmup_steps=-3"]) == 1
    shown = _error(capsys)
    assert f"{preset}: total_steps must be >= 1 and warmup_steps >= 0, got 20, -3" in shown
