"""Every file a stage writes gets the umask's mode, and a failed write keeps the previous file."""

import os
import stat

import numpy as np
import pytest

from mambaseg.io import Image, read_image, write_image
from mambaseg.planning.plans import load_plans
from mambaseg.preprocessing import storage
from mambaseg.preprocessing.dataset import SPEC_FILE, preprocess_cases
from mambaseg.preprocessing.storage import case_files, load_case
from mambaseg.workspace.layout import Workspace
from tests.planning.test_plans import make_plans
from tests.preprocessing.test_dataset import SPEC, dataset  # noqa: F401 (a fixture)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_preprocessed_case_and_plans_json_get_the_umask_mode(dataset, tmp_path, umask_022):  # noqa: F811
    folder = Workspace(tmp_path / "ws").dataset(dataset.name).preprocessed("3d_fullres")
    preprocess_cases(dataset, SPEC, folder, workers=0)
    plans_path = Workspace(tmp_path / "ws").dataset(dataset.name).plans
    make_plans().save(plans_path)
    written = [*case_files(folder, "case_a"), folder / SPEC_FILE, plans_path]
    assert {path.name: _mode(path) for path in written} == {path.name: 0o644 for path in written}


def test_a_write_image_gets_the_umask_mode(tmp_path, umask_022):
    path = tmp_path / "mask.nii.gz"
    write_image(Image(np.zeros((2, 3, 4), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), path)
    assert _mode(path) == 0o644


def test_a_failed_case_write_keeps_the_previous_files(dataset, tmp_path, monkeypatch):  # noqa: F811
    folder = Workspace(tmp_path / "ws").dataset(dataset.name).preprocessed("3d_fullres")
    preprocess_cases(dataset, SPEC, folder, workers=0)
    npz_path, json_path = case_files(folder, "case_a")
    before = npz_path.read_bytes(), json_path.read_bytes()

    def fail_midway(handle, arrays):
        handle.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "_write_npz", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        preprocess_cases(dataset, SPEC, folder, workers=0, force=True)
    assert (npz_path.read_bytes(), json_path.read_bytes()) == before
    assert load_case(folder, "case_a").properties.spacing == (1.0, 1.0, 2.0)
    assert _temporaries(folder) == []


def test_a_failed_plans_write_keeps_the_previous_plans(tmp_path, monkeypatch):
    path = tmp_path / "plans.json"
    plans = make_plans()
    plans.save(path)
    before = path.read_bytes()
    plans.dataset_name = "E"

    def crash(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="rename failed"):
        plans.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and load_plans(path).dataset_name == "D"
    assert _temporaries(tmp_path) == []


def test_a_failed_image_write_keeps_the_previous_image(tmp_path, monkeypatch):
    path = tmp_path / "mask.nii.gz"
    first = Image(np.ones((2, 3, 4), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    write_image(first, path)

    def crash(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="rename failed"):
        write_image(first.with_array(np.zeros((2, 3, 4), np.uint8)), path)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path).array, first.array)
    assert _temporaries(tmp_path) == []
