"""The real-data tests' lookup (``tests/real_data.py``): a clone without the data skips, saying what to do."""

from tests.real_data import VARIABLE, real_data, skip_reason


def test_without_the_variable_real_data_is_absent_and_the_reason_says_what_to_set_and_where_to_download(
    monkeypatch,
):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert real_data("Task04_Hippocampus") is None
    reason = skip_reason("Task04_Hippocampus")
    assert "MAMBASEG_REAL_DATA" in reason and "medicaldecathlon.com" in reason


def test_a_folder_without_the_dataset_is_absent_and_named_in_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv(VARIABLE, str(tmp_path))
    assert real_data("Task04_Hippocampus") is None
    assert str(tmp_path) in skip_reason("Task04_Hippocampus")
    (tmp_path / "Task04_Hippocampus").mkdir()
    assert real_data("Task04_Hippocampus") == tmp_path / "Task04_Hippocampus"
