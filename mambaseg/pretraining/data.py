"""Image folders in ImageNet's layout (``train/CLASS/*.JPEG``, ``val/CLASS/*``), decoded in loader workers.

Classes are the sorted sub-folder names of ``train/``; ``val/`` may hold any subset of them. Each sample's
augmentation draws from a generator seeded by (seed, epoch, index), and each epoch's order from one seeded
by (seed, epoch), so a run gives the same batches whatever the number of workers, and resuming at an epoch
repeats nothing. Under DDP the epoch's order is padded to a multiple of the world size and dealt out
(``DistributedSampler``'s rule) for training, and split without padding for validation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from mambaseg.pretraining.transforms import to_tensor

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff")

Transform = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]


@dataclass(frozen=True)
class ImageSplit:
    """One split of an image folder: its class names and (file, class index) samples."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]


def scan_split(root: str | Path, split: str, classes: Sequence[str] | None = None) -> ImageSplit:
    """The images of ``root/split``; ``classes`` (the training classes) fixes the class indices.

    Raises:
        FileNotFoundError: no ``split`` folder.
        ValueError: no class folders or no images, or a class folder not among ``classes``.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {root}: no '{split}/' folder (expected {split}/CLASS/*.JPEG)")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:
        raise ValueError(f"image folder {folder}: no class sub-folders")
    classes = list(classes) if classes is not None else found
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise ValueError(f"image folder {folder}: classes {unknown[:5]} are not among the training classes")
    index = {name: i for i, name in enumerate(classes)}
    samples = [
        (path, index[name])
        for name in found
        for path in sorted((folder / name).iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise ValueError(f"image folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return ImageSplit(folder, classes, samples)


def load_image(path: Path, in_channels: int) -> torch.Tensor:
    """The image at ``path`` as (c, h, w) in [0, 1]: RGB for 3 channels, greyscale for 1."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (greyscale) or 3 (RGB), got {in_channels}")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB" if in_channels == 3 else "L"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err
    return to_tensor(pixels)


class ImageDataset(torch.utils.data.Dataset):
    """Samples keyed by (index, epoch): the decoded, transformed image and its class index.

    Args:
        samples: (file, class index) pairs.
        in_channels: 1 or 3.
        transform: (image (c, h, w), generator) -> tensor.
        seed: the run's seed.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], in_channels: int, transform: Transform, seed: int) -> None:
        self.samples, self.in_channels, self.transform, self.seed = list(samples), in_channels, transform, int(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key
        path, label = self.samples[index]
        rng = np.random.default_rng((self.seed, epoch, index))
        return self.transform(load_image(path, self.in_channels), rng), label


def shard(num_items: int, rank: int, world: int, epoch: int, seed: int, shuffle: bool) -> list[int]:
    """This rank's sample indices for an epoch: shuffled and padded to a multiple of ``world``, or split in order."""
    if not shuffle:
        return list(range(rank, num_items, world))
    order = np.random.default_rng((seed, epoch)).permutation(num_items).tolist()
    padding = -num_items % world
    order += (order * (padding // max(num_items, 1) + 1))[:padding]
    return order[rank::world]


def epoch_loader(
    dataset: ImageDataset, indices: Sequence[int], epoch: int, batch_size: int, workers: int, drop_last: bool
) -> DataLoader:
    """Batches of ``dataset`` over ``indices`` in order, decoded by ``workers`` processes (0: in this one)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=[(i, epoch) for i in indices],
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )
