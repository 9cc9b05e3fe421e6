"""Writing a dataset as an nnU-Net v2 folder ``DatasetXXX_Name``; the source folder is only read.

Files that already hold one channel are copied byte for byte; a multi-channel (4-D) Decathlon image is
split into one file per channel.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mambaseg.data.dataset import Case, Dataset, read_dataset_json, split_file_ending
from mambaseg.io import read_image, write_image
from mambaseg.io.atomic import write_text_atomically

logger = logging.getLogger(__name__)

_CARRIED_KEYS = ("description", "reference", "licence", "release", "regions_class_order")
_DETACHED_HEADER_ENDINGS = (".mhd", ".nhdr")


def nnunet_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset004_Hippocampus`` for ``(4, "Hippocampus")``; runs of other characters than letters, digits, ``-``
    become ``_``."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be between 1 and 999, got {dataset_id}")
    clean = re.sub(r"[^A-Za-z0-9-]+", "_", name).strip("_")
    if not clean:
        raise ValueError(f"dataset name {name!r} has no letters or digits to name a folder with")
    return f"Dataset{dataset_id:03d}_{clean}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def convert_to_nnunetv2(dataset: Dataset, out_dir: str | Path, dataset_id: int, overwrite: bool = False) -> Path:
    """Writes ``out_dir/DatasetXXX_Name`` in the nnU-Net v2 layout and returns its path.

    The folder is assembled under a temporary name beside it and renamed when complete.

    Raises:
        ValueError: the target lies inside the source folder (or holds it).
        FileExistsError: the target exists and is not empty, and ``overwrite`` is False.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    target = out_dir / nnunet_folder_name(dataset_id, dataset.name)
    source = dataset.root.resolve()
    resolved = target.resolve()
    if resolved.is_relative_to(source) or source.is_relative_to(resolved):
        raise ValueError(f"{target}: refusing to write into or over the source dataset {dataset.root}")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target}: folder exists and is not empty; replace it with --overwrite (overwrite=True)")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{target.name}.", suffix=".partial"))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the dataset gets a new folder's usual mode
    try:
        for case in dataset.cases:
            _write_case(case, staging / "imagesTr", staging / "labelsTr", dataset)
        for case in dataset.test_images:
            _write_case(case, staging / "imagesTs", None, dataset)
        write_text_atomically(staging / "dataset.json", json.dumps(_description(dataset), indent=4) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.debug("wrote %s from %s", target, dataset.root)
    return target


def _write_case(case: Case, images_dir: Path, labels_dir: Path | None, dataset: Dataset) -> None:
    images_dir.mkdir(exist_ok=True)
    ending = dataset.file_ending
    n_channels = len(dataset.channel_names)
    if len(case.image_files) == n_channels:
        for channel, path in enumerate(case.image_files):
            _copy_or_write(path, images_dir / f"{case.name}_{channel:04d}{ending}")
    else:
        images = case.load_images()
        if len(images) != n_channels:
            raise ValueError(f"{case.image_files[0]}: {len(images)} channels, dataset.json declares {n_channels}")
        for channel, image in enumerate(images):
            write_image(image, images_dir / f"{case.name}_{channel:04d}{ending}")
    if labels_dir is not None and case.label_file is not None:
        labels_dir.mkdir(exist_ok=True)
        _copy_or_write(case.label_file, labels_dir / f"{case.name}{ending}")
    logger.debug("converted %s", case.name)


def _copy_or_write(source: Path, destination: Path) -> None:
    """A byte copy where the formats agree and the file stands alone, else a read and a write."""
    ending = split_file_ending(source.name)[1]
    if ending == split_file_ending(destination.name)[1] and ending not in _DETACHED_HEADER_ENDINGS:
        shutil.copyfile(source, destination)
    else:
        write_image(read_image(source), destination)


def _description(dataset: Dataset) -> dict[str, Any]:
    source = read_dataset_json(dataset.root)
    description: dict[str, Any] = {
        "name": dataset.name,
        "channel_names": {str(index): name for index, name in dataset.channel_names.items()},
        "labels": dataset.labels,
        "numTraining": len(dataset.cases),
        "file_ending": dataset.file_ending,
    }
    description.update({key: source[key] for key in _CARRIED_KEYS if key in source})
    description["converted_from"] = f"{dataset.root} ({dataset.layout} layout)"
    return description
