"""Classification pretraining of an encoder on an image folder, into ``WORKSPACE/pretraining/``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mambaseg.pretraining import pretrain as pretrain_classifier
from mambaseg.workspace.config import compose_pretrain_config
from mambaseg.workspace.layout import PretrainingFiles
from mambaseg.workspace.preparation import WorkspaceArg, open_workspace
from mambaseg.workspace.runtime import distributed


def pretrain(
    image_folder: str | os.PathLike,
    workspace: WorkspaceArg = None,
    network: str = "vmamba_tiny",
    config_name: str = "default",
    overrides: Sequence[str] = (),
    device: str = "auto",
    continue_training: bool = False,
) -> PretrainingFiles:
    """Pretrain the classifier ``network`` on ``image_folder``; its ``encoder.pt`` starts segmentation runs.

    Args:
        image_folder: a folder with ``train/CLASS/*`` and ``val/CLASS/*`` images (ImageNet's layout).
        workspace: the workspace; the run goes to ``pretraining/FOLDER__NETWORK``.
        network: a classifier name (``mambaseg.pretraining.list_pretrain_models()``).
        config_name: a config of ``configs/pretrain`` (without ``.yaml``).
        overrides: ``key=value`` overrides of that config.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        continue_training: resume the latest checkpoint.

    Returns:
        The run's files (``encoder`` is the exported encoder).
    """
    folder = Path(image_folder).expanduser().resolve()
    files = open_workspace(workspace).pretraining(folder, network)
    config = compose_pretrain_config(config_name, list(overrides))
    with distributed(device) as (torch_device, _):
        pretrain_classifier(folder, files, network, config, torch_device, continue_training)
    return files
