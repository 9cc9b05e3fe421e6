"""Hand-edited plans.json: every field is checked when it is read; errors name the file, configuration and field."""

from __future__ import annotations

import json
import logging

import pytest

from mambaseg.cli.main import main
from tests.data.synthetic import write_nnunet_dataset


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = write_nnunet_dataset(tmp_path_factory.mktemp("raw") / "Dataset001_Tiny", n_cases=3, shape=(8, 10, 12))
    workspace = tmp_path_factory.mktemp("ws")
    assert main(["plan", str(root), "--workspace", str(workspace), "--workers", "1"]) == 0
    return root, workspace, (workspace / "Synthetic" / "plans.json").read_text()


def _preprocess_with(planned, tmp_path, edit):
    root, workspace, text = planned
    plans = json.loads(text)
    edit(plans["configurations"]["3d_fullres"])
    workspace = tmp_path / "ws"
    (workspace / "Synthetic").mkdir(parents=True)
    (workspace / "Synthetic" / "plans.json").write_text(json.dumps(plans))
    argv = ["preprocess", str(root), "--workspace", str(workspace), "-c", "3d_fullres", "--workers", "1"]
    return main(argv), workspace


def _set(key, value):
    return lambda config: config.__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set("spacing", [-1.0, 1.0, 1.0]), "spacing must be 3 finite numbers > 0, got [-1.0, 1.0, 1.0]"),
        (_set("spacing", [0, 1.0, 1.0]), "spacing must be 3 finite numbers > 0, got [0, 1.0, 1.0]"),
        (_set("spacing", [1.0, 1.0]), "spacing must be 3 finite numbers > 0, got [1.0, 1.0]"),
        (_set("patch_size", ["forty", 8, 8]), "patch_size must be 3 integers >= 1, got ['forty', 8, 8]"),
        (_set("patch_size", [8, 9, 12]), "patch_size [8, 9, 12] is not a multiple of [1, 2, 2], the product"),
        (_set("batch_size", 0), "batch_size must be an integer >= 1, got 0"),
        (_set("network", "resnet"), "network unknown network 'resnet'"),
        (_set("normalization", []), "normalization must be one entry per channel (1)"),
        (_set("spacing", [0.001, 0.001, 0.001]), "spacing [0.001, 0.001, 0.001] is too fine: the median case"),
        (lambda config: config.pop("batch_size"), "not a valid plans file"),
    ],
    ids=["negative", "zero", "length", "word", "divisor", "batch", "network", "normalization", "too_fine", "missing"],
)
def test_a_bad_field_is_an_error_naming_the_file_configuration_and_field(planned, tmp_path, capsys, edit, expected):
    status, workspace = _preprocess_with(planned, tmp_path, edit)
    out = " ".join(capsys.readouterr().out.split())
    assert status == 1
    assert f"error: {workspace / 'Synthetic' / 'plans.json'}" in out
    if expected != "not a valid plans file":
        assert "configuration '3d_fullres':" in out
    assert expected in out
    assert not (workspace / "Synthetic" / "preprocessed" / "3d_fullres").exists()


def test_a_spacing_much_finer_than_the_data_is_a_warning_giving_the_size(planned, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        status, _ = _preprocess_with(planned, tmp_path, _set("spacing", [0.9, 0.45, 0.45]))
    assert status == 0
    assert "configuration '3d_fullres': spacing [0.9, 0.45, 0.45]: the median case" in caplog.text
    assert "GiB per preprocessed case" in caplog.text
