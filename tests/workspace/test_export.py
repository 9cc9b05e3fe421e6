"""Opening a model zip is safe: crafted entries, tampered files and other major versions are refused.

The zips are made by hand in the format of ``mambaseg.workspace.export`` (no training needed): the refusals
come before any checkpoint is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

import mambaseg
from mambaseg.cli.main import main
from mambaseg.workspace.export import (
    ModelArchiveError,
    check_entry_sizes,
    is_model_archive,
    load_exported_model,
    manifest_digest,
    open_model_archive,
)
from mambaseg.workspace.layout import Workspace

RUN = "Synthetic/runs/3d_fullres__unet"
FILES = {
    f"{RUN}/fold_0/plan.json": b'{"network": "unet"}\n',
    f"{RUN}/fold_0/checkpoint_final.pt": b"weights" * 100,
    "Synthetic/dataset.json": b'{"name": "Synthetic", "labels": {"background": 0, "a": 1}, "channel_names": {}}\n',
}


def manifest(**changes) -> dict:
    content = {
        "format": "mambaseg-model",
        "format_version": 2,
        "mambaseg_version": mambaseg.__version__,
        "dataset": "Synthetic",
        "checkpoint": "final",
        "source": "runs",
        "runs": [{"run": RUN, "folds": ["0"]}],
        "postprocessing": [],
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()},
    }
    content = {**content, **changes}
    return {**content, "manifest_sha256": manifest_digest(content)}


def write_zip(path: Path, files: dict[str, bytes] | None = None, content: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", json.dumps(content or manifest()))
        for name, data in (FILES if files is None else files).items():
            archive.writestr(name, data)
    return path


def test_a_well_formed_zip_is_extracted_once_under_the_workspace(tmp_path):
    archive = write_zip(tmp_path / "model.zip")
    model = open_model_archive(archive, tmp_path / "ws")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert model == Workspace(tmp_path / "ws").exported_model(archive, digest)
    assert model.folder == tmp_path / "ws" / "exported_models" / f"model-{digest[:16]}"
    for name, data in FILES.items():
        assert (model.folder / name).read_bytes() == data
    assert open_model_archive(archive, tmp_path / "ws") == model  # the extracted copy, checked again
    assert sorted(p.name for p in model.folder.parent.iterdir()) == [model.folder.name]  # no staging left
    assert is_model_archive(archive) and not is_model_archive(tmp_path)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("../evil", "would land outside the model's folder ('..')"),
        ("Synthetic/../../evil", "would land outside the model's folder ('..')"),
        ("/tmp/evil", "is an absolute path"),
    ],
)
def test_entries_outside_the_folder_are_refused_naming_them(tmp_path, entry, reason):
    archive = write_zip(tmp_path / "model.zip", {**FILES, entry: b"evil"})
    with pytest.raises(ModelArchiveError, match=re.escape(f"{archive}: entry '{entry}' {reason}; refused")):
        open_model_archive(archive, tmp_path / "ws")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "ws" / "exported_models").exists()


def test_a_symbolic_link_is_refused(tmp_path):
    archive = write_zip(tmp_path / "model.zip")
    with zipfile.ZipFile(archive, "a") as zipped:
        link = zipfile.ZipInfo("Synthetic/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(link, "/etc/passwd")
    with pytest.raises(ModelArchiveError, match=r"entry 'Synthetic/link' is a symbolic link; refused"):
        open_model_archive(archive, tmp_path / "ws")


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_tampered_entry_is_refused(tmp_path, name):
    archive = write_zip(tmp_path / "model.zip", {**FILES, name: FILES[name] + b" "})
    with pytest.raises(
        ModelArchiveError, match=rf"{archive}: {name}: SHA-256 [0-9a-f]{{64}} differs from the manifest"
    ):
        open_model_archive(archive, tmp_path / "ws")
    assert list((tmp_path / "ws" / "exported_models").iterdir()) == []  # the staging folder is gone


def test_a_changed_extracted_copy_is_refused(tmp_path):
    archive = write_zip(tmp_path / "model.zip")
    model = open_model_archive(archive, tmp_path / "ws")
    checkpoint = model.folder / RUN / "fold_0" / "checkpoint_final.pt"
    checkpoint.write_bytes(b"changed")
    with pytest.raises(ModelArchiveError, match=rf"{checkpoint}: missing or changed since {archive} was extracted"):
        open_model_archive(archive, tmp_path / "ws")


def test_unlisted_and_missing_files_are_refused(tmp_path):
    archive = write_zip(tmp_path / "model.zip", {**FILES, "Synthetic/extra.py": b"print()"})
    with pytest.raises(ModelArchiveError, match=r"entry 'Synthetic/extra.py' is not in the manifest"):
        open_model_archive(archive, tmp_path / "ws")
    partial = {k: v for k, v in FILES.items() if not k.endswith(".pt")}
    archive = write_zip(tmp_path / "partial.zip", partial)
    with pytest.raises(ModelArchiveError, match=r"checkpoint_final.pt' is in the manifest but not in the zip"):
        open_model_archive(archive, tmp_path / "ws")


def test_another_major_version_is_refused_naming_the_zip(tmp_path):
    archive = write_zip(tmp_path / "model.zip", content=manifest(mambaseg_version="7.2.0"))
    with pytest.raises(ModelArchiveError, match=rf"{archive}: exported by mambaseg 7.2.0, incompatible with this "):
        open_model_archive(archive, tmp_path / "ws")
    same_major = manifest(mambaseg_version=mambaseg.__version__.split(".")[0] + ".99.0")
    open_model_archive(write_zip(tmp_path / "minor.zip", content=same_major), tmp_path / "ws")


def test_a_manifest_pointing_outside_is_refused(tmp_path):
    archive = write_zip(tmp_path / "model.zip", content=manifest(runs=[{"run": "../../elsewhere", "folds": ["0"]}]))
    with pytest.raises(ModelArchiveError, match=r"run '../../elsewhere' is not a folder of Synthetic/; refused"):
        open_model_archive(archive, tmp_path / "ws")
    archive = write_zip(tmp_path / "other.zip", content=manifest(dataset=".."))
    with pytest.raises(ModelArchiveError, match=r"'dataset' must be a folder name, got '..'"):
        open_model_archive(archive, tmp_path / "ws")


def test_not_a_zip_or_no_manifest(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ModelArchiveError, match=r"broken.zip: not a zip file"):
        open_model_archive(tmp_path / "broken.zip", tmp_path / "ws")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zipped:
        zipped.writestr("x.txt", "x")
    with pytest.raises(ModelArchiveError, match=r"empty.zip: no manifest.json; not a model exported by mambaseg"):
        open_model_archive(tmp_path / "empty.zip", tmp_path / "ws")


def test_predict_refuses_a_crafted_zip_naming_the_entry(tmp_path, capsys):
    archive = write_zip(tmp_path / "model.zip", {**FILES, "../evil": b"evil"})
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "scan.nii.gz").write_bytes(b"")
    args = ["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(archive)]
    assert main([*args, "--workspace", str(tmp_path / "ws"), "--device", "cpu"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"error: {archive}: entry '../evil' would land outside the model's folder" in out
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_a_manifest_edited_after_export_is_refused(tmp_path):
    edited = {**manifest(), "postprocessing": [{"op": "keep_largest_component", "labels": [1], "jointly": True}]}
    archive = write_zip(tmp_path / "model.zip", content=edited)
    with pytest.raises(ModelArchiveError, match="manifest.json differs from the digest it records"):
        open_model_archive(archive, tmp_path / "ws")


def test_a_previous_stage_outside_the_dataset_is_refused(tmp_path):
    runs = [{"run": RUN, "folds": ["0"], "previous": [{"run": "Other/runs/3d_lowres__unet", "folds": ["0"]}]}]
    archive = write_zip(tmp_path / "model.zip", content=manifest(runs=runs))
    with pytest.raises(ModelArchiveError, match="'Other/runs/3d_lowres__unet' is not a folder of Synthetic/"):
        open_model_archive(archive, tmp_path / "ws")


def test_an_entry_that_is_not_json_is_refused_naming_it(tmp_path):
    files = {**FILES, "Synthetic/dataset.json": b"labels: not json"}
    content = manifest(files={name: hashlib.sha256(data).hexdigest() for name, data in files.items()})
    archive = write_zip(tmp_path / "model.zip", files, content)
    with pytest.raises(ModelArchiveError, match=r"model.zip: Synthetic/dataset.json: not a readable JSON file"):
        load_exported_model(archive, tmp_path / "ws")


def test_entries_beyond_any_compression_or_the_free_space_are_refused_before_extracting(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "model.zip")
    bomb = zipfile.ZipInfo(f"{RUN}/fold_0/checkpoint_final.pt")
    bomb.file_size, bomb.compress_size = 10**10, 10**6  # what a crafted header may claim: 10000:1
    with pytest.raises(ModelArchiveError, match=r"claims 10000000000 bytes from 1000000 stored, more than 1100:1"):
        check_entry_sizes(archive, [bomb], tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(ModelArchiveError, match=r"model.zip: extracting needs 0 MiB and .* has 0 MiB free"):
        open_model_archive(archive, tmp_path / "ws")
    assert not any((tmp_path / "ws" / "exported_models").iterdir())
