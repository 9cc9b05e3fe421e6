"""Fine-tuning a trained network on another dataset: `plan --plans-from`, then `train network.pretrained=FOLD`."""

import hashlib
import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from mambaseg.cli.main import main
from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.planning.model import build_network
from mambaseg.planning.plans import load_plans
from mambaseg.training.fine_tuning import prepare_fine_tuning
from tests.data.synthetic import write_nnunet_dataset

TINY = [
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "num_workers=0",
]
RUN = ["-c", "3d_fullres", "-n", "unet_resenc", "-f", "0"]


def rescale_images(root, scale, shift):
    """Another intensity range: every image of the dataset times ``scale`` plus ``shift``."""
    for path in sorted((root / "imagesTr").glob("*.nii.gz")):
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32) * scale + shift
        nib.save(nib.Nifti1Image(data, image.affine), str(path))


@pytest.mark.slow
def test_a_network_trained_on_one_dataset_is_fine_tuned_on_another(tmp_path, caplog):
    ws = tmp_path / "ws"
    source = write_nnunet_dataset(
        tmp_path / "raw" / "A",
        n_cases=5,
        shape=(8, 12, 12),
        spacing=(1, 1, 1),
        labels={"background": 0, "organ": 1, "lesion": 2},
        name="SourceA",
    )
    target = write_nnunet_dataset(
        tmp_path / "raw" / "B", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1), name="TargetB", prefix="other"
    )
    rescale_images(target, 3.0, 500.0)
    assert main(["plan", str(source), "--workspace", str(ws), "--network", "unet_resenc"]) == 0
    assert main(["train", str(source), "--workspace", str(ws), *RUN, *TINY]) == 0
    source_fold = ws / "SourceA" / "runs" / "3d_fullres__unet_resenc" / "fold_0"

    assert main(["plan", str(target), "--workspace", str(ws), "--plans-from", "SourceA"]) == 0
    plans_a, plans_b = load_plans(ws / "SourceA" / "plans.json"), load_plans(ws / "TargetB" / "plans.json")
    assert plans_b.plans_from == {
        "dataset": "SourceA",
        "file": str((ws / "SourceA" / "plans.json").resolve()),
        "sha256": hashlib.sha256((ws / "SourceA" / "plans.json").read_bytes()).hexdigest(),
    }
    assert plans_b.dataset_name == "TargetB" and plans_b.labels == {"background": 0, "foreground": 1}
    assert plans_a.num_classes == 3 and plans_b.num_classes == 2
    for name, plan_a in plans_a.configurations.items():
        plan_b = plans_b.configurations[name]
        assert (plan_b.network, plan_b.network_kwargs) == (plan_a.network, plan_a.network_kwargs)
        assert (plan_b.patch_size, plan_b.batch_size, plan_b.spacing) == (
            plan_a.patch_size,
            plan_a.batch_size,
            plan_a.spacing,
        )
        stats_a, stats_b = plan_a.normalization[0].params, plan_b.normalization[0].params
        assert plan_b.normalization[0].scheme == "ct"  # B's channel name, B's foreground statistics
        assert stats_b["mean"] == pytest.approx(3.0 * stats_a["mean"] + 500.0, rel=0.2)
        assert stats_b["mean"] == plans_b.fingerprint["foreground_intensities"]["0"]["mean"]

    fine_tune = ["train", str(target), "--workspace", str(ws), *RUN, *TINY, f"network.pretrained={source_fold}"]
    with caplog.at_level(logging.INFO, logger="mambaseg"):
        assert main(fine_tune) == 0
    checkpoint_a = source_fold / "checkpoint_final.pt"
    state_a = load_checkpoint(checkpoint_a).model
    heads = sorted(key for key in state_a if key.startswith("decoder.heads."))
    assert heads  # the output layers of 3 classes do not fit 2
    assert f"{len(state_a) - len(heads)} of {len(state_a)} tensors loaded" in caplog.text
    for key in heads:
        assert f"{key} (shape differs" in caplog.text
    target_fold = ws / "TargetB" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    recorded = yaml.safe_load((target_fold / "config.yaml").read_text())
    assert recorded["network"]["pretrained"] == str(checkpoint_a.resolve())
    assert json.loads((target_fold / "validation" / "summary.json").read_text())["cases"]

    model = build_network(plans_b, plans_b.configurations["3d_fullres"])  # the weights B starts from, at step 0
    prepare_fine_tuning(model, {"pretrained": recorded["network"]["pretrained"]})
    start = model.state_dict()
    first_conv = next(key for key in start if key.startswith("encoder.") and start[key].dim() == 5)
    assert torch.equal(start[first_conv], state_a[first_conv])
    assert all(torch.equal(start[key], state_a[key]) for key in state_a if key not in heads)
    assert not torch.equal(load_checkpoint(target_fold / "checkpoint_final.pt").model[first_conv], state_a[first_conv])

    images, out = tmp_path / "new", tmp_path / "masks"
    images.mkdir()
    (images / "other_000_0000.nii.gz").write_bytes((target / "imagesTr" / "other_000_0000.nii.gz").read_bytes())
    predict = ["predict", "-i", str(images), "-o", str(out), "-m", str(target_fold.parent), "--workspace", str(ws)]
    assert main([*predict, "--device", "cpu"]) == 0
    mask = np.asarray(nib.load(str(out / "other_000.nii.gz")).dataobj)
    assert mask.shape == (12, 12, 8) and set(np.unique(mask)) <= {0, 1}
