"""`mambaseg export-model DATASET MODEL.pt2` then `predict -m MODEL.pt2`, and the program in plain PyTorch.

Two folds of a tiny ``umamba_bot`` run (so that the program holds the selective-scan op) are trained and ranked
by find-best; the program, predicted with from a fresh workspace, gives the masks of ``predict -d`` voxel for
voxel; a Python with only ``torch`` and ``mambaseg_kernels`` on its path loads it and gives the eager networks'
logits; foreign, changed and other-version files are refused naming the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mambaseg.cli.main import main
from mambaseg.inference.runs import load_model
from mambaseg.io import read_image
from mambaseg.workspace.export import run_entry
from mambaseg.workspace.models import find_run
from mambaseg.workspace.program import RECORD, load_program
from tests.data.synthetic import write_nnunet_dataset

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"background": 0, "left": 1, "right": 2}
TRAIN = ["-n", "umamba_bot", "trainer=cpu_short", "trainer.num_epochs=1", "trainer.iterations_per_epoch=2"]
TRAIN += ["trainer.val_iterations=1", "num_workers=0"]
FAST = ["--no-mirroring", "--device", "cpu"]
CASES = ("case_005", "case_006")
RUN = "3d_fullres__umamba_bot"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(workspace with folds 0 and 1 of a umamba_bot run and find-best's instructions, test images, program)."""
    root = tmp_path_factory.mktemp("program")
    dataset = write_nnunet_dataset(
        root / "Dataset001_Tiny", n_cases=5, n_test=2, shape=(8, 12, 12), spacing=(1, 1, 1), labels=LABELS
    )
    ws = root / "ws"
    for fold in ("0", "1"):
        assert main(["train", str(dataset), "--workspace", str(ws), "-c", "3d_fullres", "-f", fold, *TRAIN]) == 0
    assert main(["find-best", str(dataset), "--workspace", str(ws), "--folds", "0", "1"]) == 0
    program = root / "model.pt2"
    assert main(["export-model", "Synthetic", str(program), "--workspace", str(ws)]) == 0
    return ws, dataset / "imagesTs", program


def predict(source: Path, out: Path, *model: str) -> int:
    return main(["predict", "-i", str(source), "-o", str(out), *model, *FAST])


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {case: read_image(folder / f"{case}.nii.gz").array for case in CASES}


def _save_with_record(program: torch.export.ExportedProgram, path: Path, record: dict) -> None:
    torch.export.save(program, path, extra_files={RECORD: json.dumps(record)})


@pytest.mark.slow
def test_a_program_predicts_in_a_fresh_workspace_what_the_run_folders_predict(trained, tmp_path, capsys):
    ws, images, program = trained
    loaded, record = load_program(program)
    scans = [n for n in loaded.graph.nodes if n.target is torch.ops.mambaseg.selective_scan.default]
    assert len(scans) == 2  # one Mamba layer per fold's network
    instructions = json.loads((ws / "Synthetic" / "inference_instructions.json").read_text())
    assert record["runs"] == [{"run": f"Synthetic/runs/{RUN}", "folds": ["0", "1"]}]
    assert record["source"] == "inference_instructions" and record["postprocessing"] == instructions["postprocessing"]
    assert record["num_classes"] == 3 and record["mirror_axes"] == [0, 1, 2] and record["format_version"] == 2
    assert record["device"] == "cpu"

    fresh = tmp_path / "hospital" / "ws"
    assert predict(images, tmp_path / "from_program", "-m", str(program), "--workspace", str(fresh)) == 0
    # a program runs in float32 (its graph asserts the dtypes it was exported in); the run folders too, to compare
    float32 = ["--precision", "float32"]
    assert predict(images, tmp_path / "from_runs", "-d", "Synthetic", "--workspace", str(ws), *float32) == 0
    from_program, from_runs = masks(tmp_path / "from_program"), masks(tmp_path / "from_runs")
    for case in CASES:
        assert np.array_equal(from_program[case], from_runs[case]), case
    assert not fresh.exists()  # a program needs no workspace
    # with test-time mirroring too, and one fold named, against the run folder
    one = tmp_path / "fold1.pt2"
    args = ["--workspace", str(ws), "--runs", RUN, "--folds", "1"]
    assert main(["export-model", "Synthetic", str(one), *args]) == 0
    assert f"exported Synthetic/runs/{RUN}: folds 1 (final) as a torch.export program, batch dynamic" in (
        capsys.readouterr().out.replace("\n", "")
    )
    mirrored = ["predict", "-i", str(images), "--device", "cpu"]
    assert main([*mirrored, "-o", str(tmp_path / "one"), "-m", str(one)]) == 0
    run_dir = ws / "Synthetic" / "runs" / RUN
    assert main([*mirrored, "-o", str(tmp_path / "run"), "-m", str(run_dir), "-f", "1", *float32]) == 0
    for case, mask in masks(tmp_path / "one").items():
        assert np.array_equal(mask, masks(tmp_path / "run")[case]), case
    # a reduced precision asked for is refused (auto runs a program in float32)
    capsys.readouterr()
    assert main([*mirrored, "-o", str(tmp_path / "bf16"), "-m", str(one), "--precision", "bfloat16"]) == 1
    assert "error: --precision bfloat16" in capsys.readouterr().out.replace("\n", "")
    assert not (tmp_path / "bf16").exists() or not any((tmp_path / "bf16").iterdir())


WITHOUT_MAMBASEG = """
import sys
import torch
import mambaseg_kernels
program = torch.export.load(sys.argv[1])
patch = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(program.module()(patch), sys.argv[3])
assert "mambaseg" not in sys.modules, sorted(m for m in sys.modules if m.startswith("mambaseg"))
"""


@pytest.mark.slow
def test_plain_pytorch_with_only_the_kernels_package_runs_the_program(trained, tmp_path):
    ws, _, program = trained
    run = find_run(ws / "Synthetic" / "runs" / RUN, None, "final")
    assert run_entry("Synthetic", run) == f"Synthetic/runs/{RUN}"
    torch.manual_seed(0)
    patch = torch.randn(3, 1, *run.plan.patch_size)  # a batch of 3, not the batch of 2 it was traced with
    with torch.no_grad():
        expected = torch.cat([load_model(run, path, torch.device("cpu"))(patch) for path in run.checkpoints], 1)
    torch.save(patch, tmp_path / "patch.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "kernels")}
    files = [str(program), str(tmp_path / "patch.pt"), str(tmp_path / "out.pt")]
    command = [sys.executable, "-c", WITHOUT_MAMBASEG, *files]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    logits = torch.load(tmp_path / "out.pt")
    assert logits.shape == (3, 6, *run.plan.patch_size)  # 2 folds x 3 classes
    torch.testing.assert_close(logits, expected)


@pytest.mark.slow
def test_foreign_changed_and_other_version_programs_are_refused(trained, tmp_path, capsys):
    ws, images, program = trained
    out = tmp_path / "out"
    loaded, record = load_program(program)

    foreign = tmp_path / "foreign.pt2"
    torch.export.save(torch.export.export(torch.nn.Conv3d(1, 3, 1), (torch.zeros(1, 1, 4, 4, 4),)), foreign)
    assert predict(images, out, "-m", str(foreign)) == 1
    assert f"{foreign}: holds no mambaseg.json; not a program written by mambaseg export-model" in (
        capsys.readouterr().out.replace("\n", "")
    )

    other = tmp_path / "other.pt2"
    _save_with_record(loaded, other, {**record, "format_version": 3})
    assert predict(images, out, "-m", str(other)) == 1
    assert f"{other}: format_version 3 is not the supported 2" in capsys.readouterr().out.replace("\n", "")

    major = tmp_path / "major.pt2"
    _save_with_record(loaded, major, {**record, "mambaseg_version": "1.0.0"})
    assert predict(images, out, "-m", str(major)) == 1
    assert "exported by mambaseg 1.0.0, incompatible" in capsys.readouterr().out.replace("\n", "")

    # every part that changes a prediction is covered by the digest: the record's fields, the graph, the weights
    steps = [{"op": "keep_largest_component", "labels": [1], "jointly": True}]
    plans = json.loads(json.dumps(record["plans"]))
    plans["configurations"][record["configuration"]]["normalization"][0]["params"]["mean"] = 1.0
    edits = {
        "postprocessing": {**record, "postprocessing": steps},
        "plans": {**record, "plans": plans},
        "mirror_axes": {**record, "mirror_axes": [0]},
    }
    for field, edited in edits.items():
        changed = tmp_path / f"changed_{field}.pt2"
        _save_with_record(loaded, changed, edited)
        assert predict(images, out, "-m", str(changed)) == 1, field
        shown = capsys.readouterr().out.replace("\n", "")
        assert f"{changed}: its mambaseg.json, graph or weights differ from the digest" in shown, field
    other_graph = tmp_path / "other_graph.pt2"
    foreign_program = torch.export.load(foreign)
    _save_with_record(foreign_program, other_graph, record)
    assert predict(images, out, "-m", str(other_graph)) == 1
    assert "graph or weights differ from the digest" in capsys.readouterr().out.replace("\n", "")
    changed = tmp_path / "changed.pt2"
    name = sorted(loaded.state_dict)[0]
    with torch.no_grad():
        loaded.state_dict[name].add_(1.0)
    _save_with_record(loaded, changed, record)
    assert predict(images, out, "-m", str(changed)) == 1
    assert f"{changed}: its mambaseg.json, graph or weights differ from the digest" in (
        capsys.readouterr().out.replace("\n", "")
    )

    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a program")
    assert predict(images, out, "-m", str(garbage)) == 1
    assert f"{garbage}: not a torch.export program" in capsys.readouterr().out.replace("\n", "")

    assert predict(images, out, "-m", str(program), "-f", "0") == 1
    assert f"folds 0: {program} predicts with the folds it holds" in capsys.readouterr().out.replace("\n", "")
    assert predict(images, out, "-m", str(program), "--checkpoint", "best") == 1
    assert "holds the final checkpoints, not checkpoint 'best'" in capsys.readouterr().out.replace("\n", "")
    assert not out.exists()

    assert main(["export-model", "Synthetic", str(tmp_path / "x.pt2"), "--workspace", str(ws), "--folds", "0"]) == 1
    assert "--folds 0: the inference instructions choose them; give --runs too" in capsys.readouterr().out


@pytest.mark.slow
def test_a_program_runs_on_the_cpu_under_auto_where_cuda_is_available(trained, tmp_path, monkeypatch, capsys, caplog):
    ws, images, program = trained
    assert predict(images, tmp_path / "plain", "-m", str(program)) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine, as far as device choice goes
    caplog.set_level("INFO")
    auto = ["predict", "-i", str(images), "-o", str(tmp_path / "auto"), "-m", str(program), "--no-mirroring"]
    assert main(auto) == 0  # --device auto (the default)
    assert f"{program} was exported for the cpu: predicting there" in caplog.text
    for case, mask in masks(tmp_path / "auto").items():
        assert np.array_equal(mask, masks(tmp_path / "plain")[case]), case
    capsys.readouterr()
    assert (
        main(["predict", "-i", str(images), "-o", str(tmp_path / "cuda"), "-m", str(program), "--device", "cuda"]) == 1
    )
    assert f"{program} was exported for the cpu and runs there" in capsys.readouterr().out.replace("\n", "")
    assert not (tmp_path / "cuda").exists()
