import json
import logging

import pytest

from mambaseg.data import SplitsError, load_or_create_splits, make_splits

NAMES = [f"case_{index:03d}" for index in range(23)]


def test_val_folds_are_disjoint_and_cover_every_case():
    splits = make_splits(NAMES, n_folds=5)
    assert len(splits) == 5
    vals = [fold["val"] for fold in splits]
    assert sorted(name for val in vals for name in val) == NAMES
    assert [len(val) for val in vals] == [5, 5, 5, 4, 4]
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == NAMES
        assert not set(fold["train"]) & set(fold["val"])


def test_same_seed_same_splits_whatever_the_input_order():
    assert make_splits(NAMES) == make_splits(list(reversed(NAMES)))
    assert make_splits(NAMES, seed=1) != make_splits(NAMES, seed=2)


def test_splits_match_scikit_learn_kfold_as_nnunet_uses_it():
    # KFold(5, shuffle=True, random_state=12345).split(names) gives these validation folds (checked with scikit-learn).
    splits = make_splits([f"c{index}" for index in range(10)])
    assert [fold["val"] for fold in splits] == [["c0", "c7"], ["c3", "c9"], ["c4", "c6"], ["c1", "c8"], ["c2", "c5"]]


@pytest.mark.parametrize("n_folds", [1, 24])
def test_bad_fold_counts(n_folds):
    with pytest.raises(ValueError, match="n_folds"):
        make_splits(NAMES, n_folds=n_folds)


def test_splits_are_written_once_and_then_read(tmp_path):
    path = tmp_path / "sub" / "splits.json"
    created = load_or_create_splits(path, NAMES)
    assert json.loads(path.read_text()) == created
    mtime = path.stat().st_mtime_ns
    assert load_or_create_splits(path, NAMES) == created
    assert path.stat().st_mtime_ns == mtime


def test_user_splits_are_honoured(tmp_path):
    path = tmp_path / "splits.json"
    mine = [{"train": NAMES[:20], "val": NAMES[20:]}, {"train": NAMES[3:], "val": NAMES[:3]}]
    path.write_text(json.dumps(mine))
    assert load_or_create_splits(path, NAMES) == mine
    assert json.loads(path.read_text()) == mine


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([{"train": ["case_000"], "val": ["nobody"]}], "names 1 case(s) the dataset does not have: nobody"),
        ([{"train": ["case_000"], "val": ["case_000"]}], "in both 'train' and 'val'"),
        ([{"train": ["case_000"]}], "exactly the keys"),
        ([{"train": ["case_000"], "val": []}], "no validation cases"),
        ({"train": []}, "non-empty list"),
    ],
)
def test_bad_user_splits_name_the_file(tmp_path, content, expected):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SplitsError, match="splits.json") as raised:
        load_or_create_splits(path, NAMES)
    assert expected in str(raised.value)


def test_removed_cases_are_refused_naming_every_one_and_how_to_regenerate(tmp_path):
    path = tmp_path / "splits.json"
    load_or_create_splits(path, NAMES)
    remaining = NAMES[:-12]
    with pytest.raises(SplitsError) as raised:
        load_or_create_splits(path, remaining)
    message = str(raised.value)
    assert message.startswith(f"{path}: names 12 case(s) the dataset does not have: case_011, case_012")
    assert "and 2 more" in message and "delete splits.json to make new splits" in message


def test_added_cases_are_named_in_a_warning_and_the_splits_kept(tmp_path, caplog):
    path = tmp_path / "splits.json"
    created = load_or_create_splits(path, NAMES)
    with caplog.at_level(logging.WARNING):
        assert load_or_create_splits(path, [*NAMES, "case_new", "case_other"]) == created
    assert "2 case(s) of the dataset are in no fold" in caplog.text
    assert "case_new, case_other; delete splits.json to make new splits that include them" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_or_create_splits(path, NAMES)
    assert not caplog.text
