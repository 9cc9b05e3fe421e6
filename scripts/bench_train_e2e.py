"""End-to-end training throughput: ``mambaseg train`` against nnU-Net 2.8.1's trainer on the same plan, one run.

Where ``bench_train.py`` times ``train_step`` alone, this times what a user waits for: data loading and
augmentation in worker processes, training and validation iterations, and what each trainer does at an epoch's end
(logs, plot, checkpoints). Each tool trains fold 0 of Task04_Hippocampus, 3d_fullres, as a subprocess:

- ours: ``python -m mambaseg train DATASET -c 3d_fullres -n NETWORK -f 0 --workspace WS trainer.num_epochs=E
  trainer.iterations_per_epoch=I trainer.val_iterations=V batch_size=B num_workers=W``, with whatever precision,
  memory format and settings ``mambaseg train`` uses by default (after an untimed ``mambaseg preprocess``);
- nnU-Net: a small program in its venv (``/tmp/nnunet_venv``: ``pip install nnunetv2 torch==2.13.0``) that does what
  ``nnUNetv2_train 4 3d_fullres 0 -p PLANS -device cpu`` does (``nnUNetTrainer(...).run_training()``, then
  ``perform_actual_validation``), with the plan's batch size set to B, ``num_iterations_per_epoch`` I,
  ``num_val_iterations_per_epoch`` V and ``num_epochs`` E, ``nnUNet_n_proc_DA=W`` augmentation workers. It uses the
  data under ``--nnunet-root`` (``raw``, ``pre``, ``res``; shared with ``bench_train.py``), which this script writes
  when missing: ``nnUNetv2_convert_MSD_dataset``, ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (default plans,
  ``PlainConvUNet``) and ``nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM`` + ``nnUNetv2_preprocess`` (ResEnc M,
  ``ResidualEncoderUNet``: the topology of our ``unet_resenc`` plan).

``unet_resenc`` is compared with nnU-Net's ResEnc M plans, ``umamba_bot`` with its default plans; all have the patch
40 x 56 x 40 on this dataset. Both get the same torch threads (``OMP_NUM_THREADS``; nnU-Net's program also calls
``torch.set_num_threads``, as ``nnUNetv2_train`` does on the CPU).

Throughput, the same for both: training samples (iterations x batch) per second of steady-state epoch wall time,
``(E - 1) * I * B / (end of epoch E-1 - end of epoch 0)``, the epoch ends read from each tool's text log (ours: the
``epoch N:`` lines of the fold's ``training.log``; nnU-Net: the ``Epoch time:`` lines of its ``training_log_*.txt``).
The first epoch (start-up, worker warm-up) is left out; each interval holds one epoch's training and validation
iterations and one epoch end. The whole command's wall time (start-up and the final validation of the 42 held-out
cases included) is printed beside it.

Usage: python scripts/bench_train_e2e.py [--dataset $MAMBASEG_REAL_DATA/Task04_Hippocampus]
           [--networks unet_resenc umamba_bot] [--epochs 3] [--iterations 20] [--val-iterations 5]
           [--batch-size 2] [--workers 1] [--threads N]
           [--workspace WS] [--nnunet-root /tmp/nnu] [--keep] [--lock /tmp/cpu.lock]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mambaseg.data import load_dataset
from mambaseg.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_dataset import require_dataset, task04_default  # noqa: E402
from machine_info import cpu_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NNUNET_VENV = Path("/tmp/nnunet_venv")
CONFIGURATION = "3d_fullres"
# our network: (nnU-Net plans file it is compared with, that network's name, target ratio ours / nnU-Net)
REFERENCES = {
    "unet_resenc": ("nnUNetResEncUNetMPlans", "ResEnc M", 1.0),
    "umamba_bot": ("nnUNetPlans", "PlainConvUNet (default)", 0.8),
}
RESENC_PLANNER = "nnUNetPlannerResEncM"
# words of our training.log lines and config keys worth printing: how the run computed
SETTING_WORDS = re.compile(r"precision|autocast|bf16|bfloat16|channels_last|memory.format|threads|compile", re.I)

OUR_EPOCH_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ mambaseg\.training\.run_log: epoch (\d+): ")
NNUNET_EPOCH_TIME_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?): Epoch time: ")

NNUNET_PROGRAM = textwrap.dedent(
    """
    import os, sys, torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    dataset, plans_name = sys.argv[1:3]
    batch, epochs, iterations, val_iterations, threads = (int(a) for a in sys.argv[3:8])
    torch.set_num_threads(threads)  # what nnUNetv2_train does on the CPU, with all cores
    folder = os.path.join(os.fspath(nnUNet_preprocessed), dataset)
    plans = load_json(os.path.join(folder, plans_name + ".json"))
    plans["configurations"]["3d_fullres"]["batch_size"] = batch
    plans["continue_training"] = False
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")),
                            device=torch.device("cpu"))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = val_iterations
    print("LOG_FILE", trainer.log_file, flush=True)
    trainer.run_training()
    trainer.perform_actual_validation(False)
    print("PATCH", list(trainer.configuration_manager.patch_size), "BATCH", trainer.batch_size, flush=True)
    """
)


def our_epoch_ends(text: str) -> list[float]:
    """The times (POSIX seconds) at which our ``training.log`` logged epochs 0, 1, ..., in epoch order.

    An epoch logged twice (a resumed run) counts with its last line; the epochs must run from 0 without a gap.
    """
    ends: dict[int, float] = {}
    for line in text.splitlines():
        match = OUR_EPOCH_LINE.match(line)
        if match:
            ends[int(match[2])] = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    if sorted(ends) != list(range(len(ends))):
        raise ValueError(f"training.log: epochs {sorted(ends)} logged; expected 0 to {len(ends) - 1}")
    return [ends[epoch] for epoch in range(len(ends))]


def nnunet_epoch_ends(text: str) -> list[float]:
    """The times (POSIX seconds) of the ``Epoch time:`` lines of an nnU-Net ``training_log_*.txt``, in order."""
    ends = []
    for line in text.splitlines():
        match = NNUNET_EPOCH_TIME_LINE.match(line)
        if match:
            stamp = match[1] if "." in match[1] else match[1] + ".0"  # str(datetime) drops a zero microsecond
            ends.append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp())
    return ends


def steady_samples_per_second(ends: list[float], iterations: int, batch: int) -> float:
    """Training samples per second from the end of the first epoch to the end of the last one.

    Args:
        ends: the epochs' end times in seconds, in order.
        iterations: training iterations per epoch.
        batch: samples per iteration.
    """
    if len(ends) < 2:
        raise ValueError(f"{len(ends)} epoch(s) logged: the steady state needs at least 2 (the first is skipped)")
    return (len(ends) - 1) * iterations * batch / (ends[-1] - ends[0])


@dataclass
class Result:
    tool: str
    network: str
    samples_per_second: float
    epoch_seconds: list[float]
    wall_seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    epochs: int
    iterations: int
    val_iterations: int
    batch: int
    workers: int
    threads: int


@contextlib.contextmanager
def cpu_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (as ``flock PATH command`` does) while timing; nothing when None."""
    if path is None:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_logged(command: list[str], env: dict[str, str], log_file: Path, lock: Path | None) -> float:
    """Runs ``command`` (under the lock), its output to ``log_file``; returns its wall time; raises if it fails."""
    with cpu_lock(lock), log_file.open("w") as out:
        start = time.perf_counter()
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
        elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}; see {log_file}")
    return elapsed


def nnunet_dataset_name(dataset: Path) -> tuple[int, str]:
    """(id, nnU-Net's name) of a Decathlon ``TaskNN_Name`` folder: ``Task04_Hippocampus``: 4, ``Dataset004_...``."""
    match = re.fullmatch(r"Task(\d+)_(\w+)", dataset.name)
    if match is None:
        raise ValueError(f"{dataset}: nnU-Net's converter needs a TaskNN_Name folder name")
    return int(match[1]), f"Dataset{int(match[1]):03d}_{match[2]}"


def nnunet_env(root: Path, settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env |= {
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "pre"),
        "nnUNet_results": str(root / "res"),
    }
    env |= {"nnUNet_n_proc_DA": str(settings.workers), "nnUNet_def_n_proc": str(max(settings.workers, 1))}
    return env | {"OMP_NUM_THREADS": str(settings.threads)}


def prepare_nnunet(dataset: Path, root: Path, settings: Settings, lock: Path | None) -> None:
    """Converts and preprocesses the dataset for nnU-Net's default and ResEnc M plans, where not done yet."""
    dataset_id, name = nnunet_dataset_name(dataset)
    env = nnunet_env(root, settings)
    tool = NNUNET_VENV / "bin"
    workers = str(max(settings.workers, 1))
    if not (root / "raw" / name / "dataset.json").is_file():
        source = Path(tempfile.mkdtemp(prefix="bench_e2e_msd_")) / dataset.name
        source.mkdir()
        for entry in ("dataset.json", "imagesTr", "labelsTr"):
            (source / entry).symlink_to(dataset.resolve() / entry)
        (source / "imagesTs").mkdir()  # the converter wants one
        for folder in ("raw", "pre", "res"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        command = [str(tool / "nnUNetv2_convert_MSD_dataset"), "-i", str(source), "-np", workers]
        run_logged(command, env, root / "convert.log", lock)
        shutil.rmtree(source.parent)
    pre = root / "pre" / name
    if not (pre / "nnUNetPlans_3d_fullres").is_dir():
        command = [str(tool / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION]
        run_logged(command + ["-npfp", workers, "-np", workers], env, root / "plan_default.log", lock)
    if not (pre / "nnUNetResEncUNetMPlans_3d_fullres").is_dir():
        command = [str(tool / "nnUNetv2_plan_experiment"), "-d", str(dataset_id), "-pl", RESENC_PLANNER]
        run_logged(command, env, root / "plan_resenc.log", lock)
        command = [str(tool / "nnUNetv2_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION]
        command += ["-plans_name", "nnUNetResEncUNetMPlans", "-np", workers]
        run_logged(command, env, root / "preprocess_resenc.log", lock)


def run_nnunet(dataset: Path, root: Path, plans: str, label: str, settings: Settings, lock: Path | None) -> Result:
    _, name = nnunet_dataset_name(dataset)
    command = [str(NNUNET_VENV / "bin" / "python"), "-c", NNUNET_PROGRAM, name, plans]
    command += [str(v) for v in (settings.batch, settings.epochs, settings.iterations, settings.val_iterations)]
    command.append(str(settings.threads))
    output = root / f"bench_e2e_{plans}.log"
    wall = run_logged(command, nnunet_env(root, settings), output, lock)
    lines = output.read_text(errors="replace").splitlines()
    log_files = [line.split(" ", 1)[1] for line in lines if line.startswith("LOG_FILE ")]
    if not log_files:
        raise RuntimeError(f"nnU-Net's program printed no LOG_FILE line; see {output}")
    ends = nnunet_epoch_ends(Path(log_files[0]).read_text())
    notes = [line for line in lines if line.startswith("PATCH ")]
    return _result(f"nnU-Net 2.8.1 {label}", plans, ends, wall, settings, notes)


def run_ours(dataset: Path, workspace: Path, network: str, settings: Settings, logs: Path, lock: Path | None) -> Result:
    fold = Workspace(workspace).dataset(load_dataset(dataset).name).run(CONFIGURATION, network).fold(0)
    if fold.folder.exists():
        raise ValueError(f"{fold.folder}: exists; give a --workspace without this run (its log would be appended to)")
    command = [sys.executable, "-m", "mambaseg", "train", str(dataset), "-c", CONFIGURATION, "-n", network, "-f", "0"]
    command += ["--workspace", str(workspace), f"trainer.num_epochs={settings.epochs}"]
    command += [
        f"trainer.iterations_per_epoch={settings.iterations}",
        f"trainer.val_iterations={settings.val_iterations}",
    ]
    command += [f"batch_size={settings.batch}", f"num_workers={settings.workers}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(settings.threads)}
    wall = run_logged(command, env, logs / f"mambaseg_{network}.log", lock)
    log_text = fold.logs.log.read_text()
    notes = [line.split(": ", 1)[-1] for line in log_text.splitlines() if SETTING_WORDS.search(line)]
    if fold.config.is_file():
        notes += [line.strip() for line in fold.config.read_text().splitlines() if SETTING_WORDS.search(line)]
    return _result("mambaseg", network, our_epoch_ends(log_text), wall, settings, notes)


def _result(tool: str, network: str, ends: list[float], wall: float, settings: Settings, notes: list[str]) -> Result:
    if len(ends) != settings.epochs:
        raise RuntimeError(f"{tool} {network}: {len(ends)} epochs logged, {settings.epochs} run")
    rate = steady_samples_per_second(ends, settings.iterations, settings.batch)
    return Result(tool, network, rate, [b - a for a, b in zip(ends, ends[1:], strict=False)], wall, notes)


def table(pairs: list[tuple[Result, Result | None]]) -> str:
    lines = [
        "| tool | network | samples / s (steady) | s / epoch (steady) | whole command (s) | ratio ours / nnU-Net "
        "| target |",
        "|---|---|---|---|---|---|---|",
    ]
    for ours, theirs in pairs:
        target = REFERENCES[ours.network][2]
        ratio = f"**{ours.samples_per_second / theirs.samples_per_second:.2f}**" if theirs else "—"
        for result in (ours, theirs):
            if result is None:
                continue
            epoch = sum(result.epoch_seconds) / len(result.epoch_seconds)
            mine = result is ours
            lines.append(
                f"| {result.tool} | {result.network} | {result.samples_per_second:.2f} | {epoch:.1f} | "
                f"{result.wall_seconds:.0f} | {ratio if mine else '1.00'} | {f'≥ {target:.1f}' if mine else ''} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        type=Path,
        default=task04_default(),
        help="Decathlon TaskNN_Name folder (default: $MAMBASEG_REAL_DATA/Task04_Hippocampus)",
    )
    parser.add_argument("--networks", nargs="+", choices=sorted(REFERENCES), default=list(REFERENCES))
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    parser.add_argument("--iterations", type=int, default=20, help="training iterations per epoch")
    parser.add_argument("--val-iterations", type=int, default=5, help="validation iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="data-augmentation worker processes, both tools")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--threads", type=int, default=usable, help="torch threads, both tools (default: usable CPUs)")
    parser.add_argument("--workspace", type=Path, help="our workspace (default: a temporary folder)")
    parser.add_argument("--nnunet-root", type=Path, default=Path("/tmp/nnu"), help="nnU-Net's raw/pre/res folders")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, workspace)")
    parser.add_argument("--lock", type=Path, help="hold flock on this file while each tool runs (a shared machine)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first epoch is not timed)")
    args.dataset = require_dataset(args.dataset)
    if not args.dataset.is_dir():
        print(f"skipped: dataset folder {args.dataset} not found (give it with --dataset)")
        return 0
    settings = Settings(args.epochs, args.iterations, args.val_iterations, args.batch_size, args.workers, args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_train_e2e_"))  # our command's output, and the default workspace
    workspace = args.workspace or work / "workspace"
    with_nnunet = (NNUNET_VENV / "bin" / "nnUNetv2_plan_and_preprocess").exists()
    finished = False
    try:
        command = [sys.executable, "-m", "mambaseg", "preprocess", str(args.dataset), "--workspace", str(workspace)]
        command += ["-c", CONFIGURATION, "--workers", str(max(args.workers, 1))]
        run_logged(command, dict(os.environ), work / "mambaseg_preprocess.log", args.lock)
        if with_nnunet:
            prepare_nnunet(args.dataset, args.nnunet_root, settings, args.lock)
        else:
            print(f"nnU-Net skipped: {NNUNET_VENV} has no nnUNetv2_plan_and_preprocess")
        pairs = []
        for network in args.networks:
            ours = run_ours(args.dataset, workspace, network, settings, work, args.lock)
            print(f"mambaseg {network}: {ours.samples_per_second:.2f} samples/s, wall {ours.wall_seconds:.0f} s")
            theirs = None
            if with_nnunet:
                plans, label, _ = REFERENCES[network]
                theirs = run_nnunet(args.dataset, args.nnunet_root, plans, label, settings, args.lock)
                print(f"nnU-Net {label}: {theirs.samples_per_second:.2f} samples/s, wall {theirs.wall_seconds:.0f} s")
            pairs.append((ours, theirs))
        finished = True
    finally:
        if args.keep or not finished:
            print(f"kept: {work} (our commands' output{'' if args.workspace else ', the workspace'})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{cpu_summary()}")
    print(
        f"{args.dataset.name}, {CONFIGURATION}, fold 0; {args.epochs} epochs x {args.iterations} iterations "
        f"(+ {args.val_iterations} validation iterations) x batch {args.batch_size}; {args.threads} torch threads, "
        f"{args.workers} augmentation worker(s) per tool; steady state: epochs 1 to {args.epochs - 1}\n"
    )
    print(table(pairs))
    for ours, theirs in pairs:
        for result in (ours, theirs):
            if result is not None:
                seconds = ", ".join(f"{s:.1f}" for s in result.epoch_seconds)
                print(f"\n{result.tool} {result.network}: epoch-to-epoch seconds {seconds}")
                for note in dict.fromkeys(result.notes):
                    print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
