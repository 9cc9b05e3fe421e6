"""Our 3d_fullres plan for unet_resenc against nnU-Net 2.8.1's on the real Task04_Hippocampus.

The data is read from ``$MAMBASEG_REAL_DATA/Task04_Hippocampus``, as the other real-data tests do
(``tests/real_data.py``); the test is skipped, saying what to set and where to get the data, where it is absent.

nnU-Net's figures were produced once with nnunetv2 2.8.1 (torch 2.13 CPU) by ``nnUNetv2_convert_MSD_dataset``,
``nnUNetv2_extract_fingerprint -d 4 --verify_dataset_integrity`` and ``nnUNetv2_plan_experiment -d 4 -pl
nnUNetPlannerResEncM`` (8 GB), read from ``nnUNetResEncUNetMPlans.json``; see docs/benchmarks.md.
"""

import pytest

from mambaseg.data import load_dataset
from mambaseg.planning.fingerprint import extract_fingerprint
from mambaseg.planning.planner import plan_experiment
from tests.real_data import real_data, skip_reason

DATA = real_data("Task04_Hippocampus")
NNUNET_SPACING = [1.0, 1.0, 1.0]
NNUNET_PATCH = [40, 56, 40]
NNUNET_STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
NNUNET_2D_PATCH = [56, 40]


@pytest.mark.skipif(DATA is None, reason=skip_reason("Task04_Hippocampus"))
def test_resenc_plan_agrees_with_nnunet():
    fingerprint = extract_fingerprint(load_dataset(DATA), workers=2)
    plans = plan_experiment(fingerprint, gpu_memory_gb=8, network="unet_resenc")
    full = plans.configurations["3d_fullres"]
    assert full.spacing == pytest.approx(NNUNET_SPACING)
    for ours, theirs in zip(full.patch_size, NNUNET_PATCH, strict=True):
        assert theirs / 2 <= ours <= theirs * 2
    assert full.network_kwargs["strides"] == NNUNET_STRIDES
    assert plans.configurations["2d"].patch_size == NNUNET_2D_PATCH
