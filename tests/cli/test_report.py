"""`mambaseg train` and `mambaseg find-best` write report.html; `mambaseg report` draws it again from their files."""

import logging

import pytest

from mambaseg.cli.main import main
from tests.data.synthetic import write_nnunet_dataset
from tests.evaluation.html_page import check_self_contained

TINY = [
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "num_workers=0",
]
FOLD_HEADINGS = ["Plan", "Precision and machine", "Training", "Validation", "Best and worst validation cases"]


def train(dataset, workspace, *extra):
    args = ["train", str(dataset), "--workspace", str(workspace), "-c", "3d_fullres", "-n", "unet_resenc", "-f", "0"]
    return main([*args, *extra, *TINY])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset, workspace) after `mambaseg train` of one tiny fold."""
    root = tmp_path_factory.mktemp("report")
    dataset = write_nnunet_dataset(root / "raw" / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12))
    assert train(dataset, root / "ws") == 0
    return dataset, root / "ws"


@pytest.mark.slow
def test_train_writes_the_fold_report_and_report_draws_it_and_the_datasets_again(trained, capsys):
    dataset, workspace = trained
    run = workspace / "Synthetic" / "runs" / "3d_fullres__unet_resenc"
    report = run / "fold_0" / "report.html"
    page = check_self_contained(report.read_text(encoding="utf-8"))
    assert page.headings == FOLD_HEADINGS and len(page.tables) == 3
    assert len(page.images) == 2  # the curves; one validation case, both the best and the worst

    report.unlink()
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert f"report: {report}" in capsys.readouterr().out.replace("\n", "")
    assert check_self_contained(report.read_text(encoding="utf-8")).headings == FOLD_HEADINGS

    assert main(["find-best", str(dataset), "--workspace", str(workspace)]) == 0
    chosen = workspace / "Synthetic" / "report.html"
    page = check_self_contained(chosen.read_text(encoding="utf-8"))
    assert page.headings == ["Chosen", "Ranking", "Ensembles", "Validation of the ranked runs' folds"]
    chosen.unlink()
    capsys.readouterr()
    assert main(["report", "Synthetic", "--workspace", str(workspace)]) == 0
    assert f"report: {chosen}" in capsys.readouterr().out.replace("\n", "") and chosen.is_file()

    assert main(["report", "Elsewhere", "--workspace", str(workspace)]) == 1
    assert "Elsewhere: neither a run folder" in capsys.readouterr().out.replace("\n", "")


@pytest.mark.slow
def test_a_report_that_cannot_be_drawn_is_a_warning_not_a_failed_validation(trained, monkeypatch, caplog):
    dataset, workspace = trained
    fold = workspace / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    before = (fold / "report.html").stat().st_mtime_ns

    def broken(*args, **kwargs):
        raise RuntimeError("no room on the canvas")

    monkeypatch.setattr("mambaseg.workspace.reports.write_fold_report", broken)
    with caplog.at_level(logging.WARNING, logger="mambaseg"):
        assert train(dataset, workspace, "--val") == 0  # validated again, from checkpoint_final.pt
    assert f"fold {fold}: report.html not written: RuntimeError: no room on the canvas" in caplog.text
    assert (fold / "report.html").stat().st_mtime_ns == before
