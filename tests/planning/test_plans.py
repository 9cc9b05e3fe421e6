"""plans.json round trip and schema-version errors."""

import json
import math

import numpy as np
import pytest

from mambaseg.planning.fingerprint import Fingerprint, aggregate, analyze_case
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


def _write(tmp_path, data):
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(transpose_backward=[1, 0, 2]), "transpose_backward must be [0, 1, 2], the inverse"),
        (lambda d: d.update(transpose_forward=[0, 0, 2]), "transpose_forward must be a permutation"),
        (lambda d: d.update(gpu_memory_gb=float("nan")), "gpu_memory_gb must be a positive number"),
        (lambda d: d.update(channel_names={}), "channel_names must be at least one channel"),
        (lambda d: d["configurations"]["3d_fullres"].update(spacing=[1.0, float("inf"), 1.0]), "'3d_fullres': spacing"),
        (lambda d: d["configurations"]["3d_fullres"].update(batch_size=True), "batch_size must be an integer >= 1"),
        (lambda d: d["configurations"]["3d_fullres"].update(spatial_dims=4), "spatial_dims must be 2 or 3"),
        (
            lambda d: d["configurations"]["3d_fullres"]["network_kwargs"].update(kernel_sizes=[3, 3]),
            "network_kwargs do not describe a U-Net topology: unet_resenc: kernel_sizes (3, 3) has 2 entries",
        ),
        (
            lambda d: d["configurations"]["3d_fullres"].update(
                normalization=[{"scheme": "ct", "params": {"clip_low": 0, "clip_high": 1, "mean": None, "std": 1}}]
            ),
            "normalization[0].params.mean must be a finite number, got None",
        ),
        (
            lambda d: d["configurations"]["3d_fullres"].update(normalization=[{"scheme": "histogram", "params": {}}]),
            "normalization[0].scheme must be one of",
        ),
    ],
)
def test_every_field_is_checked_naming_the_file_configuration_and_field(tmp_path, edit, expected):
    data = make_plans().to_dict()
    edit(data)
    with pytest.raises(PlansError, match=r"plans\.json") as raised:
        load_plans(_write(tmp_path, data))
    assert expected in str(raised.value)


def test_a_fixed_topology_patch_must_be_a_multiple_of_the_networks_divisor(tmp_path):
    data = make_plans().to_dict()
    config = data["configurations"]["3d_fullres"]
    config.update(network="segmamba", network_kwargs={}, patch_size=[32, 32, 40])
    with pytest.raises(PlansError, match=r"patch_size \[32, 32, 40\] is not a multiple of \[16, 16, 16\]"):
        load_plans(_write(tmp_path, data))
    config["patch_size"] = [32, 32, 48]
    assert load_plans(_write(tmp_path, data)).configurations["3d_fullres"].patch_size == [32, 32, 48]


def test_the_case_size_implied_by_a_2d_spacing_counts_the_slices(tmp_path, caplog):
    data = make_plans().to_dict()
    data["fingerprint"] = {"median_spacing": [4.0, 1.0, 1.0], "median_shape_after_crop": [20.0, 100.0, 100.0]}
    data["configurations"]["2d"] = {
        **data["configurations"]["3d_fullres"],
        "spatial_dims": 2,
        "spacing": [0.25, 0.25],
        "median_shape": [100.0, 100.0],
        "patch_size": [64, 64],
        "network_kwargs": {"n_stages": 2, "strides": [[1, 1], [2, 2]]},
    }
    with caplog.at_level("WARNING"):
        load_plans(_write(tmp_path, data))
    assert "configuration '2d': spacing [0.25, 0.25]: the median case" in caplog.text
    assert "would have 3.2e+06 voxels (16 times as many)" in caplog.text


def test_nan_statistics_are_written_as_null_and_read_back_as_nan(tmp_path):
    label = np.zeros((2, 2), dtype=np.uint8)  # no foreground: every statistic of the channel is NaN
    fingerprint = aggregate(
        "D", {"0": "CT"}, {"background": 0, "x": 1}, [analyze_case("a", [np.ones((2, 2))], label, (1, 1))]
    )
    path = tmp_path / "fingerprint.json"
    fingerprint.save(path)
    assert "NaN" not in path.read_text()
    assert json.loads(path.read_text(), parse_constant=pytest.fail)["foreground_intensities"]["0"]["mean"] is None
    assert math.isnan(Fingerprint.load(path).intensities["0"].mean)
    plans = make_plans()
    plans.fingerprint = {"foreground_intensities": fingerprint.to_dict()["foreground_intensities"]}
    plans.save(tmp_path / "plans.json")
    assert json.loads((tmp_path / "plans.json").read_text(), parse_constant=pytest.fail)["fingerprint"] == {
        "foreground_intensities": {
            "0": dict.fromkeys(("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5"))
        }
    }
