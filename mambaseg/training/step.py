"""One optimisation step: forward under autocast, float32 loss, scaled backward, gradient clipping, optimiser step.

Mixed precision (``amp``) means the reduced precision the device computes natively
(``mambaseg.nn.precision.native_autocast_dtype``): float16 on CUDA, bfloat16 on CPUs with bf16 instructions
(AVX512_BF16 or AMX-BF16), nothing elsewhere (emulated bf16 is slower than float32, so such CPUs train in
float32). ``amp_autocast`` casts the forward pass (the selective scan stays float32 inside it); the loss is computed
in float32 outside it (``float32_loss``). Only float16 needs ``build_grad_scaler``'s loss scaling, so that a step
whose gradients overflow is skipped and the scale lowered instead of writing inf or NaN into the weights; bfloat16
has float32's exponent range and runs unscaled. Under bfloat16 on the CPU, 3D networks and batches use the
``channels_last_3d`` memory format, which oneDNN's bf16 convolutions run faster in (``training_memory_format``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mambaseg.nn.precision import native_autocast_dtype


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The dtype autocast runs in on ``device``: None when ``amp`` is off or the device has no native one."""
    return native_autocast_dtype(device) if amp else None


def uses_amp(device: torch.device, amp: bool) -> bool:
    """Whether mixed precision is on: asked for, and natively computed by ``device``."""
    return autocast_dtype(device, amp) is not None


def amp_autocast(device: torch.device, amp: bool) -> torch.autocast:
    """The autocast context of a forward pass on ``device`` (inactive unless ``uses_amp``)."""
    dtype = autocast_dtype(device, amp)
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def build_grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """The grad scaler of a run on ``device``: enabled for float16 autocast only (bfloat16 needs no scaling)."""
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype(device, amp) == torch.float16)


def training_memory_format(device: torch.device, amp: bool, spatial_dims: int) -> torch.memory_format:
    """The memory format of a network and its batches: ``channels_last_3d`` for 3D under CPU bf16, else contiguous.

    Measured on a Sapphire Rapids (``docs/benchmarks.md``): it speeds up bf16 training steps, and slows float32 ones.
    """
    if device.type == "cpu" and spatial_dims == 3 and autocast_dtype(device, amp) == torch.bfloat16:
        return torch.channels_last_3d
    return torch.contiguous_format


def precision_record(device: torch.device, amp: bool, spatial_dims: int) -> dict[str, Any]:
    """What a run records of its arithmetic: the autocast dtype (None: float32 throughout) and memory format."""
    dtype = autocast_dtype(device, amp)
    memory_format = training_memory_format(device, amp, spatial_dims)
    return {
        "autocast": None if dtype is None else str(dtype).removeprefix("torch."),
        "memory_format": "channels_last_3d" if memory_format == torch.channels_last_3d else "contiguous",
        "device": device.type,
    }


def _as_float32(output: Any) -> Any:
    if isinstance(output, list | tuple):
        return type(output)(_as_float32(o) for o in output)
    return output.float() if torch.is_tensor(output) and output.is_floating_point() else output


def float32_loss(loss: Callable[[Any, torch.Tensor], torch.Tensor], output: Any, target: torch.Tensor) -> torch.Tensor:
    """``loss(output, target)`` computed in float32 with autocast off, whatever precision ``output`` came in."""
    device_type = target.device.type
    with torch.autocast(device_type, enabled=False):
        return loss(_as_float32(output), target)


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
        compute_loss: runs the forward pass and returns the scalar loss (best through ``float32_loss``).
        model: the network whose parameters are clipped (possibly DDP-wrapped).
        optimizer: steps the parameters.
        grad_scaler: from ``build_grad_scaler`` (or a disabled one).
        device: where the forward pass runs.
        amp: mixed precision asked for (it runs where the device computes a reduced precision natively).
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
