"""The checkpoint file: weights, optimiser, schedule, grad scaler, RNG states, plans, config and version.

Training writes it and resumes from it; prediction loads its weights and plans.

A checkpoint holds only what ``torch.load(weights_only=True)`` accepts (tensors and plain containers), so loading
one never runs code. It is written atomically: a temp file in the same folder, fsync, then ``os.replace``.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import mambaseg
from mambaseg.io.atomic import write_atomically

logger = logging.getLogger(__name__)

FORMAT = "mambaseg-checkpoint"
REQUIRED_KEYS = (
    "format",
    "version",
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "grad_scaler",
    "rng",
    "plans",
    "config",
    "extra",
)
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device)


class CheckpointError(ValueError):
    """A file that cannot be loaded as a mambaseg checkpoint."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass
class Checkpoint:
    """The contents of a loaded checkpoint; ``epoch`` is the number of finished epochs (where to resume)."""

    path: Path
    version: str
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    grad_scaler: dict[str, Any] | None
    rng: dict[str, Any] | None  # None in a weights-only copy
    plans: dict[str, Any] | None
    config: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel / DataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint entry {where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"checkpoint entry {where} is a {type(value).__name__}; only tensors, numbers, strings, bools, None, "
            "lists and dicts can be loaded with weights_only=True"
        )


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's legacy global, torch's CPU and (when present) CUDA generators."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _config_dict(config: Mapping[str, Any] | DictConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    epoch: int,
    plans: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | DictConfig | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; a crash while writing leaves any previous file at ``path`` intact.

    Args:
        path: the checkpoint file.
        model: the network, possibly wrapped in DDP or ``torch.compile``.
        optimizer: its optimiser.
        scheduler: its learning-rate schedule.
        grad_scaler: the AMP grad scaler.
        epoch: the number of finished epochs.
        plans: the plans (``plans.json`` contents).
        config: the resolved run config.
        extra: other plain state, e.g. the run log's ``state_dict()``.

    Returns:
        The path written.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": mambaseg.__version__,
        "epoch": int(epoch),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "rng": rng_state(),
        "plans": dict(plans) if plans is not None else None,
        "config": _config_dict(config),
        "extra": dict(extra or {}),
    }
    _check_plain(payload, "checkpoint")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(path, lambda handle: torch.save(payload, handle), durable=True)
    except (OSError, RuntimeError) as err:
        if not getattr(err, "filename", None):
            raise _write_error(path, err) from err
        raise
    return path


def _write_error(path: Path, err: BaseException) -> OSError:
    """An OSError naming the checkpoint; a full disk surfaces as torch's RuntimeError around an OSError without one."""
    cause: BaseException | None = err
    while cause is not None and not (isinstance(cause, OSError) and cause.errno):
        cause = cause.__context__
    if cause is None:
        return OSError(errno.EIO, f"cannot write the checkpoint ({_first_line(err)})", str(path))
    return OSError(cause.errno, f"cannot write the checkpoint: {cause.strerror}", str(path))


def _first_line(err: Exception) -> str:
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _major(version: str) -> str:
    return str(version).split(".", 1)[0]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, unreadable or truncated, not a mambaseg checkpoint, holds pickled
            objects that could run code, misses entries, or comes from another major version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only" in str(err):
            raise CheckpointError(
                path, "refused: it holds pickled Python objects that could run code when loaded (weights_only=True)"
            ) from err
        raise CheckpointError(path, f"not a readable checkpoint: {_first_line(err)}") from err
    except Exception as err:  # torch.load fails on arbitrary bytes in many ways (KeyError, RuntimeError, EOFError)
        raise CheckpointError(
            path, f"not a readable checkpoint (truncated or another file type): {_first_line(err)}"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, "not a mambaseg checkpoint (no 'format' marker)")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(path, f"incompatible checkpoint: missing entries {missing}")
    if _major(data["version"]) != _major(mambaseg.__version__):
        raise CheckpointError(
            path,
            f"incompatible checkpoint: written by mambaseg {data['version']}, this is {mambaseg.__version__} "
            "(major versions differ)",
        )
    return Checkpoint(path=path, **{key: data[key] for key in REQUIRED_KEYS if key != "format"})


PREDICTION_EXTRA = ("run",)  # the ``extra`` entries prediction reads (which run and plan the weights trained)


def weights_only_copy(path: str | os.PathLike) -> bytes:
    """The bytes of a copy of the checkpoint at ``path`` with only what prediction needs: the weights, plans, config,
    version and the run's record; no optimiser, schedule, grad scaler, RNG states or run log (an exported model
    carries these copies: the optimiser state alone is as large as the weights).

    Raises:
        CheckpointError: as ``load_checkpoint``.
    """
    loaded = load_checkpoint(path)
    payload = {
        "format": FORMAT,
        "version": loaded.version,
        "epoch": loaded.epoch,
        "model": loaded.model,
        "optimizer": None,
        "scheduler": None,
        "grad_scaler": None,
        "rng": None,
        "plans": loaded.plans,
        "config": loaded.config,
        "extra": {key: loaded.extra[key] for key in PREDICTION_EXTRA if key in loaded.extra},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()
