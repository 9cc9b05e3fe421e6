import numpy as np

from mambaseg.cli.main import main
from mambaseg.data import load_dataset
from tests.data.synthetic import file_states, write_decathlon_dataset, write_nifti, write_nnunet_dataset


def test_check_good_dataset_exits_0(tmp_path, capsys):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=2)
    assert main(["check", str(root), "--workers", "1"]) == 0
    assert "2 cases, 0 errors, 0 warnings" in capsys.readouterr().out


def test_check_bad_dataset_exits_1_and_names_the_file(tmp_path, capsys):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=3)
    write_nifti(root / "labelsTr" / "case_001.nii.gz", np.full((8, 10, 12), 7, np.uint8), (1.0, 1.0, 2.0))
    (root / "imagesTr" / "case_002_0000.nii.gz").unlink()
    before = file_states(root)
    assert main(["check", str(root), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "case_001.nii.gz" in out
    assert "[7]" in out
    assert "case_002_0000.nii.gz" in out
    assert "2 errors" in out
    assert file_states(root) == before


def test_check_warnings_alone_exit_0(tmp_path, capsys):
    root = write_nnunet_dataset(tmp_path / "ds", n_cases=2)
    write_nifti(root / "labelsTr" / "case_000.nii.gz", np.zeros((8, 10, 12), np.uint8), (1.0, 1.0, 2.0))
    assert main(["check", str(root), "--workers", "1"]) == 0
    assert "no foreground" in capsys.readouterr().out


def test_check_finds_a_dataset_by_name_in_the_workspace(tmp_path, capsys):
    write_nnunet_dataset(tmp_path / "ws" / "raw" / "Dataset001_Test", n_cases=1)
    assert main(["check", "Dataset001_Test", "--workspace", str(tmp_path / "ws"), "--workers", "1"]) == 0


def test_check_unloadable_dataset_exits_1(tmp_path, capsys):
    (tmp_path / "dataset.json").write_text("{")
    assert main(["check", str(tmp_path)]) == 1
    assert "dataset.json" in capsys.readouterr().out


def test_convert_then_refuse_to_overwrite(tmp_path, capsys):
    channels = {0: "T2", 1: "ADC"}
    root = write_decathlon_dataset(tmp_path / "Task05_Prostate", n_cases=2, channels=channels, name="Prostate")
    assert main(["convert", str(root), str(tmp_path / "raw")]) == 0
    target = tmp_path / "raw" / "Dataset005_Prostate"
    assert str(target) in capsys.readouterr().out
    assert load_dataset(target).case_names() == ["case_000", "case_001"]
    assert main(["convert", str(root), str(tmp_path / "raw")]) == 1
    assert "not empty" in capsys.readouterr().out
    assert main(["convert", str(root), str(tmp_path / "raw"), "--overwrite", "--id", "12"]) == 0
    assert (tmp_path / "raw" / "Dataset012_Prostate" / "dataset.json").exists()


def test_convert_needs_an_id_when_the_name_has_none(tmp_path, capsys):
    root = write_decathlon_dataset(tmp_path / "prostate", n_cases=1)
    assert main(["convert", str(root), str(tmp_path / "raw")]) == 1
    assert "--id" in capsys.readouterr().out
