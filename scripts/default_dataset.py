"""The dataset the benchmarks use when given none: ``$MAMBASEG_REAL_DATA/Task04_Hippocampus``.

``MAMBASEG_REAL_DATA`` names a folder of real data (the one the opt-in real-data tests read); its
``Task04_Hippocampus/`` is the Medical Segmentation Decathlon's Task04, from medicaldecathlon.com.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "MAMBASEG_REAL_DATA"
TASK04 = "Task04_Hippocampus"


def task04_default() -> Path | None:
    """``$MAMBASEG_REAL_DATA/Task04_Hippocampus``, or None where the variable is unset or empty."""
    root = os.environ.get(VARIABLE)
    return Path(root) / TASK04 if root else None


def require_dataset(dataset: Path | None, how: str = "--dataset DATASET") -> Path:
    """The dataset given or found by default; without either, exits with one line saying what to do.

    Args:
        dataset: the dataset argument after parsing (None where neither it nor the variable was given).
        how: how this script takes the dataset on its command line.
    """
    if dataset is None:
        raise SystemExit(
            f"no dataset: pass {how} or set {VARIABLE} to a folder holding {TASK04}/ "
            f"(the Medical Segmentation Decathlon's Task04, downloadable from medicaldecathlon.com)"
        )
    return dataset
