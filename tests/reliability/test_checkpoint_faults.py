"""Checkpoints that must not be trusted: another version, code hidden in a pickle, a disk that fills up while saving."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from torch import nn

import mambaseg
from mambaseg.planning.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.data.synthetic import file_states
from tests.reliability.helpers import temp_files


def _save(path, epoch: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return save_checkpoint(path, model=nn.Linear(3, 2), epoch=epoch, plans={"dataset_name": "X"}, config={"seed": 1})


def test_checkpoint_from_an_incompatible_version_is_refused_naming_the_file(tmp_path):
    path = _save(tmp_path / "checkpoint_final.pt")
    data = torch.load(path, weights_only=True)
    major = int(mambaseg.__version__.split(".")[0])
    data["version"] = f"{major + 1}.0.0"
    torch.save(data, path)
    before = file_states(tmp_path)
    with pytest.raises(CheckpointError, match="major versions differ") as info:
        load_checkpoint(path)
    assert info.value.path == path and str(path) in str(info.value) and f"{major + 1}.0.0" in str(info.value)
    del data["optimizer"], data["rng"]
    data["version"] = mambaseg.__version__
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"missing entries \['optimizer', 'rng'\]"):
        load_checkpoint(path)
    assert file_states(tmp_path).keys() == before.keys()


class RunsCode:
    """Unpickling this would run a shell command that creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_object_that_would_run_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "checkpoint_final.pt"
    data = torch.load(_save(path), weights_only=True)
    data["extra"] = {"payload": RunsCode(str(marker))}
    torch.save(data, path)
    before = file_states(tmp_path)
    with pytest.raises(CheckpointError, match="refused: it holds pickled Python objects") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    assert file_states(tmp_path) == before


def test_disk_full_while_saving_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = _save(tmp_path / "checkpoint_latest.pt", epoch=3)
    before = file_states(tmp_path)
    real_save = torch.save

    def fill_the_disk(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 part of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fill_the_disk)
    with pytest.raises(OSError, match="No space left on device") as info:
        _save(path, epoch=4, seed=1)
    monkeypatch.setattr(torch, "save", real_save)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    assert file_states(tmp_path) == before and temp_files(tmp_path) == []
    assert load_checkpoint(path).epoch == 3
