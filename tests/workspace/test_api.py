"""The pipeline from Python (``mambaseg.workspace``), as a notebook user runs it: plan, train, find-best, predict."""

import json

import numpy as np
import pytest

from mambaseg import workspace as ms
from mambaseg.data import load_dataset
from mambaseg.io import read_image
from tests.data.synthetic import write_nnunet_dataset

TINY = ["trainer=cpu_short", "trainer.num_epochs=1", "trainer.iterations_per_epoch=2", "trainer.val_iterations=1"]
TINY += ["num_workers=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    dataset = write_nnunet_dataset(root / "Dataset001_Tiny", n_cases=5, n_test=2, shape=(8, 12, 12), spacing=(1, 1, 1))
    ws = ms.resolve_workspace(root / "ws")
    plans = ms.plan(dataset, ws, network="unet_resenc", workers=1)
    result = ms.train(dataset, ws, "3d_fullres", fold=0, overrides=TINY, device="cpu", workers=1)
    return ws, dataset, plans, result


@pytest.mark.slow
def test_each_stage_returns_what_it_wrote(trained):
    ws, dataset, plans, result = trained
    files = ws.dataset("Synthetic")
    assert json.loads(files.plans.read_text())["configurations"]["3d_fullres"]["network"] == "unet_resenc"
    assert plans.configurations["3d_fullres"].network == "unet_resenc"
    assert result.fold == files.run("3d_fullres", "unet_resenc").fold(0)
    assert result.fold.checkpoints.final.is_file() and result.fold.validation_summary.is_file()
    assert json.loads(result.fold.validation_summary.read_text())["cases"].keys() == result.validation["cases"].keys()
    assert result.fold.validation_scores.table.is_file()
    split = json.loads(files.splits.read_text())[0]["val"]
    assert sorted(p.name for p in result.fold.validation.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in split)


@pytest.mark.slow
def test_find_best_then_predict_from_python(trained, tmp_path):
    ws, dataset, _, result = trained
    instructions = ms.find_best(dataset, ws, folds=[0])
    assert instructions.runs == ["Synthetic/runs/3d_fullres__unet_resenc"]
    assert ws.dataset("Synthetic").instructions.is_file()
    by_dataset = ms.predict(dataset / "imagesTs", tmp_path / "d", dataset="Synthetic", workspace=ws, device="cpu")
    by_run = ms.predict(dataset / "imagesTs", tmp_path / "m", model=result.fold.folder.parent, device="cpu")
    assert sorted(by_dataset.predicted) == sorted(by_run.predicted) == ["case_005", "case_006"]
    for case in by_run.predicted:
        mask = read_image(tmp_path / "m" / f"{case}.nii.gz")
        assert mask.same_geometry(read_image(dataset / "imagesTs" / f"{case}_0000.nii.gz"))
        postprocessed = read_image(tmp_path / "d" / f"{case}.nii.gz").array
        assert set(np.unique(postprocessed)) <= {0, 1, 2}


def test_stage_errors_name_the_parameter(tmp_path):
    dataset = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=2)
    with pytest.raises(ValueError, match=r"step 2: must be between 0.1 and 1"):
        ms.predict(dataset / "imagesTr", tmp_path / "out", model=tmp_path, step=2)
    with pytest.raises(ValueError, match="give one of model"):
        ms.predict(dataset / "imagesTr", tmp_path / "out")
    with pytest.raises(ms.DatasetCheckError) as caught:
        (dataset / "labelsTr" / "case_000.nii.gz").write_bytes(b"not an image")
        ms.plan(dataset, tmp_path / "ws", workers=1)
    assert caught.value.dataset.name == load_dataset(dataset).name and not caught.value.report.ok
