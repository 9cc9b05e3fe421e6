"""The hydra configs shipped with mambaseg, composed with a user's ``key=value`` overrides."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose_train_config(overrides: list[str]) -> dict:
    """The resolved ``train.yaml`` with the ``key=value`` overrides, as a plain dict."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def compose_pretrain_config(name: str, overrides: list[str]) -> dict:
    """The resolved ``pretrain/NAME.yaml`` with the ``key=value`` overrides, as a plain dict."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR / "pretrain"), version_base=None):
        cfg = compose(name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)
