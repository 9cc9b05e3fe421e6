"""The run log and checkpoint writer of a toy task for the epoch-loop tests (none on ranks other than 0)."""

from __future__ import annotations

from pathlib import Path

import torch

from mambaseg.training.loop import CheckpointWriter
from mambaseg.training.run_log import RunLog
from mambaseg.workspace.layout import CheckpointFiles, RunLogFiles


def toy_log_and_writer(
    run_dir: Path, optimizer: torch.optim.Optimizer, scheduler, main: bool = True
) -> tuple[RunLog | None, CheckpointWriter | None]:
    """A run log keeping the best ``score`` and a writer of a one-weight model's checkpoints, on the main process."""
    if not main:
        return None, None
    run_log = RunLog(RunLogFiles.in_folder(run_dir), plot=False, best=("score",))
    writer = CheckpointWriter(
        CheckpointFiles.in_folder(run_dir),
        torch.nn.Linear(1, 1),
        optimizer,
        scheduler,
        torch.amp.GradScaler("cpu", enabled=False),
        run_log,
        None,
        {"toy": True},
    )
    return run_log, writer
