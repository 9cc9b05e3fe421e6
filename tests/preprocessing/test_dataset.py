import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from mambaseg.data.dataset import load_dataset
from mambaseg.preprocessing.case import PreprocessingSpec
from mambaseg.preprocessing.dataset import SPEC_FILE, preprocess_cases, spec_to_dict
from mambaseg.preprocessing.normalization import ChannelNormalization
from mambaseg.preprocessing.storage import case_files, load_case
from mambaseg.workspace.layout import Workspace

SPEC = PreprocessingSpec((2.0, 1.0, 1.0), (ChannelNormalization("zscore"),))
NAMES = ("case_a", "case_b", "case_c")


def _write(array_zyx: np.ndarray, path, spacing_xyz=(1.0, 1.0, 2.0)) -> None:
    nib.save(nib.Nifti1Image(array_zyx.transpose(2, 1, 0), np.diag([*spacing_xyz, 1.0])), str(path))


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "Dataset001_Tiny"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    description = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": len(NAMES),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description))
    rng = np.random.default_rng(0)
    for index, name in enumerate(NAMES):
        image = np.zeros((8, 16, 14), dtype=np.float32)
        image[1:7, 2 + index : 14, 2:12] = rng.random((6, 12 - index, 10)) + 1
        label = np.zeros(image.shape, dtype=np.uint8)
        label[2:4, 4:8, 4:8] = 1
        label[4:6, 9:12, 6:10] = 2
        _write(image, root / "imagesTr" / f"{name}_0000.nii.gz")
        _write(label, root / "labelsTr" / f"{name}.nii.gz")
    return load_dataset(root)


def test_writes_every_case_with_its_properties_and_locations(dataset, tmp_path):
    folder = Workspace(tmp_path / "ws").dataset(dataset.name).preprocessed("3d_fullres")
    summary = preprocess_cases(dataset, SPEC, folder, workers=0)
    assert summary.processed == NAMES and summary.skipped == ()
    assert json.loads((folder / SPEC_FILE).read_text())["target_spacing"] == [2.0, 1.0, 1.0]
    case = load_case(folder, "case_b")
    assert case.data.dtype == np.float32 and case.data.shape[0] == 1
    assert case.seg.dtype == np.int8 and case.seg.shape[1:] == case.data.shape[1:]
    assert case.properties.shape_before_crop == (8, 16, 14)
    assert case.properties.spacing == (1.0, 1.0, 2.0)
    assert case.properties.class_locations == {1: 32, 2: 24}
    for label, coords in case.locations.items():
        assert (case.seg[0][tuple(coords.T)] == label).all()
    assert not list(folder.glob(".*tmp"))


def test_rerun_skips_finished_cases_and_force_redoes_them(dataset, tmp_path):
    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    npz, json_file = case_files(folder, "case_a")
    stamps = (npz.stat().st_mtime_ns, json_file.stat().st_mtime_ns)
    json_file.unlink()
    again = preprocess_cases(dataset, SPEC, folder, workers=0)
    assert again.processed == ("case_a",) and again.skipped == ("case_b", "case_c")
    untouched = case_files(folder, "case_b")[0].stat().st_mtime_ns
    forced = preprocess_cases(dataset, SPEC, folder, workers=0, force=True)
    assert forced.processed == NAMES
    assert case_files(folder, "case_b")[0].stat().st_mtime_ns != untouched
    assert npz.stat().st_mtime_ns != stamps[0]


def test_changed_spec_redoes_every_case(dataset, tmp_path):
    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    changed = PreprocessingSpec((1.0, 1.0, 1.0), SPEC.normalization)
    assert preprocess_cases(dataset, changed, folder, workers=0).processed == NAMES
    assert load_case(folder, "case_a").properties.target_spacing == (1.0, 1.0, 1.0)


def test_process_pool_gives_the_same_files(dataset, tmp_path):
    preprocess_cases(dataset, SPEC, tmp_path / "serial", workers=0)
    preprocess_cases(dataset, SPEC, tmp_path / "pool", workers=2)
    for name in NAMES:
        serial, pooled = load_case(tmp_path / "serial", name), load_case(tmp_path / "pool", name)
        assert np.array_equal(serial.data, pooled.data) and np.array_equal(serial.seg, pooled.seg)
        assert serial.properties == pooled.properties


def _label_path(dataset, name):
    return next(case.label_file for case in dataset.cases if case.name == name)


def test_a_case_whose_label_changed_is_made_again_and_the_log_names_it(dataset, tmp_path, caplog):
    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    untouched = case_files(folder, "case_a")[0].stat().st_mtime_ns
    path = _label_path(dataset, "case_b")
    label = np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)
    _write(np.choose(label, [0, 2, 1]).astype(np.uint8), path)  # labels 1 and 2 swapped
    again = preprocess_cases(dataset, SPEC, folder, workers=0)
    assert again.processed == ("case_b",) and again.redone == ("case_b",) and again.skipped == ("case_a", "case_c")
    assert "case case_b is preprocessed again: labelsTr/case_b.nii.gz changed" in caplog.text
    assert load_case(folder, "case_b").properties.class_locations == {1: 24, 2: 32}
    assert case_files(folder, "case_a")[0].stat().st_mtime_ns == untouched
    assert preprocess_cases(dataset, SPEC, folder, workers=0).processed == ()


def test_a_cropped_image_is_made_again_in_its_new_shape(dataset, tmp_path, caplog):
    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    case = next(case for case in dataset.cases if case.name == "case_c")
    image = np.asarray(nib.load(str(case.image_files[0])).dataobj).transpose(2, 1, 0)
    label = np.asarray(nib.load(str(case.label_file)).dataobj).transpose(2, 1, 0)
    _write(image[:, :, :12], case.image_files[0])
    _write(label[:, :, :12], case.label_file)
    again = preprocess_cases(dataset, SPEC, folder, workers=2)
    assert again.redone == ("case_c",)
    assert "imagesTr/case_c_0000.nii.gz, labelsTr/case_c.nii.gz changed" in caplog.text
    assert load_case(folder, "case_c").properties.shape_before_crop == (8, 16, 12)


def test_a_case_without_a_record_or_made_with_another_spec_is_made_again(dataset, tmp_path, caplog):
    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    json_file = case_files(folder, "case_a")[1]
    values = json.loads(json_file.read_text())
    del values["made_from"]  # as an older mambaseg wrote it
    json_file.write_text(json.dumps(values))
    changed = PreprocessingSpec((1.0, 1.0, 1.0), SPEC.normalization)
    (folder / SPEC_FILE).write_text(json.dumps(spec_to_dict(changed)))  # a run with the new spec, interrupted
    again = preprocess_cases(dataset, changed, folder, workers=0)
    assert again.processed == NAMES and again.redone == NAMES
    assert "case case_a is preprocessed again: it has no record" in caplog.text
    assert "case case_b is preprocessed again: the preprocessing spec changed" in caplog.text
    assert load_case(folder, "case_b").properties.target_spacing == (1.0, 1.0, 1.0)


def test_an_unreadable_spec_file_redoes_every_case(dataset, tmp_path):
    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    (folder / SPEC_FILE).write_text("{not json")
    assert preprocess_cases(dataset, SPEC, folder, workers=0).processed == NAMES
    assert json.loads((folder / SPEC_FILE).read_text()) == spec_to_dict(SPEC)


def test_the_record_names_every_source_file_with_its_digest(dataset, tmp_path):
    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    record = json.loads(case_files(folder, "case_a")[1].read_text())["made_from"]
    assert sorted(record["files"]) == ["imagesTr/case_a_0000.nii.gz", "labelsTr/case_a.nii.gz"]
    label = _label_path(dataset, "case_a")
    assert record["files"]["labelsTr/case_a.nii.gz"] == hashlib.sha256(label.read_bytes()).hexdigest()


def test_cases_made_by_other_preprocessing_code_are_made_again(dataset, tmp_path, caplog, monkeypatch):
    import mambaseg.preprocessing.dataset as preprocessing_dataset

    folder = tmp_path / "out"
    preprocess_cases(dataset, SPEC, folder, workers=0)
    recorded = json.loads(case_files(folder, "case_a")[1].read_text())["made_from"]["code"]
    assert recorded == preprocessing_dataset.code_digest()
    monkeypatch.setattr(preprocessing_dataset, "code_digest", lambda: "0" * 64)  # an edited resampling, say
    again = preprocess_cases(dataset, SPEC, folder, workers=0)
    assert again.redone == NAMES
    assert "case case_a is preprocessed again: the preprocessing code changed" in caplog.text
    assert preprocess_cases(dataset, SPEC, folder, workers=0).redone == ()
