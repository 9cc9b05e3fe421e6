"""``--num-parts`` without ``--part-id`` takes the part from torchrun's ``RANK`` (docs/cli.md): API and CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from mambaseg.cli.main import main
from mambaseg.workspace.prediction import _parts
from tests.data.synthetic import write_nnunet_dataset


@pytest.fixture
def torchrun(monkeypatch: pytest.MonkeyPatch):
    """Set torchrun's WORLD_SIZE and RANK (None: unset, as outside torchrun)."""

    def set_env(world_size: int | None, rank: int | None) -> None:
        for name, value in (("WORLD_SIZE", world_size), ("RANK", rank)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))

    return set_env


def test_num_parts_without_part_id_takes_torchruns_rank(torchrun):
    torchrun(world_size=4, rank=2)
    assert _parts(3, None) == (3, 2)
    assert _parts(4, None) == (4, 2)


def test_a_rank_beyond_the_parts_is_refused_not_sent_to_part_0(torchrun):
    torchrun(world_size=4, rank=3)
    with pytest.raises(ValueError, match=r"num_parts 2, part_id 3 \(torchrun's RANK\)"):
        _parts(2, None)


def test_neither_given_takes_world_size_and_rank(torchrun):
    torchrun(world_size=4, rank=3)
    assert _parts(None, None) == (4, 3)


def test_part_id_given_wins_over_rank(torchrun):
    torchrun(world_size=4, rank=3)
    assert _parts(4, 1) == (4, 1)


def test_outside_torchrun_the_part_is_the_first(torchrun):
    torchrun(world_size=None, rank=None)
    assert _parts(None, None) == (1, 0)
    assert _parts(3, None) == (3, 0)


@pytest.mark.parametrize(("num_parts", "part_id"), [(0, None), (2, 2), (2, -1)])
def test_bad_parts_are_refused_naming_both(torchrun, num_parts, part_id):
    torchrun(world_size=None, rank=None)
    with pytest.raises(ValueError, match=rf"num_parts {num_parts}, part_id"):
        _parts(num_parts, part_id)


@pytest.mark.slow
def test_cli_num_parts_alone_predicts_the_part_of_the_rank(tmp_path, torchrun, capsys):
    dataset = write_nnunet_dataset(
        tmp_path / "Dataset001_Tiny", n_cases=5, n_test=3, shape=(8, 12, 12), spacing=(1, 1, 1)
    )
    train = ["train", str(dataset), "--workspace", str(tmp_path / "ws"), "-c", "3d_fullres", "-n", "unet_resenc"]
    train += ["-f", "0", "trainer=cpu_short", "trainer.num_epochs=1", "trainer.iterations_per_epoch=1"]
    train += ["trainer.val_iterations=1", "num_workers=0"]
    assert main(train) == 0
    run = tmp_path / "ws" / "Synthetic" / "runs" / "3d_fullres__unet_resenc"
    torchrun(world_size=None, rank=2)  # as under a launcher setting only RANK
    out = tmp_path / "out"
    args = ["predict", "-i", str(dataset / "imagesTs"), "-o", str(out), "-m", str(run), "--no-mirroring"]
    assert main([*args, "--device", "cpu", "--num-parts", "3"]) == 0
    assert sorted(p.name for p in Path(out).iterdir()) == ["case_007.nii.gz"]  # the third of case_005..007
    assert "(part 2 of 3)" in capsys.readouterr().out
