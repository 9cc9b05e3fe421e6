from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mambaseg.preprocessing.storage import load_case
from mambaseg.training.patches import (
    PatchBatches,
    choose_window,
    crop_padded,
    epoch_batches,
    sample_patch,
    window_bounds,
)
from tests.training.preprocessed_cases import write_case

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_window_bounds_follow_nnunet():
    # a 10-voxel axis under a 16-voxel patch needs 6 voxels of padding, 3 on each side
    low, high = window_bounds((10, 20), (16, 16))
    assert low.tolist() == [-3, 0] and high.tolist() == [-3, 4]


def test_crop_padded_fills_outside():
    array = np.arange(6).reshape(1, 6)
    assert crop_padded(array, (-2,), (5,), -9).tolist() == [[-9, -9, 0, 1, 2]]
    assert crop_padded(array, (4,), (4,), 0).tolist() == [[4, 5, 0, 0]]


def test_choose_window_centres_on_a_voxel_within_bounds():
    rng = np.random.default_rng(0)
    assert choose_window((40, 40), (16, 16), rng, centre=(20, 3)).tolist() == [12, 0]


@pytest.fixture
def cases(tmp_path):
    write_case(tmp_path, "a", (12, 30, 28), (slice(2, 4), slice(20, 23), slice(5, 8)), seed=1)
    write_case(tmp_path, "b", (9, 14, 40), (slice(6, 8), slice(1, 3), slice(30, 33)), seed=2)
    return tmp_path


def test_forced_patches_contain_foreground(cases):
    case = load_case(cases, "a")
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, label = sample_patch(case, (8, 8, 8), True, rng)
        assert image.shape == (1, 8, 8, 8) and label.shape == (1, 8, 8, 8)
        assert (label == 1).any()


def test_2d_patches_from_3d_cases_take_one_slice(cases):
    case = load_case(cases, "b")
    image, label = sample_patch(case, (16, 16), True, np.random.default_rng(3))
    assert image.shape == (1, 16, 16) and (label == 1).any()


def test_batches_are_a_function_of_the_step_and_oversample_foreground(cases):
    batches = PatchBatches(cases, ["a", "b"], (8, 8, 8), batch_size=3, seed=7, augmentation=None)
    again = PatchBatches(cases, ["a", "b"], (8, 8, 8), batch_size=3, seed=7, augmentation=None)
    for step in (0, 5):
        first, second = batches[step], again[step]
        assert torch.equal(first["image"], second["image"]) and torch.equal(first["label"], second["label"])
        assert first["image"].shape == (3, 1, 8, 8, 8) and first["label"].dtype == torch.int64
        assert (first["label"][2] == 1).any()  # round(3 * 0.67) = 2: the last sample is forced
    assert not torch.equal(batches[0]["image"], batches[1]["image"])
    other_rank = PatchBatches(cases, ["a", "b"], (8, 8, 8), batch_size=3, seed=7, rank=1, augmentation=None)
    assert not torch.equal(batches[0]["image"], other_rank[0]["image"])


def test_workers_give_the_same_batches_as_the_main_process(cases):
    augmentation = OmegaConf.to_container(OmegaConf.load(CONFIGS / "augmentation" / "nnunet.yaml"))
    batches = PatchBatches(
        cases, ["a", "b"], (8, 8, 8), batch_size=2, seed=3, augmentation=augmentation, mirror_axes=(0, 1, 2)
    )
    inline = list(epoch_batches(batches, epoch=1, iterations=3))
    workers = list(epoch_batches(batches, epoch=1, iterations=3, num_workers=2))
    for a, b in zip(inline, workers, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert set(torch.unique(inline[0]["label"]).tolist()) <= {0, 1}
