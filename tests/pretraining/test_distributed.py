"""Pretraining under DDP with two gloo processes on the CPU: sharded images, summed metrics, rank 0 writes."""

import csv
from pathlib import Path

import torch
import torch.distributed as dist

from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.pretraining import pretrain
from mambaseg.pretraining.data import shard
from mambaseg.workspace.config import compose_pretrain_config
from mambaseg.workspace.layout import PretrainingFiles
from tests.pretraining.folders import write_image_folder
from tests.processes import GLOO_TIMEOUT, leave_group, run_workers

OVERRIDES = ["model.tiny=true", "epochs=2", "batch_size=8", "num_workers=0", "data.image_size=16"]
OVERRIDES += ["optimizer.warmup_epochs=0", "ema.decay=0.5"]


def _worker(rank: int, store: str, folder: str, run_dir: str, config: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=GLOO_TIMEOUT)
    try:
        pretrain(folder, PretrainingFiles(Path(run_dir)), "vmamba_tiny", config, torch.device("cpu"))
    finally:
        leave_group()


def test_shards_cover_every_image_once_per_epoch():
    for world in (1, 2, 3, 4):
        parts = [shard(10, rank, world, 3, 0, shuffle=True) for rank in range(world)]
        assert len({len(p) for p in parts}) == 1 and sorted(set(sum(parts, []))) == list(range(10))
        assert sorted(sum((shard(10, r, world, 0, 0, shuffle=False) for r in range(world)), [])) == list(range(10))
    assert shard(10, 0, 1, 3, 0, True) != shard(10, 0, 1, 4, 0, True)  # a new order every epoch


def test_two_processes_pretrain_and_rank_0_writes(tmp_path):
    folder = write_image_folder(tmp_path / "tiny")
    run_dir = tmp_path / "run"
    config = compose_pretrain_config("default", OVERRIDES)
    args = (str(tmp_path / "store"), str(folder), str(run_dir), config)
    run_workers(_worker, args)
    checkpoint = load_checkpoint(run_dir / "checkpoint_final.pt")
    assert checkpoint.scheduler["last_epoch"] == 2 * 2  # 18 images over 2 ranks, 4 a step: 2 steps an epoch
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 2
    for row in rows:  # accuracies over all 6 validation images, 3 on each rank
        assert round(float(row["top1"]) * 6 / 100, 6).is_integer() and float(row["top5"]) == 100.0
    assert (run_dir / "encoder.pt").is_file()
