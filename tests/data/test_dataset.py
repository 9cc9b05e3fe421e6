import json

import numpy as np
import pytest

from mambaseg.data import DatasetError, load_dataset
from tests.data.synthetic import (
    RGB,
    case_arrays,
    rgb_case_arrays,
    write_decathlon_dataset,
    write_nifti,
    write_nnunet_dataset,
    write_rgb_png_dataset,
)


def test_nnunetv2_layout_is_loaded_with_sorted_cases_and_channel_files(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=3, channels={0: "T1", 1: "T2"}, n_test=2)
    dataset = load_dataset(root)
    assert dataset.layout == "nnunetv2"
    assert dataset.name == "Synthetic"
    assert dataset.channel_names == {0: "T1", 1: "T2"}
    assert dataset.labels == {"background": 0, "foreground": 1}
    assert dataset.file_ending == ".nii.gz"
    assert [case.name for case in dataset.cases] == ["case_000", "case_001", "case_002"]
    first = dataset.cases[0]
    assert [path.name for path in first.image_files] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
    assert first.label_file == root / "labelsTr" / "case_000.nii.gz"
    assert [case.name for case in dataset.test_images] == ["case_003", "case_004"]
    assert all(case.label_file is None for case in dataset.test_images)
    assert dataset.ignore_label is None


def test_nnunetv2_images_and_label_load_in_channel_order(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=2, shape=(6, 7, 8), channels={0: "T1", 1: "T2"})
    case = load_dataset(root).cases[1]
    images = case.load_images()
    expected_images, expected_label = case_arrays(1, (6, 7, 8), 2, [0, 1])
    assert len(images) == 2
    for image, expected in zip(images, expected_images, strict=True):
        np.testing.assert_array_equal(image.array, expected)
    label = case.load_label()
    np.testing.assert_array_equal(label.array, expected_label)
    assert label.spacing == pytest.approx((1.0, 1.0, 2.0))


def test_a_case_whose_only_image_file_is_0000_holds_every_channel(tmp_path):
    root = write_rgb_png_dataset(tmp_path / "ds", n_cases=2, n_test=1)
    dataset = load_dataset(root)
    assert dataset.channel_names == RGB
    for case in (*dataset.cases, *dataset.test_images):
        assert case.image_files == (case.image_files[0].parent / f"{case.name}_0000.png",)
    picture, label = rgb_case_arrays(1)
    images = dataset.cases[1].load_images()
    np.testing.assert_array_equal(np.stack([image.array for image in images], -1), picture)
    np.testing.assert_array_equal(dataset.cases[1].load_label().array, label)
    assert [image.array.shape for image in images] == [(32, 40)] * 3
    (root / "imagesTr" / "img_000_0000.png").unlink()  # with no file at all, every channel file is missing
    assert [p.name for p in load_dataset(root).cases[0].image_files] == [f"img_000_{c:04d}.png" for c in range(3)]


def test_decathlon_layout_inverts_labels_and_splits_4d_images(tmp_path):
    labels = {"background": 0, "edema": 1, "tumour": 2}
    root = write_decathlon_dataset(
        tmp_path / "Task01_Brain",
        n_cases=3,
        channels={0: "FLAIR", 1: "T1w"},
        labels=labels,
        n_test=1,
        name="BrainTumour",
    )
    dataset = load_dataset(root)
    assert dataset.layout == "decathlon"
    assert dataset.name == "BrainTumour"
    assert dataset.labels == labels
    assert dataset.channel_names == {0: "FLAIR", 1: "T1w"}
    assert [case.name for case in dataset.cases] == ["case_000", "case_001", "case_002"]
    assert [case.name for case in dataset.test_images] == ["case_003"]
    case = dataset.cases[2]
    assert case.image_files == (root / "imagesTr" / "case_002.nii.gz",)
    images = case.load_images()
    expected, _ = case_arrays(2, (8, 10, 12), 2, [0, 1, 2])
    assert len(images) == 2
    for image, array in zip(images, expected, strict=True):
        np.testing.assert_array_equal(image.array, array)
        assert image.spacing == pytest.approx((1.0, 1.0, 2.0))


def test_decathlon_cases_are_sorted_whatever_the_listing_order(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ds", n_cases=3)
    description = json.loads((root / "dataset.json").read_text())
    description["training"].reverse()
    (root / "dataset.json").write_text(json.dumps(description))
    assert load_dataset(root).case_names() == ["case_000", "case_001", "case_002"]


def test_nnunet_v1_listing_of_channel_files_is_accepted(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ds", n_cases=2)
    for path in sorted((root / "imagesTr").iterdir()):
        path.rename(path.with_name(path.name.replace(".nii.gz", "_0000.nii.gz")))
    case = load_dataset(root).cases[0]
    assert [path.name for path in case.image_files] == ["case_000_0000.nii.gz"]
    assert len(case.load_images()) == 1


def test_explicit_dataset_listing_in_nnunetv2_json(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=2)
    description = json.loads((root / "dataset.json").read_text())
    description["dataset"] = {
        "b": {"images": ["imagesTr/case_001_0000.nii.gz"], "label": "labelsTr/case_001.nii.gz"},
        "a": {"images": ["imagesTr/case_000_0000.nii.gz"], "label": "labelsTr/case_000.nii.gz"},
    }
    (root / "dataset.json").write_text(json.dumps(description))
    dataset = load_dataset(root)
    assert dataset.case_names() == ["a", "b"]
    assert dataset.cases[0].image_files == (root / "imagesTr" / "case_000_0000.nii.gz",)


def test_ignore_label_and_regions(tmp_path):
    labels = {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=1, labels={"background": 0, "a": 1, "b": 2})
    description = json.loads((root / "dataset.json").read_text())
    description["labels"] = labels
    (root / "dataset.json").write_text(json.dumps(description))
    dataset = load_dataset(root)
    assert dataset.labels == labels
    assert dataset.ignore_label == 3
    assert dataset.has_regions


def test_stray_files_do_not_become_cases(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=2)
    write_nifti(root / "labelsTr" / "._case_000.nii.gz", np.zeros((2, 2, 2), np.uint8))
    (root / "labelsTr" / "notes.txt").write_text("hello")
    assert load_dataset(root).case_names() == ["case_000", "case_001"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "cannot be read as JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"labels": {"background": 0}}', "neither 'channel_names'"),
        ('{"channel_names": {"0": "CT"}, "labels": {"background": "zero"}, "file_ending": ".nii.gz"}', "'zero'"),
        ('{"channel_names": {"1": "CT"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}', "indices must be"),
        ('{"channel_names": {"0": "CT"}, "labels": {"background": 0}}', "file_ending"),
        ('{"modality": {"0": "MRI"}, "labels": {"0": "background"}, "training": []}', "'training'"),
        ('{"modality": {"0": "MRI"}, "labels": {"zero": "background"}, "training": [{"image": "a"}]}', "'zero'"),
        ('{"modality": {"0": "MRI"}, "labels": {"0": "background"}, "training": [{"label": "a"}]}', "training[0]"),
    ],
)
def test_bad_dataset_json_raises_naming_the_file(tmp_path, content, expected):
    (tmp_path / "labelsTr").mkdir()
    write_nifti(tmp_path / "labelsTr" / "a.nii.gz", np.zeros((2, 2, 2), np.uint8))
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match="dataset.json") as raised:
        load_dataset(tmp_path)
    assert expected in str(raised.value)


def test_missing_dataset_json_or_folder(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "absent")


def test_nnunetv2_without_labels_folder(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=1)
    for path in (root / "labelsTr").iterdir():
        path.unlink()
    (root / "labelsTr").rmdir()
    with pytest.raises(DatasetError, match="labelsTr"):
        load_dataset(root)
