"""`mambaseg benchmark` through the CLI on a tiny dataset: the report against the runs it made, kill and resume,
refusals."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mambaseg.cli.main import main
from mambaseg.workspace.benchmark import BenchmarkError, Budget, config_differences
from tests.data.synthetic import write_nnunet_dataset

NETWORKS = ["--networks", "umamba_bot_nomamba"]  # the baseline unet_resenc joins them
BUDGET = ["--iterations", "2", "--epochs", "2", "--val-iterations", "1"]
OVERRIDES = ["trainer=cpu_short", "num_workers=0"]
RUNS = "Synthetic/runs"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_nnunet_dataset(
        tmp_path_factory.mktemp("raw") / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1)
    )


def benchmark_args(dataset: Path, workspace: Path, *budget: str) -> list[str]:
    return [
        "benchmark",
        str(dataset),
        "--workspace",
        str(workspace),
        *NETWORKS,
        "--folds",
        "0",
        "1",
        *budget,
        *OVERRIDES,
    ]


def processes_naming(text: str) -> list[int]:
    """The pids of running processes whose command line contains ``text`` (Linux)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.2)


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the killed benchmark's children in /proc")
def test_benchmark_is_killed_resumes_without_retraining_and_reports_the_runs_scores(dataset, tmp_path, capsys):
    workspace = tmp_path / "ws"
    baseline_run = workspace / RUNS / "3d_fullres__unet_resenc" / "fold_0"
    second_run = workspace / RUNS / "3d_fullres__umamba_bot_nomamba" / "fold_0"
    command = [sys.executable, "-m", "mambaseg", *benchmark_args(dataset, workspace, *BUDGET)]
    with (tmp_path / "first_attempt.log").open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: (second_run / "config.yaml").is_file(), 600, "the second run to start")
        finally:
            process.kill()  # SIGKILL: no clean-up in the benchmark process
            process.wait()
    wait_for(lambda: not processes_naming(str(workspace)), 60, "the killed benchmark's training process to end")
    assert (baseline_run / "validation" / "summary.json").is_file()
    assert not (second_run / "checkpoint_final.pt").exists()
    finished = (baseline_run / "checkpoint_final.pt").stat().st_mtime_ns
    log_size = (baseline_run / "training.log").stat().st_size

    assert main(benchmark_args(dataset, workspace, *BUDGET)) == 0
    assert (baseline_run / "checkpoint_final.pt").stat().st_mtime_ns == finished  # reused, not trained again
    assert (baseline_run / "training.log").stat().st_size == log_size
    verdict = capsys.readouterr().out

    report = workspace / "Synthetic" / "benchmarks" / "3d_fullres"
    results = json.loads((report / "results.json").read_text())
    assert results["schema_version"] == 1 and results["contestants"] == ["unet_resenc", "umamba_bot_nomamba"]
    assert results["verdict"].split(";")[0] in " ".join(verdict.split())
    rows = 0
    for network in results["contestants"]:
        dice = []
        for fold in ("0", "1"):
            summary_file = workspace / RUNS / f"3d_fullres__{network}" / f"fold_{fold}" / "validation" / "summary.json"
            summary = json.loads(summary_file.read_text())
            dice += [case["metrics"]["1"]["dice"] for case in summary["cases"].values()]
            rows += len(summary["cases"])
        scores = results["scores"][network]
        assert scores["classes"]["foreground"]["dice"]["mean"] == pytest.approx(mean(dice))
        assert scores["case_mean"]["dice"]["mean"] == pytest.approx(mean(dice))  # one class: the case mean is it
        low, high = scores["case_mean"]["dice"]["low"], scores["case_mean"]["dice"]["high"]
        assert low <= mean(dice) <= high
        costs = results["costs"][network]["folds"]
        assert sorted(costs) == ["0", "1"]
        assert all(c["samples"] == 2 * 1 * 2 and c["epochs"] == 2 for c in costs.values())  # 2 epochs x 1 it x batch 2
        assert all(c["peak_memory_mb"] > 0 and c["inference_seconds_per_case"] > 0 for c in costs.values())
    comparison = results["comparisons"]["umamba_bot_nomamba"]
    assert comparison["cases"] == 2 and comparison["n"] <= 2 and comparison["baseline"] == "unet_resenc"
    assert len((report / "results.csv").read_text().strip().splitlines()) == 1 + rows  # header + a row per case
    html = (report / "report.html").read_text()
    assert "http" not in html and html.count("data:image/png;base64,") == 1

    # a finished run trained with another budget is refused, naming it and the setting, before anything trains
    assert main(benchmark_args(dataset, workspace, "--iterations", "4", "--epochs", "2")) == 1
    error = " ".join(capsys.readouterr().out.split())
    assert str(baseline_run) in error.replace(" ", "") or "3d_fullres__unet_resenc" in error
    assert "trainer.iterations_per_epoch: 1 -> 2" in error
    assert (baseline_run / "checkpoint_final.pt").stat().st_mtime_ns == finished


def test_unknown_network_and_missing_nnunet_are_refused_before_anything_runs(dataset, tmp_path, capsys):
    workspace = tmp_path / "ws"
    args = ["benchmark", str(dataset), "--workspace", str(workspace), "--iterations", "2"]
    assert main([*args, "--networks", "no_such_net"]) == 1
    assert "unknown network 'no_such_net'" in capsys.readouterr().out
    missing = tmp_path / "no_python"
    assert main([*args, "--networks", "umamba_bot", "--with-nnunet", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().out.replace("\n", "")
    assert not workspace.exists()  # nothing planned, preprocessed or trained


def test_budget_spreads_iterations_over_epochs_and_refuses_ambiguity():
    budget = Budget(iterations=150, minutes=None, epochs=10, val_iterations=2)
    assert budget.iterations_per_epoch == 15
    assert budget.describe(7)["samples"] == 1050
    assert "trainer.iterations_per_epoch=15" in budget.overrides(7) and "batch_size=7" in budget.overrides(7)
    assert "trainer.time_budget_minutes=3.0" in Budget(None, 3.0, 10, 2).overrides(7)
    with pytest.raises(BenchmarkError, match="either iterations or minutes"):
        Budget(150, 3.0, 10, 2)
    with pytest.raises(BenchmarkError, match="budget_minutes"):
        Budget(None, float("nan"), 10, 2)


def test_config_differences_name_each_changed_key_and_ignore_the_recorded_precision():
    saved = {"seed": 1, "trainer": {"num_epochs": 2, "lr": 0.1}, "precision": {"autocast": None}}
    assert config_differences(saved, {"seed": 1, "trainer": {"num_epochs": 2, "lr": 0.1}}) == []
    assert config_differences(saved, {"seed": 2, "trainer": {"num_epochs": 2}}) == [
        "seed: 1 -> 2",
        "trainer.lr: 0.1 -> None",
    ]


NNUNET_PYTHON = os.environ.get("MAMBASEG_NNUNET_PYTHON")


@pytest.mark.slow
@pytest.mark.nnunet
@pytest.mark.skipif(
    not NNUNET_PYTHON, reason="MAMBASEG_NNUNET_PYTHON names no nnU-Net python (scripts/setup_nnunet.sh installs one)"
)
def test_nnunet_enters_the_benchmark_on_the_same_folds_and_cases(dataset, tmp_path, capsys):
    workspace = tmp_path / "ws"
    args = ["benchmark", str(dataset), "--workspace", str(workspace), *NETWORKS, "--folds", "0", *BUDGET]
    assert main([*args, "--with-nnunet", NNUNET_PYTHON, *OVERRIDES]) == 0, capsys.readouterr().out
    results = json.loads((workspace / "Synthetic" / "benchmarks" / "3d_fullres" / "results.json").read_text())
    assert results["contestants"] == ["unet_resenc", "umamba_bot_nomamba", "nnunet"]
    ours = json.loads(
        (workspace / RUNS / "3d_fullres__unet_resenc" / "fold_0" / "validation" / "summary.json").read_text()
    )
    cases = {(row["fold"], row["case"]) for row in results["case_scores"] if row["contestant"] == "nnunet"}
    assert cases == {("0", name) for name in ours["cases"]}  # the same held-out cases
    costs = results["costs"]["nnunet"]["folds"]["0"]
    assert costs["samples"] == 2 * 1 * 2 and costs["batch_size"] == 2  # the benchmark's epochs x iterations x batch
    assert results["scores"]["nnunet"]["classes"]["foreground"]["dice"]["n"] == len(ours["cases"])
    assert "nnunet" in results["comparisons"]
