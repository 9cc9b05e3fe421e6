"""Target spacing, configurations, normalisation and patch/batch within the budget, on made-up fingerprints."""

import json
import math

import numpy as np
import pytest
import torch

from mambaseg.networks import create
from mambaseg.planning.fingerprint import CaseFingerprint, Fingerprint, IntensityStats
from mambaseg.planning.memory import estimate_memory
from mambaseg.planning.planner import (
    GIB,
    PlanningError,
    normalization_for,
    plan_experiment,
    plan_patch_and_batch,
    target_spacing,
    transpose_for,
)
from mambaseg.planning.plans import PlansError, load_plans, plans_from_dict

STATS = IntensityStats(
    mean=50.0, median=40.0, std=20.0, min=-10.0, max=300.0, percentile_00_5=-5.0, percentile_99_5=250.0
)


def fingerprint(spacings, shapes, channels=None, before=None) -> Fingerprint:
    cases = [
        CaseFingerprint(f"c{i}", list(map(float, sp)), list(before or sh), list(sh))
        for i, (sp, sh) in enumerate(zip(spacings, shapes, strict=True))
    ]
    channels = channels or {"0": "MRI"}
    return Fingerprint("D", channels, {"background": 0, "a": 1}, cases, {c: STATS for c in channels})


def test_target_spacing_is_the_median():
    spacings = np.array([[1.0, 0.7, 0.7], [1.5, 0.8, 0.8], [2.0, 0.9, 0.9]])
    shapes = np.full((3, 3), 100.0)
    np.testing.assert_allclose(target_spacing(spacings, shapes), [1.5, 0.8, 0.8])


def test_anisotropic_axis_takes_the_10th_percentile():
    spacings = np.array([[z, 0.8, 0.8] for z in (4.0, 5.0, 6.0, 8.0, 10.0, 10.0)])
    shapes = np.array([[20.0, 400.0, 400.0]] * 6)  # 20 * 3 < 400: few slices
    assert target_spacing(spacings, shapes)[0] == pytest.approx(np.percentile(spacings[:, 0], 10))
    many_slices = np.array([[200.0, 400.0, 400.0]] * 6)  # anisotropic spacing but not anisotropic voxels
    assert target_spacing(spacings, many_slices)[0] == pytest.approx(7.0)


def test_transpose_puts_the_coarse_axis_first():
    assert transpose_for([0.8, 0.8, 5.0]) == ([2, 0, 1], [1, 2, 0])
    assert transpose_for([1.0, 1.0, 1.0]) == ([0, 1, 2], [0, 1, 2])


def test_normalization_per_channel():
    fp = fingerprint([(1, 1, 1)] * 2, [(10, 10, 10)] * 2, {"0": "CT", "1": "T2", "2": "noNorm"}, before=(20, 20, 20))
    ct, mri, none = normalization_for(fp)
    assert ct.scheme == "ct"
    assert ct.params == {"clip_low": -5.0, "clip_high": 250.0, "mean": 50.0, "std": 20.0}
    assert (mri.scheme, mri.params) == ("zscore", {"use_mask": True})  # cropped to 1/8 of the image
    assert none.scheme == "none"


def test_small_isotropic_data_gets_2d_and_3d_fullres():
    fp = fingerprint([(1, 1, 1)] * 200, [(36, 50, 35)] * 200)
    plans = plan_experiment(fp, 8, "unet_resenc")
    assert set(plans.configurations) == {"2d", "3d_fullres"}
    full = plans.configurations["3d_fullres"]
    assert full.patch_size == [40, 56, 40]
    assert full.batch_size == round(200 * 36 * 50 * 35 * 0.05 / (40 * 56 * 40))  # the 5% cap: 7
    assert plans.configurations["2d"].patch_size == [56, 40]


def test_large_anisotropic_data_gets_3d_lowres():
    fp = fingerprint([(5, 0.8, 0.8)] * 10, [(48, 400, 400)] * 10)
    plans = plan_experiment(fp, 8)
    assert list(plans.configurations) == ["3d_lowres", "3d_fullres", "3d_cascade_fullres", "2d"]
    full, low = plans.configurations["3d_fullres"], plans.configurations["3d_lowres"]
    assert full.network == low.network == "umamba_bot"
    assert low.spacing[0] == full.spacing[0] and low.spacing[1] > full.spacing[1]
    assert full.network_kwargs["kernel_sizes"][0] == [1, 3, 3]
    assert low.next_stage == "3d_cascade_fullres"
    cascade = plans.configurations["3d_cascade_fullres"]
    assert cascade.previous_stage == "3d_lowres" and cascade.previous_stage_labels == [1]
    assert cascade.extra_input_channels == 1 and full.extra_input_channels == 0
    same = ("spacing", "patch_size", "batch_size", "network", "network_kwargs", "normalization")
    assert all(getattr(cascade, key) == getattr(full, key) for key in same)


def test_cascade_fields_round_trip_and_are_checked(tmp_path):
    plans = plan_experiment(fingerprint([(5, 0.8, 0.8)] * 10, [(48, 400, 400)] * 10), 8)
    plans.save(tmp_path / "plans.json")
    saved = json.loads((tmp_path / "plans.json").read_text())["configurations"]
    assert "previous_stage" not in saved["3d_fullres"] and saved["3d_cascade_fullres"]["previous_stage_labels"] == [1]
    assert load_plans(tmp_path / "plans.json") == plans
    data = plans.to_dict()
    data["configurations"]["3d_cascade_fullres"]["previous_stage"] = "3d_midres"
    with pytest.raises(PlansError, match=r"'3d_cascade_fullres'.*previous_stage must be one of the other"):
        plans_from_dict(data, "p.json")
    data["configurations"]["3d_cascade_fullres"].update(previous_stage="3d_lowres", previous_stage_labels=[2])
    with pytest.raises(PlansError, match=r"previous_stage_labels must be the foreground labels \[1\]"):
        plans_from_dict(data, "p.json")


def test_2d_images_get_only_2d():
    plans = plan_experiment(fingerprint([(0.5, 0.5)] * 5, [(300, 200)] * 5), 8, "unet_resenc")
    assert list(plans.configurations) == ["2d"]
    assert plans.transpose_forward == [0, 1]


@pytest.mark.parametrize("network", ["unet_resenc", "umamba_bot", "umamba_enc"])
def test_patch_fits_budget_and_grows_with_it(network):
    spacing, median = (1.0, 1.0, 1.0), (160.0, 160.0, 160.0)
    previous = 0
    for gb in (3, 6, 12):
        kwargs, patch, batch, estimate = plan_patch_and_batch(network, spacing, median, 1, 3, gb * GIB, 1e12)
        assert estimate.total_bytes(batch) <= gb * GIB
        assert estimate == estimate_memory(network, 3, 1, 3, kwargs, patch)
        assert batch >= 2
        with torch.device("meta"):
            divisor = create(network, 3, 1, 3, **kwargs).input_size_divisor
        assert all(p % divisor == 0 for p in patch)
        assert math.prod(patch) >= previous
        previous = math.prod(patch)


def test_fixed_topology_patch_is_a_multiple_of_the_divisor():
    kwargs, patch, batch, estimate = plan_patch_and_batch("swin_umamba", (1.0, 1.0), (300.0, 250.0), 1, 3, 4 * GIB, 1e9)
    assert kwargs == {}
    assert all(p % 32 == 0 for p in patch)
    assert estimate.total_bytes(batch) <= 4 * GIB


def test_user_errors():
    fp = fingerprint([(1, 1, 1)] * 2, [(36, 50, 35)] * 2)
    with pytest.raises(PlanningError, match="'nope' is not registered"):
        plan_experiment(fp, 8, "nope")
    with pytest.raises(PlanningError, match="gpu_memory_gb must be a positive number of GB, got 0"):
        plan_experiment(fp, 0)
    with pytest.raises(PlanningError, match="no patch fits gpu_memory_gb=0.01 GB"):
        plan_experiment(fingerprint([(1, 1, 1)] * 2, [(100, 100, 100)] * 2), 0.01, "unet_resenc")
