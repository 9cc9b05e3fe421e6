"""The cascade through the CLI: plan (3d_lowres + 3d_cascade_fullres), train the lowres folds, train the cascade
on their validation masks, predict with the chain, and find-best ranking the cascade run."""

import json

import nibabel as nib
import numpy as np
import pytest

from mambaseg.cli.main import main
from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.planning.plans import load_plans
from mambaseg_datasets.large_synthetic import write_large_synthetic_dataset

TINY = [
    "-n",
    "unet_resenc",
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "num_workers=0",
    "validation.step=1",
]


def train(dataset, workspace, configuration, fold):
    return main(["train", str(dataset), "--workspace", str(workspace), "-c", configuration, "-f", str(fold), *TINY])


@pytest.mark.slow
def test_cascade_plans_trains_on_lowres_validation_masks_and_predicts_the_chain(tmp_path, capsys):
    dataset = write_large_synthetic_dataset(tmp_path / "raw", n_train=5, n_test=1, shape=(24, 24, 24), seed=3)
    ws = tmp_path / "ws"
    assert main(["plan", str(dataset), "--workspace", str(ws), "--gpu-memory", "0.05", "--network", "unet_resenc"]) == 0
    files = ws / "LargeSynthetic"
    plans = load_plans(files / "plans.json")
    assert list(plans.configurations) == ["3d_lowres", "3d_fullres", "3d_cascade_fullres", "2d"]
    cascade, full = plans.configurations["3d_cascade_fullres"], plans.configurations["3d_fullres"]
    assert cascade.previous_stage == "3d_lowres" and cascade.previous_stage_labels == [1]
    assert (cascade.spacing, cascade.patch_size) == (full.spacing, full.patch_size)

    assert train(dataset, ws, "3d_cascade_fullres", 0) == 1  # no lowres run yet
    assert "no 3d_lowres run" in capsys.readouterr().out
    for fold in range(4):
        assert train(dataset, ws, "3d_lowres", fold) == 0
    assert train(dataset, ws, "3d_cascade_fullres", 0) == 1  # fold 4 validates a training case of the cascade
    shown = capsys.readouterr().out
    assert "fold 4" in shown and "mambaseg train LargeSynthetic -c 3d_lowres -f 4 -n unet_resenc" in shown
    assert train(dataset, ws, "3d_lowres", 4) == 0

    assert train(dataset, ws, "3d_cascade_fullres", 0) == 0
    run = files / "runs" / "3d_cascade_fullres__unet_resenc"
    weights = load_checkpoint(run / "fold_0" / "checkpoint_final.pt").model
    first_conv = next(value for key, value in weights.items() if value.dim() == 5)
    assert first_conv.shape[1] == 2  # one image channel + one one-hot lowres channel
    assert not (files / "preprocessed" / "3d_cascade_fullres").exists()  # shares 3d_fullres's preprocessed cases
    splits = json.loads((files / "splits.json").read_text())
    for k, split in enumerate(splits):  # each case's lowres mask is the one of the fold that held it out
        (case,) = split["val"]
        grid = files / "runs" / "3d_lowres__unet_resenc" / f"fold_{k}" / "predicted_next_stage" / "3d_cascade_fullres"
        record = json.loads((grid / f"{case}.json").read_text())
        assert record["mask"].endswith(f"fold_{k}/validation/{case}.nii.gz")
        with (
            np.load(grid / f"{case}.npz") as archive,
            np.load(files / "preprocessed" / "3d_fullres" / f"{case}.npz") as pre,
        ):
            assert archive["seg"].shape == pre["seg"].shape
    summary = json.loads((run / "fold_0" / "validation" / "summary.json").read_text())
    assert len(summary["cases"]) == 1  # the cascade validated its held-out case

    out = tmp_path / "masks"
    images = dataset / "imagesTs"
    assert main(["predict", "-i", str(images), "-o", str(out), "-m", str(run), "--no-mirroring", "--step", "1"]) == 0
    source = nib.load(images / "large_005_0000.nii.gz")
    mask = nib.load(out / "large_005.nii.gz")
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}

    capsys.readouterr()
    assert main(["find-best", str(dataset), "--workspace", str(ws), "--folds", "0"]) == 0
    assert "3d_cascade_fullres__unet_resenc" in capsys.readouterr().out
