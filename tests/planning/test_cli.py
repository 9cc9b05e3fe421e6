"""``mambaseg fingerprint`` and ``mambaseg plan`` on a tiny synthetic dataset."""

import json

import numpy as np

from mambaseg.cli.main import main
from mambaseg.planning.plans import load_plans
from tests.data.synthetic import write_nifti, write_nnunet_dataset


def test_plan_runs_fingerprint_and_writes_plans(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=3, shape=(16, 24, 24), spacing=(1.0, 1.0, 2.0))
    workspace = tmp_path / "ws"
    args = ["plan", str(root), "--workspace", str(workspace), "--workers", "1", "--network", "unet_resenc"]
    assert main(args) == 0
    fingerprint = json.loads((workspace / "Synthetic" / "fingerprint.json").read_text())
    assert fingerprint["num_cases"] == 3
    np.testing.assert_allclose(fingerprint["median_spacing"], [2.0, 1.0, 1.0])
    plans = load_plans(workspace / "Synthetic" / "plans.json")
    assert plans.configurations["3d_fullres"].network == "unet_resenc"
    assert plans.configurations["3d_fullres"].normalization[0].scheme == "ct"


def test_fingerprint_stops_on_check_errors(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset002_Broken", n_cases=2)
    write_nifti(root / "labelsTr" / "case_000.nii.gz", np.full((8, 10, 12), 7, dtype=np.uint8))  # 7: not a label
    assert main(["fingerprint", str(root), "--workspace", str(tmp_path / "ws"), "--workers", "1"]) == 1
    assert not (tmp_path / "ws").exists()
