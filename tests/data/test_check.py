import io
import json
import shutil

import numpy as np
import pytest
from rich.console import Console

from mambaseg.data import check_dataset, load_dataset
from mambaseg.io.progress import RichProgress
from tests.data.synthetic import (
    case_arrays,
    file_states,
    rgb_case_arrays,
    write_decathlon_dataset,
    write_nifti,
    write_nnunet_dataset,
    write_png,
    write_rgb_png_dataset,
)

LABELS = {"background": 0, "a": 1, "b": 3}


@pytest.fixture
def faulty_nnunet(tmp_path):
    """Twelve two-channel cases, ten of them broken in a different way each, and a non-consecutive label list."""
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=12, channels={0: "T1", 1: "T2"}, labels=LABELS)
    images, labels = root / "imagesTr", root / "labelsTr"
    (images / "case_000_0000.nii.gz").unlink()
    write_nifti(labels / "case_001.nii.gz", np.ones((8, 10, 11), np.uint8), (1.0, 1.0, 2.0))
    write_nifti(images / "case_002_0001.nii.gz", case_arrays(2, (8, 10, 12), 2, [0])[0][1], (1.0, 1.5, 2.0))
    label = case_arrays(3, (8, 10, 12), 1, [0, 1, 3])[1]
    label[0, 0, 0] = 5
    write_nifti(labels / "case_003.nii.gz", label, (1.0, 1.0, 2.0))
    image = case_arrays(4, (8, 10, 12), 1, [0])[0][0]
    image[1, 2, 3] = np.nan
    image[2, 2, 3] = np.inf
    write_nifti(images / "case_004_0000.nii.gz", image, (1.0, 1.0, 2.0))
    (labels / "case_005.nii.gz").write_bytes(b"definitely not a nifti file")
    write_nifti(labels / "case_006.nii.gz", np.zeros((8, 10, 12), np.uint8), (1.0, 1.0, 2.0))
    write_nifti(labels / "case_007.nii.gz", label.clip(0, 3), (1.0, 1.0, 2.0), origin=(5.0, 0.0, 0.0))
    for name in ("case_008_0000", "case_008_0001", "case_008"):
        folder = labels if name == "case_008" else images
        write_nifti(folder / f"{name}.nii.gz", np.ones((10, 12), np.uint8), (1.0, 1.0))
    outside = tmp_path / "elsewhere" / "case_009.nii.gz"
    outside.parent.mkdir()
    shutil.move(labels / "case_009.nii.gz", outside)
    (labels / "case_009.nii.gz").symlink_to(outside)
    shutil.copy(images / "case_010_0000.nii.gz", images / "orphan_0000.nii.gz")
    return root


def messages_by_file(report):
    found = {}
    for problem in report.problems:
        found.setdefault(str(problem.file.relative_to(report.root)), []).append((problem.severity, problem.message))
    return found


def test_good_dataset_has_no_problems(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=3, channels={0: "T1", 1: "T2"}, n_test=1)
    report = check_dataset(load_dataset(root), max_workers=1)
    assert report.problems == []
    assert report.ok
    assert "3 cases checked, 0 errors, 0 warnings" in report.format()


def test_every_problem_is_reported_at_once_with_its_file(faulty_nnunet):
    before = file_states(faulty_nnunet.parent)
    report = check_dataset(load_dataset(faulty_nnunet), max_workers=1)
    assert file_states(faulty_nnunet.parent) == before
    assert not report.ok
    found = messages_by_file(report)

    def has(file, text, severity="error"):
        return any(s == severity and text in m for s, m in found.get(file, []))

    assert has("dataset.json", "consecutive 0..2, got [0, 1, 3]")
    assert has("imagesTr/case_000_0000.nii.gz", "file not found")
    assert has("labelsTr/case_001.nii.gz", "shape (8, 10, 11) differs from (8, 10, 12)")
    assert has("imagesTr/case_002_0001.nii.gz", "spacing (1.0, 1.5, 2.0) differs from (1.0, 1.0, 2.0)")
    assert has("labelsTr/case_003.nii.gz", "label values [5] are not declared")
    assert has("imagesTr/case_004_0000.nii.gz", "2 voxels are NaN or infinite")
    assert has("labelsTr/case_005.nii.gz", "cannot be read")
    assert has("labelsTr/case_006.nii.gz", "no foreground", "warning")
    assert has("labelsTr/case_007.nii.gz", "origin (-5.0, 0.0, 0.0) differs")
    assert has("imagesTr/case_008_0000.nii.gz", "2-D image among 3-D ones")
    assert has("labelsTr/case_009.nii.gz", "outside the dataset folder")
    assert has("imagesTr", "1 files belong to no case and are ignored: orphan_0000.nii.gz", "warning")
    assert not any(name.startswith(("imagesTr/case_01", "labelsTr/case_01")) for name in found)
    assert len(report.errors) == 10, report.format()
    assert len(report.warnings) == 2, report.format()
    text = report.format()
    assert "labelsTr/case_005.nii.gz" in text
    assert "12 cases checked, 10 errors, 2 warnings" in text


def test_process_pool_gives_the_same_report(faulty_nnunet):
    dataset = load_dataset(faulty_nnunet)
    in_process = check_dataset(dataset, max_workers=1)
    pooled = check_dataset(dataset, max_workers=2, progress=RichProgress(Console(file=io.StringIO())))
    assert pooled.problems == in_process.problems


def test_decathlon_channel_counts_outside_paths_and_missing_files(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ds", n_cases=4, channels={0: "FLAIR", 1: "T1w"})
    three = np.stack(case_arrays(1, (8, 10, 12), 3, [0])[0])
    write_nifti(root / "imagesTr" / "case_001.nii.gz", three, (1.0, 1.0, 2.0))
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    outside = tmp_path / "outside.nii.gz"
    write_nifti(outside, np.stack(case_arrays(9, (8, 10, 12), 2, [0])[0]), (1.0, 1.0, 2.0))
    description = json.loads((root / "dataset.json").read_text())
    description["training"].append({"image": "../outside.nii.gz", "label": "./labelsTr/case_003.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(description))
    before = file_states(tmp_path)

    report = check_dataset(load_dataset(root), max_workers=1)

    assert file_states(tmp_path) == before
    found = {(str(p.file), p.message) for p in report.errors}
    assert any(
        f == str(root / "imagesTr" / "case_001.nii.gz") and "3 channels, but dataset.json declares 2" in m
        for f, m in found
    )
    assert (str(root / "labelsTr" / "case_002.nii.gz"), "file not found") in found
    assert any(f == str(root / "../outside.nii.gz") and "outside the dataset folder" in m for f, m in found)
    assert len(report.errors) == 3


def test_geometry_within_tolerance_is_accepted(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=1)
    label = case_arrays(0, (8, 10, 12), 1, [0, 1])[1]
    write_nifti(root / "labelsTr" / "case_000.nii.gz", label, (1.0, 1.0, 2.00001), origin=(0.00001, 0.0, 0.0))
    assert check_dataset(load_dataset(root), max_workers=1).problems == []


def test_label_declaration_problems(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=1)
    description = json.loads((root / "dataset.json").read_text())
    description["labels"] = {"background": 1, "a": 0, "ignore": 2, "b": 3}
    (root / "dataset.json").write_text(json.dumps(description))
    messages = [p.message for p in check_dataset(load_dataset(root), max_workers=1).errors]
    assert any("'background' must be 0, got 1" in m for m in messages)
    assert any("'ignore' label (2) must be the highest" in m for m in messages)


def test_fractional_label_values(tmp_path):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=1)
    label = case_arrays(0, (8, 10, 12), 1, [0, 1])[1].astype(np.float32)
    label[0, 0, 0] = 0.5
    write_nifti(root / "labelsTr" / "case_000.nii.gz", label, (1.0, 1.0, 2.0))
    (problem,) = check_dataset(load_dataset(root), max_workers=1).problems
    assert problem.file == root / "labelsTr" / "case_000.nii.gz"
    assert "must be integers, found 0.5" in problem.message


def test_rgb_pngs_in_nnunet_convention_pass_the_check(tmp_path):
    root = write_rgb_png_dataset(tmp_path / "ds", n_cases=3, n_test=1)
    report = check_dataset(load_dataset(root), max_workers=1)
    assert report.problems == [], report.format()


def test_files_whose_channels_do_not_fit_channel_names_are_refused_naming_the_file(tmp_path):
    root = write_rgb_png_dataset(tmp_path / "ds", n_cases=6)
    images = root / "imagesTr"
    write_png(images / "img_000_0000.png", rgb_case_arrays(0, n_components=4)[0])  # RGBA where RGB is declared
    picture = rgb_case_arrays(1)[0]
    write_png(images / "img_001_0001.png", picture[..., 1])  # channel files beside a file holding every channel
    write_png(images / "img_001_0002.png", picture[..., 2])
    write_png(images / "img_002_0000.png", rgb_case_arrays(2)[0][..., 0])  # greyscale where RGB is declared
    write_png(root / "labelsTr" / "img_003.png", rgb_case_arrays(3)[0])  # a label map in colour
    before = file_states(tmp_path)

    report = check_dataset(load_dataset(root), max_workers=1)

    assert file_states(tmp_path) == before
    declared = "dataset.json declares 3: {0: 'R', 1: 'G', 2: 'B'}"
    assert messages_by_file(report) == {
        "imagesTr/img_000_0000.png": [
            (
                "error",
                f"4 channels, but {declared}; channel_names needs one entry per channel of the file, "
                'e.g. {"0": "R", "1": "G", "2": "B"} for RGB',
            )
        ],
        "imagesTr/img_001_0000.png": [
            (
                "error",
                "holds 3 channels, but it is one of the case's 3 image files (img_001_0000.png, img_001_0001.png, "
                "img_001_0002.png), which hold one channel each; a file holding every channel must be the case's "
                "only image file",
            )
        ],
        "imagesTr/img_002_0000.png": [
            (
                "error",
                f"1 channels, but {declared}; give one file holding all 3 channels, or one file per channel "
                "(img_002_0000.png to img_002_0002.png)",
            )
        ],
        "labelsTr/img_003.png": [
            (
                "error",
                "a label map has one channel, this file holds 3 (an RGB PNG, a 4-D NIfTI?); save it as a "
                "single-channel image of label values (a greyscale PNG, a 3-D NIfTI)",
            )
        ],
    }


def test_rgb_files_declared_as_one_channel_are_refused_with_how_to_declare_them(tmp_path):
    root = write_rgb_png_dataset(tmp_path / "ds", n_cases=2)
    description = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**description, "channel_names": {"0": "RGB"}}))
    report = check_dataset(load_dataset(root), max_workers=2)
    assert [(p.file.name, p.message) for p in report.problems] == [
        (
            f"img_00{index}_0000.png",
            "3 channels, but dataset.json declares 1: {0: 'RGB'}; channel_names needs one entry per channel of the "
            'file, e.g. {"0": "R", "1": "G", "2": "B"} for RGB',
        )
        for index in range(2)
    ]
