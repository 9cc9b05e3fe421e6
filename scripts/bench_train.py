"""Training speed: seconds per iteration of our trainer against nnU-Net 2.8.1's, same patch and batch, one run.

Ours: ``Trainer.train_step`` on batches from ``PatchBatches`` (nnU-Net augmentation) of the
preprocessed Task04_Hippocampus, for each network given. nnU-Net: ``nnUNetTrainer.train_step`` on
``next(dataloader_train)`` with the 3d_fullres plan's batch size set to ours, run in its own venv
(``/tmp/nnunet_venv``: ``pip install torch==2.13.0`` then ``pip install nnunetv2 torch==2.13.0``),
on the data its ``nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres`` wrote under ``--nnunet-root``.
Both time ``train_step`` alone (forward, loss, backward, optimiser step) on a batch built before the clock
starts, as background workers build it in training; after warm-up iterations, median of the timed ones, on the
CPU with all threads. Ours runs twice per network: float32 (``trainer.amp=false``) and the default ``trainer.amp=true``
(bf16 autocast with channels_last_3d on CPUs with native bf16, ``mambaseg.training.step``; the same float32 run
where the CPU lacks it, so it is then skipped); nnU-Net's trainer is float32 on the CPU. nnU-Net runs twice:
with its default plans (``PlainConvUNet``) and its ResEnc M plans
(``ResidualEncoderUNet``, the topology of our ``unet_resenc`` plan), both with the same patch.

Usage: python scripts/bench_train.py --workspace WS [--dataset $MAMBASEG_REAL_DATA/Task04_Hippocampus]
           [--networks umamba_bot unet_resenc] [--batch-size 2] [--iterations 10] [--nnunet-root /tmp/nnu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mambaseg.data import load_dataset
from mambaseg.planning.fingerprint import Fingerprint
from mambaseg.planning.model import build_network, mirror_axes_for
from mambaseg.planning.planner import plan_experiment
from mambaseg.planning.plans import load_plans
from mambaseg.training.losses import build_training_loss
from mambaseg.training.optim import build_optimization, optimizer_config_for
from mambaseg.training.patches import PatchBatches
from mambaseg.training.setup import count_outputs
from mambaseg.training.step import build_grad_scaler, precision_record, training_memory_format, uses_amp
from mambaseg.training.trainer import LoopSettings, Trainer
from mambaseg.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_dataset import require_dataset, task04_default  # noqa: E402
from machine_info import cpu_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NNUNET_PYTHON = Path("/tmp/nnunet_venv/bin/python")
# nnU-Net's plans files to time its trainer with, and the network each gives
NNUNET_PLANS = {"nnUNetPlans": "PlainConvUNet", "nnUNetResEncUNetMPlans": "ResEnc M"}

NNUNET_PROGRAM = textwrap.dedent(
    """
    import os, statistics, sys, time, torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    batch, warmup, iterations = (int(a) for a in sys.argv[1:4])
    folder = os.path.join(os.fspath(nnUNet_preprocessed), "Dataset004_Hippocampus")
    plans = load_json(folder + "/" + sys.argv[4] + ".json")
    plans["configurations"]["3d_fullres"]["batch_size"] = batch
    plans["continue_training"] = False  # what run_training.py adds before building the trainer
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, load_json(folder + "/dataset.json"), device=torch.device("cpu"))
    trainer.on_train_start()
    times = []
    for i in range(warmup + iterations):
        batch = next(trainer.dataloader_train)
        start = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - start)
    print("PATCH", trainer.configuration_manager.patch_size, "BATCH", trainer.batch_size)
    print("SECONDS_PER_ITERATION", statistics.median(times[warmup:]))
    trainer.on_train_end()
    """
)


def ours(
    workspace: Path, dataset_path: Path, network: str, batch: int, warmup: int, iterations: int, amp: bool
) -> float:
    dataset = load_dataset(dataset_path)
    files = Workspace(workspace).dataset(dataset.name)
    plans = load_plans(files.plans)
    plan = plans.configurations["3d_fullres"]
    if plan.network != network:
        plan = plan_experiment(Fingerprint.load(files.fingerprint), network=network).configurations["3d_fullres"]
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "trainer" / "default.yaml"))
    augmentation = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "augmentation" / "nnunet.yaml"))
    torch.manual_seed(0)
    device = torch.device("cpu")
    memory_format = training_memory_format(device, amp, len(plan.patch_size))
    model = build_network(plans, plan).to(memory_format=memory_format)
    outputs = count_outputs(model, len(plans.channel_names), plan.patch_size)
    loss = build_training_loss(plans.labels, None, False, [1 / 2**i for i in range(outputs)] if outputs else None)
    optimizer, scheduler = build_optimization(model, optimizer_config_for(network, config), 1000)
    batches = PatchBatches(
        files.preprocessed("3d_fullres"),
        [c.name for c in dataset.cases],
        plan.patch_size,
        batch,
        augmentation=augmentation,
        mirror_axes=mirror_axes_for(plan),
    )
    settings = LoopSettings(1, warmup + iterations, 0, amp=amp)
    scaler = build_grad_scaler(device, amp)
    trainer = Trainer(
        model, loss, optimizer, scheduler, None, None, settings, device, scaler, memory_format=memory_format
    )
    model.train()
    times = []
    for step in range(warmup + iterations):
        batch = batches[step]  # built before the clock starts: in training, background workers build it
        start = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def nnunet(root: Path, plans: str, batch: int, warmup: int, iterations: int) -> float | None:
    """Seconds per iteration of ``nnUNetTrainer`` with the plans file ``plans`` (its name without ``.json``)."""
    if not NNUNET_PYTHON.exists() or not (root / "pre" / "Dataset004_Hippocampus" / f"{plans}.json").exists():
        print(f"nnU-Net: skipped ({NNUNET_PYTHON} or its preprocessed data under {root} is missing)")
        return None
    env = {
        **os.environ,
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "pre"),
        "nnUNet_results": str(root / "res"),
        "nnUNet_n_proc_DA": "2",
    }
    if not (root / "pre" / "Dataset004_Hippocampus" / "nnUNetPlans_3d_fullres").is_dir():
        preprocess = [str(NNUNET_PYTHON.parent / "nnUNetv2_preprocess"), "-d", "4", "-c", "3d_fullres", "-np", "2"]
        subprocess.run(preprocess, env=env, check=True, capture_output=True)
    command = [str(NNUNET_PYTHON), "-c", NNUNET_PROGRAM, str(batch), str(warmup), str(iterations), plans]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("PATCH"):
            print(f"nnU-Net {plans}: {line}")
        if line.startswith("SECONDS_PER_ITERATION"):
            return float(line.split()[1])
    raise RuntimeError(f"nnU-Net benchmark printed no timing:\n{out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True, help="workspace where the dataset is preprocessed")
    parser.add_argument(
        "--dataset", type=Path, default=task04_default(), help="default: $MAMBASEG_REAL_DATA/Task04_Hippocampus"
    )
    parser.add_argument("--networks", nargs="+", default=["umamba_bot", "unet_resenc"])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--nnunet-root", type=Path, default=Path("/tmp/nnu"))
    args = parser.parse_args()
    args.dataset = require_dataset(args.dataset)
    if not args.dataset.is_dir():
        sys.exit(f"{args.dataset}: not found; this benchmark needs Task04_Hippocampus")
    cpu = torch.device("cpu")
    precisions = [False, True] if uses_amp(cpu, True) else [False]
    rows = []
    for network in args.networks:
        for amp in precisions:
            record = precision_record(cpu, amp, 3)
            label = f"{network} ({record['autocast'] or 'float32'}, {record['memory_format']})"
            seconds = ours(args.workspace, args.dataset, network, args.batch_size, args.warmup, args.iterations, amp)
            rows.append((label, seconds))
    references = {
        plans: nnunet(args.nnunet_root, plans, args.batch_size, args.warmup, args.iterations) for plans in NNUNET_PLANS
    }
    print(f"\n{cpu_summary()}")
    print(f"CPU, {torch.get_num_threads()} threads, batch {args.batch_size}, 3d_fullres patch of the plan\n")
    print("| trainer | s / iteration | " + " | ".join(f"ratio to {NNUNET_PLANS[p]}" for p in NNUNET_PLANS) + " |")
    print("|---|---|" + "---|" * len(NNUNET_PLANS))
    rows += [(f"nnU-Net 2.8.1 {NNUNET_PLANS[p]}", seconds) for p, seconds in references.items() if seconds]
    for name, seconds in rows:
        ratios = [f"{seconds / reference:.2f}" if reference else "—" for reference in references.values()]
        label = name if name.startswith("nnU-Net") else f"mambaseg {name}"
        print(f"| {label} | {seconds:.2f} | {' | '.join(ratios)} |")


if __name__ == "__main__":
    main()
