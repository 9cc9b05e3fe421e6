"""One optimisation step: forward and loss under autocast, scaled backward, gradient clipping, optimiser step.

Mixed precision runs on CUDA only: ``amp_autocast`` casts there (the selective scan stays float32 inside it),
and ``build_grad_scaler`` scales the loss there, so that a step whose gradients overflow is skipped and the scale
lowered instead of writing inf or NaN into the weights. Elsewhere both are switched off and a step is a plain one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def uses_amp(device: torch.device, amp: bool) -> bool:
    """Whether mixed precision is on: asked for, and on a CUDA device."""
    return amp and device.type == "cuda"


def amp_autocast(device: torch.device, amp: bool) -> torch.autocast:
    """The autocast context of a forward pass on ``device`` (inactive unless ``uses_amp``)."""
    return torch.autocast(device.type, enabled=uses_amp(device, amp))


def build_grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """The grad scaler of a run on ``device`` (disabled unless ``uses_amp``)."""
    return torch.amp.GradScaler(device.type, enabled=uses_amp(device, amp))


def optimizer_step(
    compute_loss: Callable[[], torch.Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler,
    *,
    device: torch.device,
    amp: bool,
    grad_clip: float | None,
) -> float:
    """Zero the gradients, compute the loss under autocast, back-propagate it scaled, clip, step the optimiser.

    With gradient clipping the gradients are unscaled first, so ``grad_clip`` bounds the norm of the true
    gradients of all of ``model``'s parameters. If the scaler finds inf or NaN gradients it skips the optimiser
    step and lowers its scale; the learning-rate schedule is the caller's.

    Args:
        compute_loss: runs the forward pass and returns the scalar loss.
        model: the network whose parameters are clipped (possibly DDP-wrapped).
        optimizer: steps the parameters.
        grad_scaler: from ``build_grad_scaler`` (or a disabled one).
        device: where the forward pass runs.
        amp: mixed precision asked for (it runs on CUDA only).
        grad_clip: the largest gradient norm, or None not to clip.

    Returns:
        The loss.
    """
    optimizer.zero_grad(set_to_none=True)
    with amp_autocast(device, amp):
        loss = compute_loss()
    grad_scaler.scale(loss).backward()
    if grad_clip is not None:
        grad_scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    grad_scaler.step(optimizer)
    grad_scaler.update()
    return loss.item()
