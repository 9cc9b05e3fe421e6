"""Cross-validation splits, stored as ``splits.json``: ``[{"train": [...], "val": [...]}, ...]``, one entry a fold.

The splits are those of nnU-Net: the case names sorted, their indices shuffled once with a seeded numpy
``RandomState`` and cut into ``n_folds`` contiguous validation folds (the first ``n % n_folds`` one case
longer), as scikit-learn's ``KFold(shuffle=True, random_state=seed)`` does. The same seed gives the same
splits.

An existing ``splits.json`` is checked against the dataset's cases every time it is read: one that names a case
the dataset no longer has is refused (``SplitsError``, listing the cases); cases of the dataset that no fold uses
(added after the file was written, or left out by a user's own splits) are named in a warning. Either way,
deleting the file makes new splits of the current cases on the next use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.io.atomic import write_atomically

logger = logging.getLogger(__name__)

DEFAULT_SEED = 12345
Split = dict[str, list[str]]
_LISTED = 10


class SplitsError(ValueError):
    """A ``splits.json`` that cannot be used with the dataset's cases."""


def make_splits(case_names: Iterable[str], n_folds: int = 5, seed: int = DEFAULT_SEED) -> list[Split]:
    """``n_folds`` folds in which every case is in exactly one validation set.

    Args:
        case_names: The training cases; their order does not matter.
        n_folds: Number of folds, at least 2 and at most the number of cases.
        seed: Seed of the shuffle.
    """
    names = sorted(case_names)
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique, got duplicates in {names}")
    if not 2 <= n_folds <= len(names):
        raise ValueError(f"n_folds must be between 2 and the number of cases ({len(names)}), got {n_folds}")
    order = np.arange(len(names))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, len(names) // n_folds)
    sizes[: len(names) % n_folds] += 1
    splits = []
    start = 0
    for size in sizes:
        in_val = np.zeros(len(names), dtype=bool)
        in_val[order[start : start + size]] = True
        start += size
        splits.append(
            {
                "train": [name for name, val in zip(names, in_val, strict=True) if not val],
                "val": [name for name, val in zip(names, in_val, strict=True) if val],
            }
        )
    return splits


def load_or_create_splits(
    path: str | Path, case_names: Iterable[str], n_folds: int = 5, seed: int = DEFAULT_SEED
) -> list[Split]:
    """The splits in ``path`` if it exists (a user's own splits are honoured), else new ones written there.

    Cases of ``case_names`` that no fold of an existing ``path`` uses are named in a warning (see ``read_splits``).

    Raises:
        SplitsError: ``path`` is not a list of ``{"train": [...], "val": [...]}`` or names a case not in
            ``case_names``.
    """
    path = Path(path)
    names = list(case_names)
    if path.exists():
        splits = read_splits(path, names)
        logger.info("using the %d folds of %s", len(splits), path)
        return splits
    splits = make_splits(names, n_folds, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(splits, indent=2) + "\n"
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))
    logger.info("wrote %d folds (seed %d) to %s", n_folds, seed, path)
    return splits


def read_splits(path: Path, case_names: Iterable[str]) -> list[Split]:
    """Reads and validates ``path`` against the dataset's case names.

    Raises:
        SplitsError: the file is not valid splits, or names cases that are not among ``case_names`` (removed
            from the dataset); the message lists them and says to delete the file to make new splits.

    Cases of ``case_names`` that are in no fold (added to the dataset after the file was written) are logged as
    a warning naming them: no fold trains or validates them.
    """
    try:
        content: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SplitsError(f"{path}: cannot be read as JSON: {error}") from error
    if not isinstance(content, list) or not content:
        raise SplitsError(f"{path}: expected a non-empty list of {{'train': [...], 'val': [...]}}, one per fold")
    known = set(case_names)
    splits = []
    for fold, entry in enumerate(content):
        if not isinstance(entry, dict) or set(entry) != {"train", "val"}:
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise SplitsError(f"{path}: fold {fold} must have exactly the keys 'train' and 'val', got {keys}")
        for part in ("train", "val"):
            names = entry[part]
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise SplitsError(f"{path}: fold {fold} '{part}' must be a list of case names")
        if not entry["val"]:
            raise SplitsError(f"{path}: fold {fold} has no validation cases")
        both = sorted(set(entry["train"]) & set(entry["val"]))
        if both:
            raise SplitsError(f"{path}: fold {fold} has cases in both 'train' and 'val': {both[:5]}")
        splits.append({"train": list(entry["train"]), "val": list(entry["val"])})
    used = {name for split in splits for part in split.values() for name in part}
    removed = sorted(used - known)
    if removed:
        raise SplitsError(
            f"{path}: names {len(removed)} case(s) the dataset does not have: {_listing(removed)}; "
            f"delete {path.name} to make new splits of the current cases (folds trained before used the old ones)"
        )
    added = sorted(known - used)
    if added:
        logger.warning(
            "%s: %d case(s) of the dataset are in no fold and will be neither trained on nor validated: %s; "
            "delete %s to make new splits that include them (folds trained before used the old ones)",
            path,
            len(added),
            _listing(added),
            path.name,
        )
    return splits


def _listing(names: list[str]) -> str:
    """``names`` for a message: the first few, and how many more."""
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"
