"""Classifiers to pretrain, by name, and the export of their encoder to ``encoder.pt``.

A name is a VMamba preset (``vmamba_tiny``, ``vmamba_small``, as VMamba v0's ImageNet-1K configs) or a
registered segmentation network whose registry entry has a VSS encoder (``NetworkEntry.vss_encoder``): its
encoder settings, taken from the network's defaults (or its tiny test variant), with VMamba's stem
(patch 4 from the image), under a ``VMambaClassifier`` head. Swin-UMamba's encoder embeds its 48 stem
channels with patch 2, so that network skips the patch embedding when it loads, as it does for VMamba's files.

``encoder.pt`` holds ``{"encoder": VSSEncoder state dict, "config": settings, "version": ...}`` and loads
with ``torch.load(weights_only=True)`` and ``mambaseg.networks.load_pretrained``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import mambaseg
from mambaseg.io.atomic import write_atomically
from mambaseg.networks import list_networks, network_entry
from mambaseg.networks.vmamba_encoder import VMambaClassifier

ENCODER_KEYS = ("dims", "depths", "patch_size", "d_state", "ssm_ratio", "drop_path_rate", "orders")
TINY = {"dims": 4, "depths": (1, 1), "d_state": 4}

_PRESETS: dict[str, dict[str, Any]] = {
    "vmamba_tiny": {"dims": 96, "depths": (2, 2, 9, 2), "d_state": 16, "drop_path_rate": 0.2},
    "vmamba_small": {"dims": 96, "depths": (2, 2, 27, 2), "d_state": 16, "drop_path_rate": 0.3},
}


def list_pretrain_models() -> list[str]:
    """Names ``build_classifier`` accepts, sorted."""
    return sorted([*_PRESETS, *(n for n in list_networks() if network_entry(n).vss_encoder)])


def _network_settings(name: str, tiny: bool) -> dict[str, Any]:
    entry = network_entry(name)
    defaults = {
        key: param.default
        for key, param in inspect.signature(entry.builder).parameters.items()
        if key in ENCODER_KEYS and param.default is not inspect.Parameter.empty
    }
    defaults.pop("patch_size", None)
    tiny_settings = {k: v for k, v in entry.tiny.items() if k in ENCODER_KEYS} if tiny else {}
    return {**defaults, **tiny_settings}


def encoder_settings(name: str, tiny: bool = False, **overrides: Any) -> dict[str, Any]:
    """The ``VSSEncoder`` keyword arguments of the classifier ``name``, as plain lists and numbers.

    Args:
        name: a name from ``list_pretrain_models()``.
        tiny: the few-thousand-parameter variant of fast tests.
        **overrides: encoder options replacing the preset's (e.g. ``dims=32`` for a narrower variant).
    """
    if name not in list_pretrain_models():
        raise ValueError(f"unknown pretraining model {name!r}; choose one of {', '.join(list_pretrain_models())}")
    unknown = sorted(set(overrides) - set(ENCODER_KEYS))
    if unknown:
        raise ValueError(f"pretraining model {name!r}: unknown encoder options {unknown}; known: {list(ENCODER_KEYS)}")
    settings = dict(_PRESETS[name]) if name in _PRESETS else _network_settings(name, tiny)
    if tiny and name in _PRESETS:
        settings.update(TINY)
    settings.update(overrides)
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in settings.items()}


def build_classifier(
    name: str, in_channels: int, num_classes: int, tiny: bool = False, **overrides: Any
) -> VMambaClassifier:
    """A 2D ``VMambaClassifier`` with the encoder settings of ``name`` (see ``encoder_settings``)."""
    return VMambaClassifier(2, in_channels, num_classes, **encoder_settings(name, tiny, **overrides))


def encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The ``VSSEncoder`` part of a classifier's state dict (without ``norm`` and ``head``), on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith(("norm.", "head."))}


def export_encoder(model: torch.nn.Module, path: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``encoder.pt`` atomically: the encoder's weights, the settings ``config`` and the version.

    Args:
        model: the (unwrapped) classifier.
        path: the file to write.
        config: plain settings: network name, encoder options, channels, classes, the pretraining config.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"encoder": encoder_state(model), "config": dict(config), "version": mambaseg.__version__}
    write_atomically(path, lambda handle: torch.save(payload, handle), durable=True)
    return path
