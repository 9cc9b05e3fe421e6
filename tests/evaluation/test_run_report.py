"""The run reports: a fold's and a dataset's self-contained HTML page, checked for structure."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
from pathlib import Path

import numpy as np
import pytest

from mambaseg.data import load_dataset
from mambaseg.evaluation.overlays import cut_axes, structure_centre
from mambaseg.evaluation.run_report import FoldReport, case_mean_dice, write_dataset_report, write_fold_report
from mambaseg.evaluation.summary import CasePair, evaluate_cases
from mambaseg.networks import create
from mambaseg.networks.registry import list_networks
from tests.data.synthetic import write_nifti, write_nnunet_dataset
from tests.evaluation.html_page import check_self_contained

PLAN = {
    "spatial_dims": 3,
    "spacing": [2.0, 1.0, 1.0],
    "median_shape": [8.0, 10.0, 12.0],
    "patch_size": [8, 8, 8],
    "batch_size": 2,
    "network": "unet_resenc",
    "network_kwargs": {"n_stages": 2},
    "normalization": [{"scheme": "zscore", "params": {}}],
    "estimated_memory_gb": 0.1,
}
CONFIG = {
    "batch_size": None,
    "trainer": {"num_epochs": 3, "iterations_per_epoch": 2, "amp": True},
    "precision": {"autocast": "bfloat16", "memory_format": "channels_last_3d", "device": "cuda"},
}
MACHINE = {"cpu": "Test CPU (avx2), 4 logical CPUs", "device": "cuda:0", "torch": "2.x", "gpu": "Test GPU"}


@pytest.fixture
def fold(tmp_path):
    """A fold's report inputs: a dataset of three cases, masks predicted (one good, one poor, one absent), scores."""
    root = write_nnunet_dataset(tmp_path / "raw" / "Dataset001_Tiny", n_cases=3, spacing=(1.0, 1.0, 2.0))
    dataset = load_dataset(root)
    pairs = []
    for index, case in enumerate(dataset.cases):
        label = np.rint(case.load_label().array).astype(np.uint8)
        prediction = [label, np.roll(label, 3, axis=2), np.zeros_like(label)][index]
        path = write_nifti(tmp_path / "validation" / f"{case.name}.nii.gz", prediction, (1.0, 1.0, 2.0))
        pairs.append(CasePair(case.name, path, case.label_file))
    summary = evaluate_cases(pairs, [1], label_names={1: "foreground"}, reference=root)
    metrics = tmp_path / "metrics.csv"
    with metrics.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_loss", "dice_1", "mean_dice", "ema_dice", "lr", "epoch_time"])
        for epoch in range(3):
            writer.writerow([epoch, 1 - 0.2 * epoch, 1 - 0.1 * epoch, 0.3 * epoch, 0.3 * epoch, 0.2 * epoch, 0.01, 2.5])
    times = {"device": "cuda:0", "precision": "bfloat16", "seconds": {case.name: 0.5 for case in dataset.cases}}
    return FoldReport(
        title="Tiny: 3d_fullres__unet_resenc fold 0",
        configuration="3d_fullres",
        plan=PLAN,
        config=CONFIG,
        parameters=1_234_567,
        machine=MACHINE,
        metrics=metrics,
        summary=summary,
        times=times,
        cases={case.name: case for case in dataset.cases},
    )


def test_a_fold_report_stands_alone_with_every_section_table_and_picture(fold, tmp_path):
    path = write_fold_report(fold, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    page = check_self_contained(text)
    assert page.headings == [
        "Plan",
        "Precision and machine",
        "Training",
        "Validation",
        "Best and worst validation cases",
    ]
    assert page.tables == [
        ["plan", "value"],
        ["class", "Dice", "HD95 (mm)", "NSD"],
        ["case", "class", "Dice", "HD95 (mm)", "NSD", "case mean Dice"],
    ]
    assert len(page.images) == 3  # the curves, the best case, the worst case
    for expected in ("unet_resenc", "1,234,567 (1.23 M)", "2 × 1 × 1", "8 × 8 × 8", "bfloat16 autocast", "Test GPU"):
        assert html.escape(expected) in text, expected
    means = case_mean_dice(fold.summary)
    assert means["case_000"] == pytest.approx(1.0) and means["case_002"] == pytest.approx(0.0)
    assert "best: case_000, mean Dice 1.000" in text and "worst: case_002, mean Dice 0.000" in text
    assert text.count("<tr><td>case_00") == 3  # one row per case and class


def test_a_fold_report_says_what_it_cannot_draw(fold, tmp_path):
    Path(fold.summary["cases"]["case_002"]["prediction_file"]).unlink()
    fold.metrics.unlink()
    text = write_fold_report(fold, tmp_path / "report.html").read_text(encoding="utf-8")
    page = check_self_contained(text)
    assert len(page.images) == 1  # the best case only
    assert f"{fold.metrics}: no training metrics" in text
    assert "worst: case_002, mean Dice 0.000: not drawn" in text and "case_002.nii.gz" in text

    unvalidated = dataclasses.replace(fold, summary=None, times=None)
    text = write_fold_report(unvalidated, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Not validated yet" in text and "<img" not in text and "http" not in text


def test_overlays_cut_three_axes_through_the_structure_or_one_slice_of_a_2d_case():
    mask = np.zeros((9, 10, 11), np.uint8)
    mask[2:5, 6:9, 1:4] = 1
    assert cut_axes(mask.shape) == [0, 1, 2] and structure_centre(mask, mask) == (3, 7, 2)
    assert structure_centre(np.zeros_like(mask), mask) == (3, 7, 2)  # no reference: the prediction's centre
    assert structure_centre(np.zeros_like(mask), np.zeros_like(mask)) == (4, 5, 5)
    assert cut_axes((1, 10, 11)) == [0] and cut_axes((10, 1, 11)) == [1]


def test_a_2d_case_gets_one_slice(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset002_Flat", n_cases=1, shape=(1, 16, 16), spacing=(1.0, 0.5, 0.5))
    case = load_dataset(root).cases[0]
    label = np.rint(case.load_label().array).astype(np.uint8)
    path = write_nifti(tmp_path / "validation" / f"{case.name}.nii.gz", label, (1.0, 0.5, 0.5))
    summary = evaluate_cases([CasePair(case.name, path, case.label_file)], [1], reference=root)
    report = FoldReport(
        "flat", "2d", PLAN, CONFIG, None, MACHINE, tmp_path / "metrics.csv", summary, None, {case.name: case}
    )
    page = check_self_contained(write_fold_report(report, tmp_path / "report.html").read_text(encoding="utf-8"))
    png = base64.b64decode(page.images[0].removeprefix("data:image/png;base64,"))
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width < height  # one column of slices (reference over prediction), not three side by side


INSTRUCTIONS = {
    "schema_version": 1,
    "dataset": "Tiny",
    "runs": ["Tiny/runs/3d_fullres__unet", "Tiny/runs/2d__unet"],
    "folds": [0, 1],
    "postprocessing": [{"op": "keep_largest_component", "labels": [1, 2], "jointly": True}],
    "ranking": [
        {
            "rank": 1,
            "candidate": "3d_fullres__unet + 2d__unet",
            "runs": ["Tiny/runs/3d_fullres__unet", "Tiny/runs/2d__unet"],
            "mean_dice": 0.8,
            "dice_per_class": {"1": 0.9, "2": 0.7},
        },
        {
            "rank": 2,
            "candidate": "3d_fullres__unet",
            "runs": ["Tiny/runs/3d_fullres__unet"],
            "mean_dice": 0.75,
            "dice_per_class": {"1": 0.85, "2": 0.65},
        },
        {
            "rank": 3,
            "candidate": "2d__unet",
            "runs": ["Tiny/runs/2d__unet"],
            "mean_dice": None,
            "dice_per_class": {"1": None, "2": None},
        },
    ],
    "skipped": [{"candidate": "3d_lowres__unet", "reason": "folds [1] not validated"}],
    "cross_validation": {
        "cases": 4,
        "mean_dice": 0.8,
        "mean_dice_postprocessed": 0.82,
        "dice_per_class": {"1": 0.9, "2": 0.7},
        "dice_per_class_postprocessed": {"1": 0.92, "2": 0.72},
    },
}


def test_a_dataset_report_shows_the_ranking_ensembles_and_choice(tmp_path):
    summary = {"cases": {"a": {}, "b": {}}, "foreground_mean": {"dice": 0.8, "hd95": 2.0, "nsd": 0.9}}
    folds = {
        "Tiny/runs/3d_fullres__unet": {0: summary, 1: summary},
        "Tiny/runs/2d__unet": {0: summary, 1: None},  # a fold whose summary cannot be read
    }
    names = {"1": "liver", "2": "tumour"}
    text = write_dataset_report(INSTRUCTIONS, names, folds, tmp_path / "report.html").read_text(encoding="utf-8")
    page = check_self_contained(text)
    assert page.headings == ["Chosen", "Ranking", "Ensembles", "Validation of the ranked runs' folds"]
    assert page.tables == [
        ["class", "Dice", "Dice after postprocessing"],
        ["rank", "candidate", "kind", "mean Dice", "liver", "tumour"],
        ["candidate", "reason"],
        ["run", "fold", "cases", "Dice", "HD95 (mm)", "NSD"],
    ]
    assert len(page.images) == 1
    assert "ensemble of Tiny/runs/3d_fullres__unet + Tiny/runs/2d__unet" in text
    assert "keep the largest connected component of liver, tumour together" in text
    assert "1 ensemble(s) ranked: 3d_fullres__unet + 2d__unet." in text and "folds [1] not validated" in text
    assert "mean Dice 0.8000, after postprocessing 0.8200" in text
    assert "<tr><td>Tiny/runs/2d__unet</td><td>1</td><td>n/a</td>" in text


def test_checkpoint_weights_are_the_parameters_of_every_network():
    """The reports count parameters from a checkpoint's weights: right while no network keeps a buffer in them."""
    for name in list_networks():
        for dims in (2, 3):
            model = create(name, dims, 1, 2, tiny=True)
            weights = sum(tensor.numel() for tensor in model.state_dict().values())
            assert weights == sum(p.numel() for p in model.parameters()), (name, dims)
