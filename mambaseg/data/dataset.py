"""Dataset folders in the nnU-Net v2 or the Medical Segmentation Decathlon layout.

nnU-Net v2::

    dataset.json      {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                       "numTraining": 3, "file_ending": ".nii.gz"}
    imagesTr/CASE_0000.nii.gz, CASE_0001.nii.gz, ...   one file per channel
    labelsTr/CASE.nii.gz
    imagesTs/CASE_0000.nii.gz                           optional, no labels

A case whose only image file is ``CASE_0000`` holds every channel in it (nnU-Net's natural images:
``CASE_0000.png`` in RGB for ``{"0": "R", "1": "G", "2": "B"}``).

An nnU-Net v2 ``dataset.json`` may instead list the files under ``"dataset"``:
``{"CASE": {"images": ["a.nii.gz", ...], "label": "b.nii.gz"}}`` (paths relative to the folder).

Decathlon::

    dataset.json      {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior"},
                       "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
                       "test": ["./imagesTs/y.nii.gz"]}

where a multi-channel image is one 4-D file, split into channels when read.

Loading only reads ``dataset.json`` and lists folders; ``mambaseg.data.check`` reads the images.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mambaseg.io import ChannelFilesError, Image, read_case_channels, read_image_channels

logger = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
KNOWN_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".bmp", ".tiff", ".tif", ".dcm")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class DatasetError(ValueError):
    """A dataset folder or its ``dataset.json`` cannot be loaded."""


@dataclass(frozen=True)
class Case:
    """One case: its image files (one per channel, or one multi-channel file) and its label file."""

    name: str
    image_files: tuple[Path, ...]
    label_file: Path | None

    def load_images(self) -> list[Image]:
        """One image per channel, in channel order: a single file (4-D NIfTI, RGB PNG) is split into its channels,
        several files give one channel each (``mambaseg.io.read_case_channels``)."""
        return read_case_channels(self.image_files)

    def load_label(self) -> Image | None:
        """The label map, or None for a case without one.

        Raises:
            ChannelFilesError: a label file of several channels (an RGB PNG), naming it.
        """
        if self.label_file is None:
            return None
        channels = read_image_channels(self.label_file)
        if len(channels) != 1:
            raise ChannelFilesError(
                self.label_file,
                f"a label map has one channel, this file holds {len(channels)} (an RGB PNG, a 4-D NIfTI?); save it "
                "as a single-channel image of label values (a greyscale PNG, a 3-D NIfTI)",
            )
        return channels[0]


@dataclass(frozen=True)
class Dataset:
    """A dataset folder as described by its ``dataset.json``."""

    root: Path
    layout: str
    name: str
    channel_names: dict[int, str]
    labels: dict[str, int | list[int]]
    file_ending: str
    cases: tuple[Case, ...]
    test_images: tuple[Case, ...]
    ignore_label: int | None

    @property
    def dataset_json(self) -> Path:
        return self.root / DATASET_JSON

    @property
    def has_regions(self) -> bool:
        """Whether some label is a region (a list of label values)."""
        return any(isinstance(value, list) for value in self.labels.values())

    @property
    def regions_class_order(self) -> list[int]:
        """The label each region's voxels get in a mask, one per foreground region, from ``dataset.json``.

        Raises:
            DatasetError: a region-based dataset without a valid ``regions_class_order``; a dataset without regions.
        """
        regions = [v for k, v in self.labels.items() if k != "ignore" and (isinstance(v, list) or v != 0)]
        order = read_dataset_json(self.root).get("regions_class_order")
        if not self.has_regions or not isinstance(order, list) or len(order) != len(regions):
            raise DatasetError(
                f"{self.dataset_json}: regions_class_order {order!r} must give one label per region {regions}"
            )
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in order):
            raise DatasetError(f"{self.dataset_json}: regions_class_order {order!r} must be labels > 0")
        return list(order)

    def case_names(self) -> list[str]:
        return [case.name for case in self.cases]


def load_dataset(root: str | Path) -> Dataset:
    """Reads ``root/dataset.json`` and lists the cases; the layout (nnU-Net v2 or Decathlon) is detected.

    Raises:
        DatasetError: naming ``dataset.json`` (or the folder) and the problem.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    description = read_dataset_json(root)
    if "channel_names" in description:
        dataset = _load_nnunetv2(root, description)
    elif "modality" in description:
        dataset = _load_decathlon(root, description)
    else:
        raise DatasetError(
            f"{root / DATASET_JSON}: neither 'channel_names' (nnU-Net v2) nor 'modality' (Decathlon) is given"
        )
    declared = description.get("numTraining")
    if declared is not None and declared != len(dataset.cases):
        logger.warning(
            "%s: numTraining is %s but %d cases were found", dataset.dataset_json, declared, len(dataset.cases)
        )
    logger.debug("loaded %s: %s layout, %d training cases", root, dataset.layout, len(dataset.cases))
    return dataset


def read_dataset_json(root: Path) -> dict[str, Any]:
    """The parsed ``root/dataset.json``."""
    path = root / DATASET_JSON
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: not found; a dataset folder needs a dataset.json") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read as JSON: {error}") from error
    if not isinstance(description, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(description).__name__}")
    return description


def split_file_ending(filename: str) -> tuple[str, str]:
    """``("case_001", ".nii.gz")`` for ``"case_001.nii.gz"``; known multi-dot endings are kept whole."""
    for ending in KNOWN_FILE_ENDINGS:
        if filename.lower().endswith(ending) and len(filename) > len(ending):
            return filename[: -len(ending)], filename[-len(ending) :]
    stem, dot, suffix = filename.rpartition(".")
    return (stem, dot + suffix) if dot and stem else (filename, "")


def _load_nnunetv2(root: Path, description: dict[str, Any]) -> Dataset:
    json_path = root / DATASET_JSON
    channel_names = _parse_channel_names(description["channel_names"], "channel_names", json_path)
    labels = _parse_nnunet_labels(description.get("labels"), json_path)
    file_ending = description.get("file_ending")
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise DatasetError(f"{json_path}: 'file_ending' must be a string such as '.nii.gz', got {file_ending!r}")
    if "dataset" in description:
        cases = _listed_nnunet_cases(root, description["dataset"], json_path)
    else:
        cases = _discover_nnunet_cases(root, file_ending, len(channel_names))
    test_images = _discover_nnunet_test_images(root / "imagesTs", file_ending, len(channel_names))
    return Dataset(
        root=root,
        layout="nnunetv2",
        name=str(description.get("name") or _name_from_folder(root)),
        channel_names=channel_names,
        labels=labels,
        file_ending=file_ending,
        cases=_sorted_cases(cases),
        test_images=_sorted_cases(test_images),
        ignore_label=_ignore_label(labels),
    )


def _load_decathlon(root: Path, description: dict[str, Any]) -> Dataset:
    json_path = root / DATASET_JSON
    channel_names = _parse_channel_names(description["modality"], "modality", json_path)
    labels = _parse_decathlon_labels(description.get("labels"), json_path)
    training = description.get("training")
    if not isinstance(training, list) or not training:
        raise DatasetError(f"{json_path}: 'training' must be a non-empty list of {{'image': ..., 'label': ...}}")
    cases = []
    for index, entry in enumerate(training):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DatasetError(f"{json_path}: training[{index}] must be an object with an 'image' path, got {entry!r}")
        label = entry.get("label")
        if label is not None and not isinstance(label, str):
            raise DatasetError(f"{json_path}: training[{index}]['label'] must be a path, got {label!r}")
        cases.append(_decathlon_case(root, entry["image"], label, len(channel_names)))
    tests = description.get("test") or []
    if not isinstance(tests, list) or not all(isinstance(item, str) for item in tests):
        raise DatasetError(f"{json_path}: 'test' must be a list of image paths, got {tests!r}")
    test_images = [_decathlon_case(root, item, None, len(channel_names)) for item in tests]
    _, file_ending = split_file_ending(Path(training[0]["image"]).name)
    return Dataset(
        root=root,
        layout="decathlon",
        name=str(description.get("name") or _name_from_folder(root)),
        channel_names=channel_names,
        labels=labels,
        file_ending=file_ending,
        cases=_sorted_cases(cases),
        test_images=_sorted_cases(test_images),
        ignore_label=_ignore_label(labels),
    )


def _decathlon_case(root: Path, image: str, label: str | None, n_channels: int) -> Case:
    """A listed image; nnU-Net v1 lists ``x.nii.gz`` for files stored as ``x_0000.nii.gz``, which is accepted."""
    image_path = root / image
    name, ending = split_file_ending(image_path.name)
    image_files: tuple[Path, ...] = (image_path,)
    if not image_path.exists():
        channel_files = tuple(image_path.with_name(f"{name}_{channel:04d}{ending}") for channel in range(n_channels))
        if all(path.exists() for path in channel_files):
            image_files = channel_files
    return Case(name, image_files, None if label is None else root / label)


def _listed_nnunet_cases(root: Path, listing: Any, json_path: Path) -> list[Case]:
    if not isinstance(listing, dict) or not listing:
        raise DatasetError(f"{json_path}: 'dataset' must map case names to {{'images': [...], 'label': ...}}")
    cases = []
    for name, entry in listing.items():
        images = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(images, list) or not images or not all(isinstance(item, str) for item in images):
            raise DatasetError(f"{json_path}: dataset[{name!r}] must have a non-empty 'images' list of paths")
        label = entry.get("label")
        if label is not None and not isinstance(label, str):
            raise DatasetError(f"{json_path}: dataset[{name!r}]['label'] must be a path, got {label!r}")
        cases.append(Case(name, tuple(root / item for item in images), None if label is None else root / label))
    return cases


def _discover_nnunet_cases(root: Path, file_ending: str, n_channels: int) -> list[Case]:
    """Cases named by the files in ``labelsTr``; their image files are expected as ``imagesTr/CASE_XXXX``."""
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise DatasetError(f"{labels_dir}: folder not found; an nnU-Net v2 dataset keeps its label maps there")
    names = [path.name[: -len(file_ending)] for path in _files_ending(labels_dir, file_ending)]
    if not names:
        raise DatasetError(f"{labels_dir}: no files ending in {file_ending!r} (the file_ending of dataset.json)")
    images_dir = root / "imagesTr"
    return [
        Case(name, _channel_files(images_dir, name, file_ending, n_channels), labels_dir / f"{name}{file_ending}")
        for name in names
    ]


def _discover_nnunet_test_images(folder: Path, file_ending: str, n_channels: int) -> list[Case]:
    if not folder.is_dir():
        return []
    names = set()
    for path in _files_ending(folder, file_ending):
        match = _CHANNEL_SUFFIX.match(path.name[: -len(file_ending)])
        if match:
            names.add(match["case"])
    return [Case(name, _channel_files(folder, name, file_ending, n_channels), None) for name in names]


def _channel_files(folder: Path, name: str, file_ending: str, n_channels: int) -> tuple[Path, ...]:
    """``CASE_0000`` to ``CASE_{n_channels - 1}``; or ``CASE_0000`` alone, holding every channel, when it is the
    case's only image file (nnU-Net's natural images: an RGB PNG for ``{"0": "R", "1": "G", "2": "B"}``)."""
    files = tuple(folder / f"{name}_{channel:04d}{file_ending}" for channel in range(n_channels))
    if files[0].exists() and not any(path.exists() for path in files[1:]):
        return files[:1]
    return files


def _files_ending(folder: Path, file_ending: str) -> list[Path]:
    """Files of ``folder`` ending in ``file_ending``, hidden ones (macOS ``._x``) left out."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))


def _parse_channel_names(value: Any, key: str, json_path: Path) -> dict[int, str]:
    if not isinstance(value, dict) or not value:
        raise DatasetError(f'{json_path}: \'{key}\' must map channel indices to names, e.g. {{"0": "CT"}}')
    try:
        channels = {int(index): str(name) for index, name in value.items()}
    except ValueError as error:
        raise DatasetError(f"{json_path}: '{key}' keys must be channel indices 0, 1, ...: {list(value)}") from error
    if sorted(channels) != list(range(len(channels))):
        raise DatasetError(f"{json_path}: '{key}' indices must be 0..{len(channels) - 1}, got {sorted(channels)}")
    return dict(sorted(channels.items()))


def _parse_nnunet_labels(value: Any, json_path: Path) -> dict[str, int | list[int]]:
    if not isinstance(value, dict) or not value:
        raise DatasetError(f'{json_path}: \'labels\' must map names to values, e.g. {{"background": 0, "tumor": 1}}')
    labels: dict[str, int | list[int]] = {}
    for name, label in value.items():
        if _is_int(label):
            labels[name] = label
        elif isinstance(label, list) and label and all(_is_int(item) for item in label):
            labels[name] = list(label)
        else:
            raise DatasetError(f"{json_path}: label {name!r} must be an integer or a list of integers, got {label!r}")
    return labels


def _parse_decathlon_labels(value: Any, json_path: Path) -> dict[str, int | list[int]]:
    if not isinstance(value, dict) or not value:
        raise DatasetError(f'{json_path}: \'labels\' must map values to names, e.g. {{"0": "background"}}')
    labels: dict[str, int | list[int]] = {}
    for key, name in value.items():
        try:
            label = int(key)
        except ValueError as error:
            raise DatasetError(f"{json_path}: label key {key!r} is not an integer value") from error
        if name in labels:
            raise DatasetError(f"{json_path}: label name {name!r} is given to both {labels[name]} and {label}")
        labels[str(name)] = label
    return dict(sorted(labels.items(), key=lambda item: item[1]))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ignore_label(labels: Mapping[str, int | list[int]]) -> int | None:
    value = labels.get("ignore")
    return value if isinstance(value, int) else None


def _sorted_cases(cases: list[Case]) -> tuple[Case, ...]:
    return tuple(sorted(cases, key=lambda case: case.name))


def _name_from_folder(root: Path) -> str:
    """``Hippocampus`` for ``Task04_Hippocampus`` or ``Dataset004_Hippocampus``."""
    match = re.fullmatch(r"(?:Task|Dataset)\d+_(.+)", root.name)
    return match[1] if match else root.name
