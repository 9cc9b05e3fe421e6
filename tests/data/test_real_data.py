"""The Decathlon hippocampus dataset in ``$MAMBASEG_REAL_DATA/Task04_Hippocampus``; skipped where it is absent."""

import dataclasses

import pytest

from mambaseg.data import check_dataset, load_dataset, make_splits
from tests.real_data import real_data, skip_reason

HIPPOCAMPUS = real_data("Task04_Hippocampus")

pytestmark = pytest.mark.skipif(HIPPOCAMPUS is None, reason=skip_reason("Task04_Hippocampus"))


def test_hippocampus_loads():
    dataset = load_dataset(HIPPOCAMPUS)
    assert dataset.layout == "decathlon"
    assert dataset.name == "Hippocampus"
    n = len(dataset.cases)
    assert 208 <= n <= 260  # the Decathlon's 260 training cases, or a subset of them (the developers' copy: 208)
    assert dataset.labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert dataset.channel_names == {0: "MRI"}
    assert dataset.cases[0].name == "hippocampus_001"
    images = dataset.cases[0].load_images()
    assert len(images) == 1 and images[0].ndim == 3
    folds = sorted(len(fold["val"]) for fold in make_splits(dataset.case_names()))
    assert sum(folds) == n and folds[-1] - folds[0] <= 1  # five folds as even as the cases allow


def test_hippocampus_checks_clean():
    dataset = load_dataset(HIPPOCAMPUS)
    subset = dataclasses.replace(dataset, cases=dataset.cases[:10])
    report = check_dataset(subset, max_workers=2)
    assert report.ok, report.format()
    assert all("belong to no case" in problem.message for problem in report.warnings)
