"""Training patches from preprocessed cases: random crops with foreground oversampling, then augmentation.

Dimension letters: c channels, b batch, *patch the patch axes, *case a case's axes.

Sampling follows nnU-Net's data loader: of each batch the last ``round(b * oversample)`` samples
are centred on a voxel of a randomly chosen foreground class (from the class locations stored at
preprocessing), the others anywhere; windows may leave the image by up to half the padding the
patch needs, and the outside is filled with zeros (image) and background (label). A 2-D
configuration of 3-D data takes one slice along the first axis.

Sample ``j`` of the run's batch ``i`` is a pure function of (seed, i, j), augmentation included: the same batch on
every re-run, with any number of workers, so that a resumed run sees exactly the batches an uninterrupted one
would. Under DDP the run's batch is split over the processes: rank ``r`` of ``w`` draws samples ``r * b`` to
``(r + 1) * b - 1`` of a batch of ``w * b``, so that together the processes draw the batch that one process would,
foreground oversampling included.

A cascade stage (``previous_stage``: case -> the previous stage's mask on this configuration's preprocessed grid, an
npz holding ``seg`` (1, *case)) crops that mask with the same window as a second label channel; the pipeline then
moves it into the image as one-hot channels and perturbs them (``mambaseg.training.cascade``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mambaseg.preprocessing.storage import PreprocessedCase, load_case
from mambaseg.training.augmentation import build_train_transforms, build_val_transforms, needs_dummy_2d
from mambaseg.training.cascade import with_cascade

CASE_CACHE_SIZE = 64


def window_bounds(case_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest window start per axis; negative or past-the-end starts mean padding."""
    shape, patch = np.asarray(case_shape), np.asarray(patch_size)
    need = np.maximum(patch - shape, 0)
    low = -(need // 2)
    high = shape + need // 2 + need % 2 - patch
    return low, high


def choose_window(
    case_shape: Sequence[int],
    patch_size: Sequence[int],
    rng: np.random.Generator,
    centre: Sequence[int] | None = None,
) -> np.ndarray:
    """A window start per axis: uniformly at random, or with ``centre`` in the middle (kept within bounds)."""
    low, high = window_bounds(case_shape, patch_size)
    if centre is None:
        return rng.integers(low, high + 1)
    return np.clip(np.asarray(centre) - np.asarray(patch_size) // 2, low, high)


def crop_padded(array: np.ndarray, start: Sequence[int], patch_size: Sequence[int], fill: float) -> np.ndarray:
    """``array[:, start : start + patch]`` for (c, *case) arrays, ``fill`` where the window leaves the array."""
    out = np.full((array.shape[0], *patch_size), fill, dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for s, p, n in zip(start, patch_size, array.shape[1:], strict=True):
        lo, hi = max(s, 0), min(s + p, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


def sample_patch(
    case: PreprocessedCase,
    patch_size: Sequence[int],
    force_foreground: bool,
    rng: np.random.Generator,
    previous: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (image (c, *patch), label (1, *patch)) patch; a 2-D patch from 3-D data takes one slice.

    With ``previous`` (a cascade's previous stage mask, (1, *case)) the label is (2, *patch): reference, previous.
    """
    data, seg = case.data, case.seg
    if previous is not None:
        if previous.shape != seg.shape:
            raise ValueError(
                f"previous stage mask of shape {previous.shape[1:]} does not fit the case's {seg.shape[1:]}"
            )
        seg = np.concatenate([seg, previous.astype(seg.dtype)])
    centre = None
    present = [label for label, coords in case.locations.items() if len(coords)]
    if force_foreground and present:
        coords = case.locations[present[rng.integers(len(present))]]
        centre = coords[rng.integers(len(coords))]
    if len(patch_size) == data.ndim - 2:  # 2-D configuration of 3-D data: pick the slice first
        index = int(centre[0]) if centre is not None else int(rng.integers(data.shape[1]))
        data, seg = data[:, index], seg[:, index]
        centre = None if centre is None else centre[1:]
    start = choose_window(data.shape[1:], patch_size, rng, centre)
    image = crop_padded(data, start, patch_size, 0.0)
    label = crop_padded(seg, start, patch_size, 0)
    label[label < 0] = 0  # voxels outside the nonzero mask train as background, as in nnU-Net
    return image, label


class PatchBatches(Dataset):
    """A map-style dataset whose item ``i`` is the i-th training (or validation) batch of the run.

    Args:
        folder: the configuration's preprocessed folder.
        case_names: the cases to sample from (a fold's training or validation cases).
        patch_size: patch size (2 or 3 axes).
        batch_size: patches per batch of this process (b); the run's batch is ``batch_size * world_size``.
        oversample_foreground: fraction of the run's batch centred on foreground.
        seed: the run's seed.
        rank: the process's rank under DDP: which part of the run's batch it draws.
        world_size: the number of processes under DDP.
        augmentation: augmentation settings (``configs/augmentation``), or None for none (validation).
        mirror_axes: axes mirrored by augmentation.
        previous_stage: a cascade's previous stage masks, case name -> npz file on this folder's grid (module doc).
        previous_labels: the foreground labels those masks become one-hot channels of, in channel order.
    """

    def __init__(
        self,
        folder: Path,
        case_names: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        oversample_foreground: float = 0.33,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augmentation: Mapping[str, Any] | None = None,
        mirror_axes: Sequence[int] = (),
        previous_stage: Mapping[str, Path] | None = None,
        previous_labels: Sequence[int] = (),
    ) -> None:
        if not case_names:
            raise ValueError(f"{folder}: no cases to sample patches from")
        missing = [name for name in case_names if previous_stage is not None and name not in previous_stage]
        if missing:
            raise ValueError(f"{folder}: no previous stage mask for the cases {', '.join(missing)}")
        self.previous_stage = None if previous_stage is None else {k: Path(v) for k, v in previous_stage.items()}
        self.previous_labels = [int(label) for label in previous_labels]
        self.folder = Path(folder)
        self.case_names = list(case_names)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.oversample_foreground = oversample_foreground
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.augmentation = augmentation
        self.mirror_axes = tuple(mirror_axes)
        self.load = functools.lru_cache(maxsize=CASE_CACHE_SIZE)(self._load)

    def _load(self, name: str) -> tuple[PreprocessedCase, np.ndarray | None]:
        previous = None
        if self.previous_stage is not None:
            with np.load(self.previous_stage[name]) as archive:
                previous = archive["seg"]
        return load_case(self.folder, name), previous

    def __len__(self) -> int:
        return 2**62  # batches are indexed by step; the loader's sampler says which

    def _transforms(self):
        labels = self.previous_labels if self.previous_stage is not None else None
        if self.augmentation is None:
            return with_cascade(build_val_transforms(), labels, train=False)
        anisotropic = len(self.patch_size) == 3 and needs_dummy_2d(self.patch_size)
        pipeline = build_train_transforms(
            self.augmentation, len(self.patch_size), self.patch_size, self.mirror_axes, anisotropic
        )
        return with_cascade(pipeline, labels, train=True)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        """This process's part of batch ``step``: {"image": (b, c, *patch) float32, "label": (b, 1, *patch) int64}."""
        transforms = self._transforms()
        first_forced = round(self.batch_size * self.world_size * (1 - self.oversample_foreground))
        images, labels = [], []
        for i in range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size):  # indices in the run's batch
            rng = np.random.default_rng([self.seed, step, i])
            case, previous = self.load(self.case_names[rng.integers(len(self.case_names))])
            image, label = sample_patch(case, self.patch_size, i >= first_forced, rng, previous)
            transforms.set_random_state(seed=int(rng.integers(2**31)))
            sample = transforms({"image": image, "label": label})
            images.append(sample["image"])
            labels.append(sample["label"])
        return {"image": torch.stack(images), "label": torch.stack(labels).long()}


def _worker_threads(_worker_id: int) -> None:
    torch.set_num_threads(1)


def epoch_batches(batches: PatchBatches, epoch: int, iterations: int, num_workers: int = 0) -> Iterator[dict]:
    """The batches of one epoch, steps ``epoch * iterations`` onwards, built by ``num_workers`` processes."""
    steps = range(epoch * iterations, (epoch + 1) * iterations)
    loader = DataLoader(
        batches,
        batch_size=None,
        sampler=steps,
        num_workers=num_workers,
        worker_init_fn=_worker_threads if num_workers else None,
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
    )
    return iter(loader)
