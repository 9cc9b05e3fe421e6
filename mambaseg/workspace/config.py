"""Where the hydra configs are, and composing them into resolved plain dicts.

The configs live in ``configs/`` at the top of the repository and ship in the wheel as ``mambaseg/configs``
(``pyproject.toml`` maps the package ``mambaseg.configs`` to that folder). They are always taken from the same
tree as the running ``mambaseg`` code: inside the installed package for a wheel, beside the package in a
source checkout (editable install, or the checkout on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
        message = " ".join(str(error).split())  # hydra's messages span lines
        raise ConfigError(f"{folder / name}.yaml with overrides {list(overrides)}: {message}") from error


def compose_train_config(overrides: list[str]) -> dict:
    """The resolved ``configs/train.yaml`` with ``key=value`` overrides (hydra syntax), as a plain dict.

    Raises:
        ConfigError: an override names a key or group option that does not exist, does not parse, gives a value
            of another type than the key's default (``trainer.num_epochs=abc``), or a number outside its range.
    """
    config = _compose(config_dir(), TRAIN_CONFIG, overrides)
    _check_types(config, _compose(config_dir(), TRAIN_CONFIG, _group_choices(overrides)), "")
    _check_ranges(config, TRAIN_RANGES)
    return config


def compose_pretrain_config(name: str, overrides: list[str]) -> dict:
    """The resolved ``configs/pretrain/NAME.yaml`` with ``key=value`` overrides, as a plain dict.

    Raises:
        ConfigError: there is no such config, or an override does not apply to it.
    """
    folder = config_dir() / PRETRAIN_GROUP
    config = _compose(folder, name, overrides)
    _check_types(config, _compose(folder, name, _group_choices(overrides)), "")
    _check_ranges(config, PRETRAIN_RANGES)
    return config


# the numbers that size work: (lowest, highest) allowed
TRAIN_RANGES = {
    "batch_size": (1, 4096),
    "num_workers": (0, 64),
    "oversample_foreground": (0.0, 1.0),
    "validation.step": (0.1, 1.0),
    "trainer.num_epochs": (1, 100_000),
    "trainer.iterations_per_epoch": (1, 1_000_000),
    "trainer.val_iterations": (0, 1_000_000),
    "trainer.checkpoint_every": (1, 100_000),
    "trainer.time_budget_minutes": (0.01, 1_000_000),
}
PRETRAIN_RANGES = {
    "epochs": (1, 100_000),
    "batch_size": (1, 1_000_000),
    "num_workers": (0, 256),
    "checkpoint_every": (1, 100_000),
    "data.image_size": (8, 4096),
}


def _group_choices(overrides: list[str]) -> list[str]:
    """The overrides that choose a config group (``trainer=cpu_short``): the defaults to compare types with."""
    return [item for item in overrides if "=" in item and "." not in item.split("=", 1)[0].lstrip("+~")]


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "a boolean (true or false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return None


def _check_types(config: dict, defaults: dict, prefix: str) -> None:
    """ConfigError for a value whose type differs from its default's (numbers and booleans; ints pass as floats)."""
    for key, default in defaults.items():
        if key not in config:
            continue
        value, name = config[key], f"{prefix}{key}"
        if isinstance(default, dict) and isinstance(value, dict):
            _check_types(value, default, f"{name}.")
            continue
        expected = _kind(default)
        if expected is None or value is None:
            continue
        fits = _kind(value) == expected or (expected == "a number" and _kind(value) == "an integer")
        if not fits:
            raise ConfigError(f"{name}={value!r}: expected {expected}, like its default {default!r}")


def _check_ranges(config: dict, ranges: dict[str, tuple[float, float]]) -> None:
    for name, (low, high) in ranges.items():
        value = config
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected a number between {low} and {high}")
        if not low <= value <= high:
            raise ConfigError(f"{name}={value}: must be between {low} and {high}")


def saved_config(path: Path) -> dict[str, Any]:
    """A run's resolved ``config.yaml`` as a plain dict."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def config_differences(saved: dict[str, Any], expected: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """``key: saved -> expected`` for each setting that differs (the recorded ``precision`` left out, and the keys
    in or under ``ignore``)."""
    have, want = _flatten({k: v for k, v in saved.items() if k != "precision"}), _flatten(expected)
    return [
        f"{key}: {have.get(key)!r} -> {want.get(key)!r}"
        for key in sorted(have.keys() | want.keys())
        if have.get(key) != want.get(key) and not any(key == i or key.startswith(f"{i}.") for i in ignore)
    ]


RESUMABLE_CHANGES = ("num_workers", "validation", "trainer.num_epochs", "trainer.checkpoint_every")
"""Settings ``train --continue`` may change: how data is loaded, how the fold is validated after training, and
(without a time budget) a longer run: every other setting shapes the training already done."""


def check_resumable(saved: dict[str, Any], config: dict[str, Any], source: Path) -> None:
    """ConfigError unless ``config`` may continue the run whose resolved config is ``saved`` (``source``).

    ``--continue`` resumes a run as it was configured. It may change ``num_workers``, ``validation.*`` and
    ``trainer.checkpoint_every``, and
    raise ``trainer.num_epochs`` of a run without a time budget (the schedule is extended to the new length); any
    other difference, a shorter run, or a changed length of a run with a time budget is refused naming each setting.
    """
    differences = config_differences(saved, config, ignore=RESUMABLE_CHANGES)
    trainer, before = config.get("trainer", {}), saved.get("trainer", {})
    if trainer.get("num_epochs") != before.get("num_epochs"):
        change = f"trainer.num_epochs: {before.get('num_epochs')!r} -> {trainer.get('num_epochs')!r}"
        budgeted = trainer.get("time_budget_minutes") or before.get("time_budget_minutes")
        if budgeted:
            differences.append(f"{change} (the time budget decides a budgeted run's length)")
        elif int(trainer.get("num_epochs") or 0) < int(before.get("num_epochs") or 0):
            differences.append(f"{change} (a run is not shortened: its schedule was laid out for the longer one)")
    if differences:
        raise ConfigError(
            f"{source}: --continue resumes the run as it was configured, and these settings differ: "
            f"{'; '.join(differences)}. Continue with the run's settings (only num_workers, validation.*, "
            "trainer.checkpoint_every and, without a time budget, a larger trainer.num_epochs may change), or train "
            "a new fold folder"
        )
