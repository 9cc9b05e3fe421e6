"""Optimisers and learning-rate schedules, looked up by name and configured from the trainer config.

Schedules step once per epoch: ``total_steps`` is the number of epochs. Each network's registry entry names its
default preset (optimiser + schedule, defined in ``configs/trainer/default.yaml``); ``trainer.optimizer`` overrides it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from mambaseg.networks import network_entry


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    factory: Callable[..., torch.optim.Optimizer]
    defaults: dict[str, Any]
    no_decay: bool
    """Whether 1-D parameters and those flagged ``_no_weight_decay`` are kept out of weight decay by default."""


_OPTIMIZERS: dict[str, OptimizerEntry] = {
    # nnU-Net: SGD, lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5 on every parameter.
    "sgd": OptimizerEntry(
        "sgd", torch.optim.SGD, {"lr": 1e-2, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5}, False
    ),
    "adamw": OptimizerEntry("adamw", torch.optim.AdamW, {"lr": 1e-4, "weight_decay": 0.05}, True),
}


def list_optimizers() -> list[str]:
    """Names of every registered optimiser, sorted."""
    return sorted(_OPTIMIZERS)


def _skips_decay(param: nn.Parameter) -> bool:
    return bool(getattr(param, "_no_weight_decay", False)) or param.ndim <= 1


def _lr_multiplier(name: str, multipliers: Mapping[str, float]) -> float:
    matches = [prefix for prefix in multipliers if name.startswith(prefix)]
    return float(multipliers[max(matches, key=len)]) if matches else 1.0


def _param_groups(
    named: list[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    no_decay: bool,
    multipliers: Mapping[str, float],
) -> list[dict[str, Any]]:
    unused = [prefix for prefix in multipliers if not any(n.startswith(prefix) for n, _ in named)]
    if unused:
        raise ValueError(f"param_groups prefixes {unused} match no parameter name (e.g. {named[0][0]!r})")
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, param in named:
        multiplier = _lr_multiplier(name, multipliers)
        decay = not (no_decay and _skips_decay(param))
        key = (multiplier, decay)
        if key not in groups:
            label = f"lr x{multiplier:g}, {'decay' if decay else 'no decay'}"
            groups[key] = {
                "params": [],
                "lr": lr * multiplier,
                "weight_decay": weight_decay if decay else 0.0,
                "name": label,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def build_optimizer(
    name: str,
    params_or_model: nn.Module | Iterable[nn.Parameter],
    *,
    param_groups: Mapping[str, float] | None = None,
    no_decay: bool | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the optimiser ``name`` with its registered defaults overridden by ``kwargs``.

    Args:
        name: a name from ``list_optimizers()``.
        params_or_model: a model (parameters are then grouped by name) or plain parameters.
        param_groups: parameter-name prefix -> learning-rate multiplier (the longest matching prefix wins),
            e.g. ``{"encoder.": 0.1}``; needs a model.
        no_decay: keep 1-D parameters (norms, biases) and those flagged ``_no_weight_decay`` out of weight
            decay; ``None`` takes the optimiser's default (on for AdamW, off for SGD as in nnU-Net).
        **kwargs: keyword arguments of the torch optimiser (``lr``, ``weight_decay``, ``momentum``, ...).
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; registered optimizers: {', '.join(list_optimizers())}")
    entry = _OPTIMIZERS[name]
    options = {**entry.defaults, **kwargs}
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    no_decay = entry.no_decay if no_decay is None else no_decay
    if isinstance(params_or_model, nn.Module):
        named = list(params_or_model.named_parameters())
    else:
        if param_groups:
            raise ValueError("param_groups (name prefix -> lr multiplier) needs a model, not plain parameters")
        named = [(f"param{i}", p) for i, p in enumerate(params_or_model)]
    if not named:
        raise ValueError(f"optimizer {name!r}: no parameters to optimise")
    lr, weight_decay = float(options.pop("lr")), float(options.pop("weight_decay", 0.0))
    groups = _param_groups(named, lr, weight_decay, no_decay, param_groups or {})
    return entry.factory(groups, lr=lr, weight_decay=weight_decay, **options)


class PolyLR(LRScheduler):
    """nnU-Net's polynomial decay: lr = base * (1 - step / total_steps) ** exponent."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, exponent: float = 0.9) -> None:
        self.total_steps = int(total_steps)
        self.exponent = float(exponent)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        step = min(self.last_epoch, self.total_steps)
        return [base * (1 - step / self.total_steps) ** self.exponent for base in self.base_lrs]


WARMUP_SHARE = 5
"""A warm-up takes at most ``1 / WARMUP_SHARE`` of a schedule's steps."""


class WarmupCosineLR(LRScheduler):
    """Linear warm-up over ``warmup_steps`` (base / (w + 1), ..., base at step w), then cosine down to a floor.

    The floor is ``min_lr`` for a group at the optimiser's base learning rate and scales with each group's
    multiplier; the last step (``total_steps - 1``) runs at the floor. The warm-up is cut to a fifth of
    ``total_steps`` (``WARMUP_SHARE``) where it would be longer, also when a time budget shortens the schedule
    later, so that a short run (the demo's 10 epochs against a preset's 10 warm-up epochs) still decays.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0
    ) -> None:
        if total_steps < 1 or warmup_steps < 0:
            raise ValueError(f"total_steps must be >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
        if not 0 <= min_lr <= optimizer.defaults["lr"]:
            raise ValueError(f"min_lr must be in [0, lr={optimizer.defaults['lr']}], got {min_lr}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_lr) / float(optimizer.defaults["lr"])
        super().__init__(optimizer)

    @property
    def warmup(self) -> int:
        """The warm-up steps this schedule runs: ``warmup_steps``, at most a fifth of ``total_steps``."""
        return min(self.warmup_steps, self.total_steps // WARMUP_SHARE)

    def factor(self, step: int) -> float:
        """Learning rate at ``step`` relative to the base learning rate."""
        warmup = self.warmup
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - 1 - warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        factor = self.factor(self.last_epoch)
        return [base * factor for base in self.base_lrs]


_SCHEDULERS: dict[str, Callable[..., LRScheduler]] = {"poly": PolyLR, "warmup_cosine": WarmupCosineLR}


def list_schedulers() -> list[str]:
    """Names of every registered learning-rate schedule, sorted."""
    return sorted(_SCHEDULERS)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, **kwargs: Any) -> LRScheduler:
    """Build the schedule ``name``, stepped once per epoch.

    Args:
        name: a name from ``list_schedulers()``: ``poly`` (``exponent``) or ``warmup_cosine`` (``warmup_steps``,
            ``min_lr``).
        optimizer: the optimiser whose groups' learning rates it sets.
        total_steps: number of scheduler steps (epochs) in the run.
        **kwargs: options of that schedule.
    """
    if name not in _SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; registered schedulers: {', '.join(list_schedulers())}")
    if total_steps < 1:
        raise ValueError(f"scheduler {name!r}: total_steps must be >= 1, got {total_steps}")
    return _SCHEDULERS[name](optimizer, total_steps, **kwargs)


def _plain(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def optimizer_config_for(network_name: str, trainer_cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The optimiser and schedule preset for a network, as a plain dict ``{"preset", "optimizer", "scheduler"}``.

    ``trainer_cfg.optimizer`` (a preset name) wins when set; otherwise the network's registry entry names it
    (``NetworkEntry.optimizer``). The preset itself comes from ``trainer_cfg.optimizers``.
    """
    cfg = _plain(trainer_cfg)
    presets = cfg.get("optimizers") or {}
    preset = cfg.get("optimizer")
    if preset is None:
        try:
            preset = network_entry(network_name).optimizer
        except ValueError as err:
            raise ValueError(f"no optimizer preset for network {network_name!r}: {err}; set trainer.optimizer") from err
    if preset not in presets:
        raise ValueError(f"unknown optimizer preset {preset!r}; trainer.optimizers has: {', '.join(presets)}")
    chosen = presets[preset]
    return {"preset": preset, "optimizer": dict(chosen["optimizer"]), "scheduler": dict(chosen["scheduler"])}


def build_optimization(
    model: nn.Module, optim_cfg: Mapping[str, Any], total_steps: int
) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """Build the optimiser and schedule of an ``optimizer_config_for`` result.

    Args:
        model: the network to optimise.
        optim_cfg: ``{"optimizer": {"name", ...}, "scheduler": {"name", ...}}``.
        total_steps: number of epochs in the run.
    """
    opt_kwargs, sched_kwargs = dict(optim_cfg["optimizer"]), dict(optim_cfg["scheduler"])
    where = f"trainer.optimizers.{optim_cfg['preset']}" if "preset" in optim_cfg else "the optimizer preset"
    try:
        optimizer = build_optimizer(opt_kwargs.pop("name"), model, **opt_kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}.optimizer: {err}") from err
    try:
        scheduler = build_scheduler(sched_kwargs.pop("name"), optimizer, total_steps, **sched_kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}.scheduler: {err}") from err
    return optimizer, scheduler
