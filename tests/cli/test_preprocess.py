from mambaseg.cli.main import main
from mambaseg.preprocessing import load_case
from tests.data.synthetic import file_states, write_nnunet_dataset


def test_preprocess_plans_first_then_skips_finished_cases(tmp_path, capsys):
    root = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=3, shape=(8, 10, 12))
    workspace = tmp_path / "ws"
    before = file_states(root)
    argv = ["preprocess", str(root), "--workspace", str(workspace), "-c", "3d_fullres", "--workers", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3d_fullres: 3 cases preprocessed, 0 already done" in out
    dataset_dir = workspace / "Synthetic"
    assert (dataset_dir / "plans.json").is_file() and (dataset_dir / "fingerprint.json").is_file()
    folder = dataset_dir / "preprocessed" / "3d_fullres"
    case = load_case(folder, "case_000")
    assert case.data.ndim == 4 and case.seg.shape[1:] == case.data.shape[1:]
    assert main(argv) == 0
    assert "0 cases preprocessed, 3 already done" in capsys.readouterr().out
    assert main([*argv, "--force"]) == 0
    assert "3 cases preprocessed" in capsys.readouterr().out
    assert file_states(root) == before


def test_unknown_configuration_is_an_error(tmp_path, capsys):
    root = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=2)
    argv = ["preprocess", str(root), "--workspace", str(tmp_path / "ws"), "-c", "4d", "--workers", "1"]
    assert main(argv) == 1
    assert "no configuration '4d'" in capsys.readouterr().out
