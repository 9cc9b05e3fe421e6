"""The Decathlon hippocampus dataset from the shared data folder; skipped where it is absent."""

import dataclasses
from pathlib import Path

import pytest

from mambaseg.data import check_dataset, load_dataset, make_splits

HIPPOCAMPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "Task04_Hippocampus"

pytestmark = pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason=f"{HIPPOCAMPUS} not present")


def test_hippocampus_loads():
    dataset = load_dataset(HIPPOCAMPUS)
    assert dataset.layout == "decathlon"
    assert dataset.name == "Hippocampus"
    assert len(dataset.cases) == 208
    assert dataset.labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert dataset.channel_names == {0: "MRI"}
    assert dataset.cases[0].name == "hippocampus_001"
    images = dataset.cases[0].load_images()
    assert len(images) == 1 and images[0].ndim == 3
    assert sorted(len(fold["val"]) for fold in make_splits(dataset.case_names())) == [41, 41, 42, 42, 42]


def test_hippocampus_checks_clean():
    dataset = load_dataset(HIPPOCAMPUS)
    subset = dataclasses.replace(dataset, cases=dataset.cases[:10])
    report = check_dataset(subset, max_workers=2)
    assert report.ok, report.format()
    assert all("belong to no case" in problem.message for problem in report.warnings)
