"""One training run: build the parts from the plan and config, then train (validation is the workspace's).

The config is the resolved hydra config (``configs/train.yaml``): ``trainer`` (schedule and
optimiser presets), ``augmentation``, ``network`` (fine-tuning from a pretrained encoder), ``seed``,
``batch_size`` (None: the plan's), ``num_workers`` (on the CPU cut so that workers and threads fit the cores:
``cpu_workers_and_threads``), ``oversample_foreground``, ``validation.step``.
Under DDP the planned (or configured) batch is the run's global batch: each of the w processes trains on
``batch_size / w`` of its patches, the ones a single process would draw at its place in the batch
(``patches.PatchBatches``), and only rank 0 writes. A batch size that w does not divide is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from mambaseg.planning.checkpoint import load_checkpoint, unwrap_model
from mambaseg.planning.memory import estimate_memory
from mambaseg.planning.model import build_network, mirror_axes_for
from mambaseg.training.checkpoint import restore_run, resume_checkpoint
from mambaseg.training.distributed import rank_and_world
from mambaseg.training.fine_tuning import prepare_fine_tuning
from mambaseg.training.losses import build_training_loss, regions_from_labels
from mambaseg.training.optim import build_optimization, optimizer_config_for
from mambaseg.training.patches import PatchBatches, epoch_batches
from mambaseg.training.run_log import RunLog
from mambaseg.training.setup import RunSpec, count_outputs, write_run_files
from mambaseg.training.step import build_grad_scaler, precision_record, training_memory_format
from mambaseg.training.trainer import CheckpointWriter, LoopSettings, Trainer

log = logging.getLogger(__name__)


def run_record(spec: RunSpec, precision: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint records of its run, so that prediction can refuse a fold of another run.

    ``precision`` (from ``step.precision_record``) says what arithmetic trained it; prediction does not check it.
    """
    record = {"configuration": spec.configuration, "fold": spec.fold, "plan": dataclasses.asdict(spec.plan)}
    if precision is not None:
        record["precision"] = dict(precision)
    return record


def usable_cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity where the platform has one (Linux), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_workers_and_threads(workers: int, threads: int, cores: int) -> tuple[int, int]:
    """Batch-building processes and torch threads for CPU training on ``cores`` usable cores, never oversubscribed.

    Each worker gets a core of its own: at most a quarter of the cores go to workers, the rest to torch's threads.
    Below 4 cores that means no workers (batches built in the training process): on 2 cores one worker beside 2
    threads made an epoch 18 % slower and 1 thread + 1 worker 84 % slower (``docs/benchmarks.md``).
    """
    if workers == 0 or workers + threads <= cores:
        return workers, threads
    workers = min(workers, cores // 4)
    return workers, max(1, min(threads, cores - workers))


def per_process_batch(batch_size: int, world: int) -> int:
    """Each process's share of the run's batch under DDP; ValueError, naming both, when ``world`` does not divide it."""
    if batch_size < 1 or batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over {world} processes: under DDP the batch size is the "
            f"global batch and each process trains on batch_size / {world} patches; set batch_size to a multiple of "
            f"{world} (the override batch_size=N) or use a number of processes that divides {batch_size}"
        )
    return batch_size // world


GIB = 2**30


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory a training on ``device`` can use: a CUDA device's total, the CPU's available RAM (Linux's
    ``MemAvailable``); None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory_fits(spec: RunSpec, batch_size: int, device: torch.device) -> None:
    """ValueError naming ``batch_size`` when a training step at that batch and the plan's patch needs more memory
    than ``device`` has, by the planner's memory model (``mambaseg.planning.memory``): refused before training
    starts, instead of failing to allocate minutes into it."""
    plan, plans = spec.plan, spec.plans
    available = device_memory_bytes(device)
    if available is None:
        return
    in_channels = len(plans.channel_names) + plan.extra_input_channels
    estimate = estimate_memory(
        plan.network, len(plan.patch_size), in_channels, plans.num_classes, plan.network_kwargs, plan.patch_size
    )
    needed = estimate.total_bytes(batch_size)
    if needed > available:
        raise ValueError(
            f"batch_size={batch_size} with patch {list(plan.patch_size)}: a training step of {plan.network} needs "
            f"about {needed / GIB:.1f} GB by the planner's memory model, and {device} has {available / GIB:.1f} GB "
            f"available; lower batch_size (the plan's is {plan.batch_size}, which fits "
            f"{estimate.total_bytes(plan.batch_size) / GIB:.1f} GB)"
        )


def train_fold(
    spec: RunSpec, config: Mapping[str, Any], device: torch.device, continue_training: bool = False
) -> torch.nn.Module:
    """Train one fold; returns the trained network (unwrapped from DDP), to validate.

    Args:
        spec: dataset, plans, configuration, network plan and fold.
        config: the resolved config (plain dict).
        device: where to train.
        continue_training: resume from the latest checkpoint (or the final one) instead of starting over.
    """
    rank, world = rank_and_world()
    is_main = rank == 0
    plan, plans = spec.plan, spec.plans
    batch_size = per_process_batch(int(config["batch_size"] or plan.batch_size), world)  # before anything is written
    check_memory_fits(spec, batch_size, device)
    checkpoint_path = resume_checkpoint(spec.files, continue_training)
    amp = LoopSettings.from_config(config["trainer"]).amp
    spatial_dims = len(plan.patch_size)
    precision = precision_record(device, amp, spatial_dims)
    if is_main:
        write_run_files(spec.files, {**config, "precision": precision}, plan)

    seed = int(config["seed"])
    torch.manual_seed(seed + rank)
    model = build_network(plans, plan)
    encoder_groups, on_epoch_start = prepare_fine_tuning(model, config.get("network") or {}, checkpoint_path is None)
    memory_format = training_memory_format(device, amp, spatial_dims)
    model = model.to(device, memory_format=memory_format)
    n_outputs = count_outputs(model, len(plans.channel_names) + plan.extra_input_channels, plan.patch_size)
    scales = None if n_outputs is None else [1.0 / 2**i for i in range(n_outputs)]
    loss = build_training_loss(
        plans.labels, spec.dataset.ignore_label, batch_dice=False, deep_supervision_scales=scales
    )
    settings = LoopSettings.from_config(config["trainer"])
    optim_cfg = optimizer_config_for(plan.network, config["trainer"])
    optim_cfg["optimizer"]["param_groups"] = encoder_groups
    optimizer, scheduler = build_optimization(model, optim_cfg, settings.num_epochs)
    grad_scaler = build_grad_scaler(device, settings.amp)
    if world > 1:
        model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=on_epoch_start is not None,  # a frozen encoder gets no gradients
        )

    train_names, val_names = spec.train_cases, spec.val_cases
    folder = spec.preprocessed
    common = {
        "patch_size": plan.patch_size,
        "batch_size": batch_size,
        "rank": rank,
        "world_size": world,
        "previous_stage": spec.previous_stage,
        "previous_labels": plan.previous_stage_labels or (),
    }
    oversample = float(config["oversample_foreground"])
    train_set = PatchBatches(
        folder,
        train_names,
        seed=seed,
        oversample_foreground=oversample,
        augmentation=dict(config["augmentation"]),
        mirror_axes=mirror_axes_for(plan),
        **common,
    )
    val_set = PatchBatches(folder, val_names, seed=seed + 1, oversample_foreground=oversample, **common)
    workers = int(config["num_workers"])
    if device.type == "cpu":
        cores, threads = usable_cpu_cores(), torch.get_num_threads()
        chosen, chosen_threads = cpu_workers_and_threads(workers, threads, cores)
        if (chosen, chosen_threads) != (workers, threads):
            log.info(
                "num_workers %d beside %d torch threads would oversubscribe the %d CPU cores: %d workers, %d threads",
                workers,
                threads,
                cores,
                chosen,
                chosen_threads,
            )
            workers = chosen
            torch.set_num_threads(chosen_threads)

    run_log = RunLog(spec.files.logs, plot=True) if is_main else None
    log.info(
        "training precision: %s, memory format %s on %s (trainer.amp=%s)",
        f"{precision['autocast']} autocast" if precision["autocast"] else "float32",
        precision["memory_format"],
        device.type,
        amp,
    )
    writer = (
        CheckpointWriter(
            spec.files.checkpoints,
            model,
            optimizer,
            scheduler,
            grad_scaler,
            run_log,
            plans.to_dict(),
            dict(config),
            lambda: {"run": run_record(spec, precision)},
        )
        if is_main
        else None
    )
    start_epoch = 0
    if checkpoint_path is not None:
        checkpoint = load_checkpoint(checkpoint_path, map_location=device)
        start_epoch = restore_run(checkpoint, model, optimizer, scheduler, grad_scaler, run_log)

    trainer = Trainer(
        model,
        loss,
        optimizer,
        scheduler,
        lambda epoch: epoch_batches(train_set, epoch, settings.iterations_per_epoch, workers),
        lambda epoch: epoch_batches(val_set, epoch, settings.val_iterations, workers),
        settings,
        device,
        grad_scaler,
        run_log,
        writer,
        regions=regions_from_labels(plans.labels),
        ignore_label=spec.dataset.ignore_label,
        on_epoch_start=on_epoch_start,
        memory_format=memory_format,
    )
    trainer.fit(start_epoch)
    if run_log is not None:
        run_log.close()
    return unwrap_model(model)
