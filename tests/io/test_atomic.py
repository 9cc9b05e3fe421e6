"""Atomic writes: the old or the new content, never a part, and no temporary file left behind."""

import os

import pytest

from mambaseg.io.atomic import atomic_path, write_atomically


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def test_a_successful_write_replaces_the_content(tmp_path):
    path = tmp_path / "out.json"
    path.write_bytes(b"old")
    write_atomically(path, lambda handle: handle.write(b"new"))
    assert path.read_bytes() == b"new"
    write_atomically(tmp_path / "fresh.bin", lambda handle: handle.write(b"\x00\x01"), durable=True)
    assert (tmp_path / "fresh.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.bin", "out.json"]


def test_a_write_failing_midway_keeps_the_old_content_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_bytes(b"old")
    seen = []

    def fail_midway(handle):
        handle.write(b"half of the n")
        handle.flush()
        seen.extend(_temporaries(tmp_path))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, fail_midway, durable=True)
    assert len(seen) == 1 and seen[0].startswith(".out.json.")
    assert path.read_bytes() == b"old"
    assert _temporaries(tmp_path) == []


def test_a_failing_rename_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_bytes(b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, lambda handle: handle.write(b"new"))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert _temporaries(tmp_path) == []


def test_a_missing_folder_is_not_created_and_is_named(tmp_path):
    path = tmp_path / "missing" / "out.json"
    with pytest.raises(FileNotFoundError, match="missing.*out\\.json") as info:
        write_atomically(path, lambda handle: handle.write(b"new"))
    assert info.value.filename == str(path)
    assert not path.parent.exists()


def test_the_file_gets_the_permissions_of_any_new_file(tmp_path):
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "summary.json", lambda handle: handle.write(b"{}"))
    finally:
        os.umask(previous)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o644  # readable by others, not only the owner


def test_atomic_path_moves_companion_files_before_the_named_one_and_cleans_up(tmp_path, monkeypatch):
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append(os.path.basename(dst)), real_replace(src, dst)))
    with atomic_path(tmp_path / "a.mhd", durable=True) as staged:
        staged.write_text("header naming a.raw")
        (staged.parent / "a.raw").write_bytes(b"\x00" * 8)
    assert moved == ["a.raw", "a.mhd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mhd", "a.raw"]


def test_atomic_path_failing_in_the_block_writes_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "mask.nii.gz") as staged:
        staged.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
