"""Where the hydra configs are, and composing them into resolved plain dicts.

The configs live in ``configs/`` at the top of the repository and ship in the wheel as ``mambaseg/configs``
(``pyproject.toml`` maps the package ``mambaseg.configs`` to that folder). They are always taken from the same
tree as the running ``mambaseg`` code: inside the installed package for a wheel, beside the package in a
source checkout (editable install, or the checkout on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import mambaseg

TRAIN_CONFIG = "train"
PRETRAIN_GROUP = "pretrain"


class ConfigError(ValueError):
    """A config that does not exist, or overrides that do not apply to it."""


def config_dir() -> Path:
    """The folder holding ``train.yaml`` and the config groups (``trainer/``, ``augmentation/``, ``pretrain/``)."""
    package = Path(mambaseg.__file__).resolve().parent
    candidates = (package / "configs", package.parent / "configs")  # a wheel install; a source checkout
    for candidate in candidates:
        if (candidate / f"{TRAIN_CONFIG}.yaml").is_file():
            return candidate
    raise ConfigError(
        f"no {TRAIN_CONFIG}.yaml in {' or '.join(str(c) for c in candidates)}: this mambaseg installation lacks its "
        "configs; reinstall it (pip install mambaseg, or pip install -e . in a checkout)"
    )


def _compose(folder: Path, name: str, overrides: list[str]) -> dict:
    if not (folder / f"{name}.yaml").is_file():
        available = sorted(path.stem for path in folder.glob("*.yaml"))
        raise ConfigError(f"no config {name!r} in {folder} (available: {', '.join(available)})")
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            cfg = compose(name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"{folder / name}.yaml with overrides {list(overrides)}: {error}") from error


def compose_train_config(overrides: list[str]) -> dict:
    """The resolved ``configs/train.yaml`` with ``key=value`` overrides (hydra syntax), as a plain dict.

    Raises:
        ConfigError: an override names a key or group option that does not exist, or does not parse.
    """
    return _compose(config_dir(), TRAIN_CONFIG, overrides)


def compose_pretrain_config(name: str, overrides: list[str]) -> dict:
    """The resolved ``configs/pretrain/NAME.yaml`` with ``key=value`` overrides, as a plain dict.

    Raises:
        ConfigError: there is no such config, or an override does not apply to it.
    """
    return _compose(config_dir() / PRETRAIN_GROUP, name, overrides)
