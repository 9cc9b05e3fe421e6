"""A synthetic workspace of trained runs: a dataset, its splits, and validation masks written by the tests.

Cases are ``case_000`` .. ``case_003`` of shape (8, 10, 12) with labels 1 and 2 (adjacent boxes, see
``tests.data.synthetic.case_arrays``); fold 0 validates the first two cases, fold 1 the last two.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mambaseg.data import load_dataset
from tests.data.synthetic import write_nifti, write_nnunet_dataset

LABELS = {"background": 0, "liver": 1, "tumour": 2}
SPACING = (1.0, 1.0, 2.0)
SPLITS = [
    {"train": ["case_002", "case_003"], "val": ["case_000", "case_001"]},
    {"train": ["case_000", "case_001"], "val": ["case_002", "case_003"]},
]

Corruption = Callable[[np.ndarray], np.ndarray]


def with_blob(mask: np.ndarray) -> np.ndarray:
    """The mask plus a spurious 8-voxel blob of label 1 in a corner, apart from everything."""
    mask = mask.copy()
    mask[0:2, 0:2, 0:2] = 1
    return mask


def shrunk(mask: np.ndarray) -> np.ndarray:
    """The mask without its last two foreground rows along y: a clearly worse prediction."""
    mask = mask.copy()
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    mask[:, rows[-2:], :] = 0
    return mask


def make_dataset(workspace: Path) -> Path:
    """The dataset in ``workspace/raw``, where commands find it by name."""
    return write_nnunet_dataset(workspace / "raw" / "Dataset001_Synthetic", n_cases=4, labels=LABELS, spacing=SPACING)


def write_splits(workspace: Path) -> None:
    (workspace / "Synthetic").mkdir(parents=True, exist_ok=True)
    (workspace / "Synthetic" / "splits.json").write_text(json.dumps(SPLITS))


def write_run(
    workspace: Path,
    dataset_root: Path,
    run: str,
    corrupt: Corruption,
    folds: tuple[int, ...] = (0, 1),
    probabilities: bool = False,
) -> Path:
    """Validation folders of ``run`` holding ``corrupt(ground truth)`` for each case (and one-hot npz if asked)."""
    dataset = load_dataset(dataset_root)
    cases = {case.name: case for case in dataset.cases}
    run_dir = workspace / dataset.name / "runs" / run
    for fold in folds:
        validation = run_dir / f"fold_{fold}" / "validation"
        for name in SPLITS[fold]["val"]:
            mask = corrupt(np.rint(cases[name].load_label().array).astype(np.uint8))
            write_nifti(validation / f"{name}.nii.gz", mask, SPACING)
            if probabilities:
                one_hot = np.eye(len(LABELS), dtype=np.float16)[mask].transpose(3, 0, 1, 2)  # (k, z, y, x)
                np.savez_compressed(validation / f"{name}.npz", probabilities=one_hot)
        (validation / "summary.json").write_text("{}\n")
    return run_dir
