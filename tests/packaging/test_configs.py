"""The configs: found beside the running code, composed into plain dicts, and all of them listed for the wheel."""

from pathlib import Path

import pytest
from setuptools import find_packages

import mambaseg
from mambaseg.workspace.config import ConfigError, compose_pretrain_config, compose_train_config, config_dir

ROOT = Path(__file__).resolve().parents[2]


def _setuptools_table() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_configs_come_from_the_tree_of_the_running_code():
    assert config_dir() == Path(mambaseg.__file__).resolve().parents[1] / "configs" == ROOT / "configs"


def test_train_config_composes_groups_and_overrides():
    config = compose_train_config(["trainer=cpu_short", "trainer.num_epochs=3", "augmentation=none", "num_workers=0"])
    assert isinstance(config, dict) and isinstance(config["trainer"], dict)
    assert config["trainer"]["num_epochs"] == 3 and config["trainer"]["iterations_per_epoch"] == 50
    assert config["augmentation"]["mirror"]["p"] == 0 and config["num_workers"] == 0


def test_pretrain_config_composes_with_overrides():
    config = compose_pretrain_config("default", ["epochs=2", "model.tiny=true"])
    assert config["epochs"] == 2 and config["model"]["tiny"] is True


@pytest.mark.parametrize(
    ("compose", "match"),
    [
        (lambda: compose_train_config(["trainer=nonexistent"]), "train.yaml"),
        (lambda: compose_train_config(["no_such_key=1"]), "no_such_key"),
        (lambda: compose_train_config(["trainer.num_epochs=="]), "trainer.num_epochs"),
        (lambda: compose_pretrain_config("nonexistent", []), "no config 'nonexistent'.*default"),
    ],
)
def test_bad_names_and_overrides_raise_config_error(compose, match):
    with pytest.raises(ConfigError, match=match):
        compose()


def test_every_source_package_is_listed_for_the_wheel():
    setuptools = _setuptools_table()
    found = set(find_packages(str(ROOT), include=["mambaseg*"]))
    for folder in ("kernels", "datasets"):
        found |= set(find_packages(str(ROOT / folder)))
    listed = set(setuptools["packages"])
    assert found - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {"mambaseg.configs"}
    assert setuptools["package-dir"]["mambaseg.configs"] == "configs"


def test_every_config_file_is_package_data():
    patterns = _setuptools_table()["package-data"]["mambaseg.configs"]
    configs = ROOT / "configs"
    shipped = {path for pattern in patterns for path in configs.glob(pattern)}
    assert set(configs.rglob("*.yaml")) == shipped, f"widen package-data for mambaseg.configs: {patterns}"
