"""Fine-tuning from a VMamba v2 (``vssm1``) checkpoint through the CLI: plan, choose the v2 encoder in ``plans.json``,
train with ``network.pretrained``; every encoder tensor of the checkpoint is taken, and one of another layout is
refused before training. The checkpoint is random tensors under the official names, at a test size
(``tests/networks/test_vmamba_v2.py`` checks the official sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mambaseg.cli.main import main
from tests.data.synthetic import write_nnunet_dataset
from tests.networks.test_vmamba_v2 import random_checkpoint, vssm1_shapes

LAYOUT = {"dims": 8, "depths": (1, 1, 1, 1), "ssm_ratio": 1.0}  # the vssm1 layout at a test size
TRAIN = [
    "-c",
    "2d",
    "-n",
    "vmunet",
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=1",
    "trainer.val_iterations=1",
    "num_workers=0",
    "validation.step=1",
]


def _checkpoint(path: Path, **layout) -> Path:
    shapes = vssm1_shapes(layout["dims"], layout["depths"], layout["ssm_ratio"])
    torch.save({"model": random_checkpoint(shapes)}, path)
    return path


@pytest.mark.slow
def test_a_v2_checkpoint_fine_tunes_vmunet_chosen_in_the_plans(tmp_path, capsys, caplog):
    dataset = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, shape=(4, 32, 32), spacing=(1, 1, 1))
    ws = tmp_path / "ws"
    assert main(["plan", str(dataset), "--workspace", str(ws), "--network", "vmunet"]) == 0
    plans_file = ws / "Synthetic" / "plans.json"
    plans = json.loads(plans_file.read_text())
    depths = list(LAYOUT["depths"])
    kwargs = {"vss_version": "v2", "dims": 8, "depths": depths, "decoder_depths": depths, "d_state": 1}
    plans["configurations"]["2d"]["network_kwargs"].update({**kwargs, "ssm_ratio": LAYOUT["ssm_ratio"]})
    plans_file.write_text(json.dumps(plans, indent=2))

    other = _checkpoint(tmp_path / "v2_wider.pth", **{**LAYOUT, "dims": 16})
    command = ["train", str(dataset), "--workspace", str(ws), "-f", "0", *TRAIN]
    capsys.readouterr()
    assert main([*command, f"network.pretrained={other}"]) == 1
    assert "v2_wider.pth" in " ".join(capsys.readouterr().out.split())

    ckpt = _checkpoint(tmp_path / "vssm1_mini.pth", **LAYOUT)
    caplog.set_level("INFO")
    assert main([*command, f"network.pretrained={ckpt}"]) == 0
    line = next(r.getMessage() for r in caplog.records if "encoder tensors loaded" in r.getMessage())
    loaded, total = (int(n) for n in line.split(": ")[-1].split(" encoder")[0].split(" of "))
    assert loaded == total > 0
    fold = ws / "Synthetic" / "runs" / "2d__vmunet" / "fold_0"
    assert (fold / "checkpoint_final.pt").is_file() and (fold / "validation" / "summary.json").is_file()
