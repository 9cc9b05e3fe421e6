"""plans.json round trip and schema-version errors."""

import json

import pytest

from mambaseg.planning.plans import (
    SCHEMA_VERSION,
    ConfigurationPlan,
    Normalization,
    Plans,
    PlansError,
    load_plans,
)


def make_plans() -> Plans:
    config = ConfigurationPlan(
        spatial_dims=3,
        spacing=[1.0, 1.0, 1.0],
        median_shape=[36.0, 50.0, 35.0],
        patch_size=[40, 56, 40],
        batch_size=7,
        network="unet_resenc",
        network_kwargs={"n_stages": 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]},
        normalization=[Normalization("zscore", {"use_mask": False})],
        estimated_memory_gb=1.5,
    )
    return Plans(
        dataset_name="D",
        channel_names={"0": "MRI"},
        labels={"background": 0, "a": 1},
        num_classes=2,
        gpu_memory_gb=8.0,
        transpose_forward=[0, 1, 2],
        transpose_backward=[0, 1, 2],
        fingerprint={"num_cases": 3},
        configurations={"3d_fullres": config},
    )


def test_round_trip(tmp_path):
    plans = make_plans()
    plans.save(tmp_path / "plans.json")
    loaded = load_plans(tmp_path / "plans.json")
    assert loaded == plans
    assert json.loads((tmp_path / "plans.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert "mambaseg." not in (tmp_path / "plans.json").read_text()


def test_wrong_schema_version_names_file_and_version(tmp_path):
    path = tmp_path / "plans.json"
    data = make_plans().to_dict()
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(PlansError, match=r"plans\.json: schema_version 99 is not supported"):
        load_plans(path)


def test_missing_file_and_field(tmp_path):
    with pytest.raises(PlansError, match="nothere.json"):
        load_plans(tmp_path / "nothere.json")
    data = make_plans().to_dict()
    del data["configurations"]["3d_fullres"]["patch_size"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(PlansError, match="not a valid plans file"):
        load_plans(tmp_path / "p.json")
