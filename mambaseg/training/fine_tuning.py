"""Fine-tuning a segmentation network from pretrained weights: loading them, freezing the encoder, its learning rate.

``network.pretrained`` is a file of one of two kinds, told apart by its contents:

- a mambaseg checkpoint (``checkpoint_final.pt`` of a trained fold, of any network family and any dataset): every
  tensor whose name and shape fit the network is loaded; the others (the output layers of another number of
  classes, the first convolution of another channel count) keep their initialisation and are listed in the log.
  Nothing of the encoder fitting (another family, another topology) is refused.
- an ``encoder.pt`` of ``mambaseg pretrain``, or an official VMamba checkpoint: loaded into the VSS encoder of
  ``swin_umamba``, ``swin_umamba_d`` or ``vmunet`` by ``networks.load_pretrained`` (2D to 3D adapted).

A fold or run folder is turned into its checkpoint's path by the workspace before the config reaches training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mambaseg.networks import load_pretrained, network_entry
from mambaseg.networks.pretrained import load_fitting
from mambaseg.planning.checkpoint import FORMAT, Checkpoint, load_checkpoint

log = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder."


def prepare_fine_tuning(
    model: torch.nn.Module, network_cfg: Mapping[str, Any], load: bool = True
) -> tuple[dict[str, float], Callable[[int], None] | None]:
    """Load ``network.pretrained`` into the network; return the optimiser's ``param_groups`` and the freezing hook.

    Args:
        model: the network built by ``networks.create`` (its ``registry_name`` tells whether its entry has a VSS
            encoder, under ``encoder``, that pretrained encoder weights fit).
        network_cfg: ``pretrained`` (a mambaseg checkpoint, an ``encoder.pt`` or an official VMamba file, or
            None), ``freeze_encoder_epochs`` and ``encoder_lr_multiplier``.
        load: load the pretrained weights (off when a checkpoint will overwrite them).

    Returns:
        ``{"encoder.": multiplier}`` (empty for 1), and the ``Trainer`` hook that keeps the encoder's parameters
        out of training (``requires_grad=False``) for the first ``freeze_encoder_epochs`` epochs (None for 0).

    Raises:
        ValueError: no file, an encoder file for a network without a VSS encoder, a checkpoint that cannot be
            read, or one of which nothing fits the encoder (naming the file).
    """
    pretrained = network_cfg.get("pretrained")
    freeze_epochs = int(network_cfg.get("freeze_encoder_epochs") or 0)
    multiplier = float(network_cfg.get("encoder_lr_multiplier", 1.0))
    encoder = [p for name, p in model.named_parameters() if name.startswith(ENCODER_PREFIX)]
    if (freeze_epochs or multiplier != 1.0) and not encoder:
        raise ValueError(
            f"network.freeze_encoder_epochs / encoder_lr_multiplier: {type(model).__name__} has no encoder"
        )
    whole_network = bool(pretrained) and is_network_checkpoint(pretrained)
    encoder_file = bool(pretrained) and not whole_network and (load or Path(pretrained).is_file())  # resumed: gone
    name = getattr(model, "registry_name", None)
    if encoder_file and (name is None or not network_entry(name).vss_encoder):
        raise ValueError(
            f"network.pretrained: {type(model).__name__} has no VSS encoder to load {pretrained} into (a trained "
            "network's checkpoint, or its fold or run folder, loads into any family)"
        )
    if pretrained and load and whole_network:
        load_trained_network(model, pretrained)
    elif pretrained and load:
        if not Path(pretrained).is_file():
            raise ValueError(f"network.pretrained: no file at {pretrained}")
        report = load_pretrained(model, pretrained)
        loaded = sum(key.startswith(ENCODER_PREFIX) for key in report.loaded)
        total = sum(key.startswith(ENCODER_PREFIX) for key in model.state_dict())
        if loaded == 0:
            raise ValueError(f"network.pretrained: no tensor of {pretrained} matches the encoder of the network")
        log.info("network.pretrained %s: %d of %d encoder tensors loaded", pretrained, loaded, total)

    def freeze(epoch: int) -> None:
        frozen = epoch < freeze_epochs
        for param in encoder:
            param.requires_grad_(not frozen)
        if epoch in (0, freeze_epochs):
            log.info("epoch %d: encoder %s", epoch, "frozen" if frozen else "trained")

    return ({ENCODER_PREFIX: multiplier} if multiplier != 1.0 else {}), (freeze if freeze_epochs > 0 else None)


def is_network_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a mambaseg checkpoint (a whole trained network) rather than an encoder file.

    Reads the file memory-mapped, so its tensors are not copied; anything unreadable is not one.
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an encoder file of the legacy format, or no torch file at all: load_pretrained says which
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _source_network(checkpoint: Checkpoint) -> str:
    plan = (checkpoint.extra.get("run") or {}).get("plan") or {}
    return str(plan.get("network") or "an unknown network")


def load_trained_network(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Load the tensors of a trained network's checkpoint that fit ``model`` by name and shape; log what was skipped.

    Returns:
        The model keys loaded.

    Raises:
        ValueError: the checkpoint cannot be loaded, or no tensor of it fits the model's encoder (another family or
            topology), naming the file.
    """
    checkpoint = load_checkpoint(path)  # CheckpointError, a ValueError naming the file
    source = _source_network(checkpoint)
    target = getattr(model, "registry_name", None) or type(model).__name__
    report = load_fitting(model, checkpoint.model)
    encoder_keys = [key for key in model.state_dict() if key.startswith(ENCODER_PREFIX)]
    loaded_encoder = [key for key in report.loaded if key.startswith(ENCODER_PREFIX)]
    if not loaded_encoder:
        raise ValueError(
            f"network.pretrained: {path} ({source}) has no tensor that fits the encoder of this {target} "
            f"({len(report.loaded)} of {len(model.state_dict())} tensors fit by name and shape): another network "
            "family or topology; train the same network, and plan this dataset from the source's plans (plans_from)"
        )
    total = len(model.state_dict())
    log.info(
        "network.pretrained %s (%s): %d of %d tensors loaded (%d of %d encoder tensors); %d skipped, %d of the "
        "checkpoint unused",
        path,
        source,
        len(report.loaded),
        total,
        len(loaded_encoder),
        len(encoder_keys),
        total - len(report.loaded),
        len(report.unexpected),
    )
    skipped = [
        f"{key} (shape differs: {old} in the checkpoint, {new} here)"
        for key, (old, new) in report.shape_differs.items()
    ]
    skipped += [f"{key} (missing from the checkpoint)" for key in report.missing]
    if skipped:
        log.info("network.pretrained: skipped %s", "; ".join(skipped))
    if len(loaded_encoder) < len(encoder_keys):
        log.warning(
            "network.pretrained %s: only %d of %d encoder tensors fit; the others start from scratch (plan this "
            "dataset from the source's plans, plans_from, so that the whole encoder fits)",
            path,
            len(loaded_encoder),
            len(encoder_keys),
        )
    return report.loaded
