import json
import os
import stat

import numpy as np
import pytest

from mambaseg.data import check_dataset, convert_to_nnunetv2, load_dataset, nnunet_folder_name
from tests.data.synthetic import file_states, write_decathlon_dataset, write_nnunet_dataset


def assert_same_voxels(converted, source):
    assert converted.case_names() == source.case_names()
    for new, old in zip(converted.cases + converted.test_images, source.cases + source.test_images, strict=True):
        assert new.name == old.name
        for new_image, old_image in zip(new.load_images(), old.load_images(), strict=True):
            np.testing.assert_array_equal(new_image.array, old_image.array)
            assert new_image.same_geometry(old_image)
        if old.label_file is not None:
            np.testing.assert_array_equal(new.load_label().array, old.load_label().array)


def test_decathlon_4d_round_trip(tmp_path):
    labels = {"background": 0, "edema": 1, "tumour": 2}
    root = write_decathlon_dataset(
        tmp_path / "Task01_BrainTumour",
        n_cases=3,
        channels={0: "FLAIR", 1: "T1w"},
        labels=labels,
        n_test=1,
        name="BrainTumour",
    )
    source = load_dataset(root)
    before = file_states(root)

    target = convert_to_nnunetv2(source, tmp_path / "raw", dataset_id=1)

    assert target == tmp_path / "raw" / "Dataset001_BrainTumour"
    assert file_states(root) == before
    assert sorted(path.name for path in (target / "imagesTr").iterdir())[:2] == [
        "case_000_0000.nii.gz",
        "case_000_0001.nii.gz",
    ]
    description = json.loads((target / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    assert description["labels"] == labels
    assert description["numTraining"] == 3
    assert description["file_ending"] == ".nii.gz"
    converted = load_dataset(target)
    assert converted.layout == "nnunetv2"
    assert converted.channel_names == source.channel_names
    assert converted.labels == source.labels
    assert_same_voxels(converted, source)
    assert check_dataset(converted, max_workers=1).problems == []
    assert not [path for path in target.parent.iterdir() if path.name.startswith(".")]


def test_nnunetv2_single_channel_files_are_copied(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset002_Liver", n_cases=2, name="Liver")
    target = convert_to_nnunetv2(load_dataset(root), tmp_path / "out", dataset_id=7)
    assert target.name == "Dataset007_Liver"
    source_file = root / "imagesTr" / "case_001_0000.nii.gz"
    assert (target / "imagesTr" / "case_001_0000.nii.gz").read_bytes() == source_file.read_bytes()
    assert_same_voxels(load_dataset(target), load_dataset(root))


def test_refuses_to_overwrite_unless_asked(tmp_path):
    root = write_decathlon_dataset(tmp_path / "src", n_cases=2, name="Spleen")
    dataset = load_dataset(root)
    target = tmp_path / "raw" / "Dataset009_Spleen"
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="Dataset009_Spleen"):
        convert_to_nnunetv2(dataset, tmp_path / "raw", dataset_id=9)
    assert (target / "mine.txt").read_text() == "keep me"
    convert_to_nnunetv2(dataset, tmp_path / "raw", dataset_id=9, overwrite=True)
    assert not (target / "mine.txt").exists()
    assert load_dataset(target).case_names() == ["case_000", "case_001"]


def test_an_existing_empty_folder_is_used(tmp_path):
    root = write_decathlon_dataset(tmp_path / "src", n_cases=1, name="Spleen")
    (tmp_path / "raw" / "Dataset009_Spleen").mkdir(parents=True)
    assert load_dataset(convert_to_nnunetv2(load_dataset(root), tmp_path / "raw", 9)).case_names() == ["case_000"]


def test_refuses_to_write_into_the_source(tmp_path):
    root = write_decathlon_dataset(tmp_path / "src", n_cases=1, name="Spleen")
    before = file_states(tmp_path)
    with pytest.raises(ValueError, match="source dataset"):
        convert_to_nnunetv2(load_dataset(root), root, dataset_id=9, overwrite=True)
    assert file_states(tmp_path) == before


def test_refuses_to_replace_a_folder_holding_the_source(tmp_path):
    root = write_decathlon_dataset(tmp_path / "Dataset009_Spleen" / "inner", n_cases=1, name="Spleen")
    with pytest.raises(ValueError, match="source dataset"):
        convert_to_nnunetv2(load_dataset(root), tmp_path, dataset_id=9, overwrite=True)
    assert (root / "dataset.json").exists()


@pytest.mark.parametrize(
    ("dataset_id", "name", "expected"),
    [(4, "Hippocampus", "Dataset004_Hippocampus"), (123, "Brain tumour (MSD)", "Dataset123_Brain_tumour_MSD")],
)
def test_folder_names(dataset_id, name, expected):
    assert nnunet_folder_name(dataset_id, name) == expected


@pytest.mark.parametrize(("dataset_id", "name"), [(0, "A"), (1000, "A"), (1, "()")])
def test_bad_folder_names(dataset_id, name):
    with pytest.raises(ValueError):
        nnunet_folder_name(dataset_id, name)


def test_converted_folder_and_files_get_the_umask_modes(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset002_Tiny", n_cases=2)
    previous = os.umask(0o027)
    try:
        target = convert_to_nnunetv2(load_dataset(root), tmp_path / "raw", dataset_id=3)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert stat.S_IMODE((target / "dataset.json").stat().st_mode) == 0o640
