"""Fine-tuning a segmentation network from a pretrained encoder: loading it, freezing it, its learning rate."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mambaseg.networks import load_pretrained, network_entry

log = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder."


def prepare_fine_tuning(
    model: torch.nn.Module, network_cfg: Mapping[str, Any], load: bool = True
) -> tuple[dict[str, float], Callable[[int], None] | None]:
    """Load ``network.pretrained`` into the encoder; return the optimiser's ``param_groups`` and the freezing hook.

    Args:
        model: the network built by ``networks.create`` (its ``registry_name`` tells whether its entry has a VSS
            encoder, under ``encoder``, that pretrained weights fit).
        network_cfg: ``pretrained`` (an ``encoder.pt`` or an official VMamba file, or None),
            ``freeze_encoder_epochs`` and ``encoder_lr_multiplier``.
        load: load the pretrained weights (off when a checkpoint will overwrite them).

    Returns:
        ``{"encoder.": multiplier}`` (empty for 1), and the ``Trainer`` hook that keeps the encoder's parameters
        out of training (``requires_grad=False``) for the first ``freeze_encoder_epochs`` epochs (None for 0).
    """
    pretrained = network_cfg.get("pretrained")
    freeze_epochs = int(network_cfg.get("freeze_encoder_epochs") or 0)
    multiplier = float(network_cfg.get("encoder_lr_multiplier", 1.0))
    encoder = [p for name, p in model.named_parameters() if name.startswith(ENCODER_PREFIX)]
    if (freeze_epochs or multiplier != 1.0) and not encoder:
        raise ValueError(
            f"network.freeze_encoder_epochs / encoder_lr_multiplier: {type(model).__name__} has no encoder"
        )
    name = getattr(model, "registry_name", None)
    if pretrained and (name is None or not network_entry(name).vss_encoder):
        raise ValueError(f"network.pretrained: {type(model).__name__} has no VSS encoder to load it into")
    if pretrained and load:
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
