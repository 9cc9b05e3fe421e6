"""The benchmark's results (intervals, paired tests, costs, verdict) and its report files."""

import base64
import csv
import html
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mambaseg.evaluation.benchmark_report import (
    RESULTS_SCHEMA_VERSION,
    CaseScore,
    RunCosts,
    build_results,
    write_report,
)
from mambaseg.evaluation.statistics import bootstrap_mean, holm, wilcoxon_signed_rank

BASELINE = "unet_resenc"
CONTESTANTS = [BASELINE, "umamba", "segmamba"]
CASES = [("0", "a"), ("0", "b"), ("0", "c"), ("0", "d"), ("1", "a"), ("1", "b"), ("1", "c"), ("1", "d")]
# (anterior, posterior) Dice per case; case names repeat across folds, so only (fold, case) tells cases apart
DICE = {
    BASELINE: [
        (0.80, 0.70),
        (0.82, 0.66),
        (0.78, 0.74),
        (0.85, 0.61),
        (0.79, 0.69),
        (0.81, 0.72),
        (0.83, 0.65),
        (0.77, 0.70),
    ],
    "umamba": [
        (0.85, 0.71),
        (0.86, 0.69),
        (0.84, 0.75),
        (0.88, 0.66),
        (0.80, 0.75),
        (0.88, 0.73),
        (0.90, 0.70),
        (0.80, 0.78),
    ],
    # segmamba: no posterior Dice on fold 0 case b, and no fold 1 case d at all
    "segmamba": [
        (0.70, 0.69),
        (0.70, None),
        (0.70, 0.70),
        (0.84, 0.50),
        (0.70, 0.60),
        (0.75, 0.70),
        (0.80, 0.60),
        None,
    ],
}
SEED = 7
INFO = {
    "name": "mamba-vs-cnn",
    "dataset": "Dataset004_Hippocampus",
    "configuration": "3d_fullres",
    "created": "2026-05-09T21:00:00+00:00",
    "budget": {
        "kind": "iterations",
        "epochs": 2,
        "iterations_per_epoch": 10,
        "batch_size": 2,
        "samples": 40,
        "minutes": None,
    },
    "folds": ["0", "1"],
    "machine": {"cpu": "Test CPU", "device": "cpu", "torch": "2.13.0", "precision": "float32"},
    "command": "mambaseg benchmark Dataset004_Hippocampus -c 3d_fullres --networks umamba segmamba",
    "notes": ["segmamba trained at patch 32x32x32, see https://example.org/notes"],
}


def _scores(dice=DICE):
    scores = []
    for contestant, per_case in dice.items():
        for (fold, case), values in zip(CASES, per_case, strict=True):
            if values is None:
                continue
            for label, value in zip(("anterior", "posterior"), values, strict=True):
                hd95 = None if value is None else round(10 * (1 - value), 6)
                scores.append(CaseScore(contestant, fold, case, label, value, hd95, value))
    return scores


def _costs():
    return [
        RunCosts(name, fold, 1_000_000 * (k + 1), 2, 40, sps, spe, mem, 0.5, "float32", [32, 32, 32], 2)
        for k, name in enumerate(CONTESTANTS)
        for fold, sps, spe, mem in (("0", 4.0, 10.0, None), ("1", 2.0, 12.0, 500.0))
    ]


def _case_mean(values):
    present = [v for v in values if v is not None]
    return sum(present) / len(present)


@pytest.fixture(scope="module")
def results():
    return build_results(INFO, CONTESTANTS, BASELINE, _scores(), _costs(), seed=SEED)


def test_case_means_and_class_means_are_the_hand_computed_ones(results):
    assert results["schema_version"] == RESULTS_SCHEMA_VERSION
    assert results["contestants"] == CONTESTANTS and results["baseline"] == BASELINE
    assert results["classes"] == ["anterior", "posterior"]
    assert results["bootstrap"] == {"seed": SEED, "resamples": 10_000, "confidence": 0.95}
    baseline = results["scores"][BASELINE]
    assert baseline["cases"] == 8
    assert baseline["case_mean"]["dice"]["mean"] == pytest.approx(sum(sum(pair) for pair in DICE[BASELINE]) / 16)
    assert baseline["classes"]["anterior"]["dice"]["mean"] == pytest.approx(6.45 / 8)
    segmamba = results["scores"]["segmamba"]
    assert segmamba["cases"] == 7
    assert segmamba["classes"]["posterior"]["dice"]["n"] == 6
    assert segmamba["classes"]["posterior"]["dice"]["mean"] == pytest.approx(3.79 / 6)
    case_means = [0.695, 0.70, 0.70, 0.67, 0.65, 0.725, 0.70]  # fold 0 case b: its anterior Dice alone
    assert segmamba["case_mean"]["dice"]["mean"] == pytest.approx(sum(case_means) / 7)
    assert segmamba["case_mean"]["hd95"]["mean"] == pytest.approx(10 * (1 - sum(case_means) / 7))
    assert results["scores"]["umamba"]["case_mean"]["nsd"]["n"] == 8


def test_intervals_are_the_bootstrap_of_the_same_values_with_the_same_seed(results):
    def expected(values):
        interval = bootstrap_mean(values, confidence=0.95, resamples=10_000, seed=SEED)
        return {"mean": interval.mean, "low": interval.low, "high": interval.high, "n": interval.n}

    umamba = results["scores"]["umamba"]
    assert umamba["classes"]["posterior"]["dice"] == expected([pair[1] for pair in DICE["umamba"]])
    assert umamba["case_mean"]["dice"] == expected([_case_mean(pair) for pair in DICE["umamba"]])
    segmamba = results["scores"]["segmamba"]["case_mean"]["dice"]
    assert segmamba == expected([_case_mean(pair) for pair in DICE["segmamba"] if pair is not None])
    assert segmamba["low"] < segmamba["mean"] < segmamba["high"]


def test_comparisons_are_wilcoxon_on_cases_paired_by_fold_and_case_with_holm(results):
    baseline = [_case_mean(pair) for pair in DICE[BASELINE]]
    umamba = wilcoxon_signed_rank([_case_mean(pair) for pair in DICE["umamba"]], baseline)
    segmamba = wilcoxon_signed_rank([_case_mean(pair) for pair in DICE["segmamba"][:7]], baseline[:7])
    p_holm = holm([umamba.p_value, segmamba.p_value])
    for name, test, adjusted in (("umamba", umamba, p_holm[0]), ("segmamba", segmamba, p_holm[1])):
        comparison = results["comparisons"][name]
        assert comparison["baseline"] == BASELINE
        assert comparison["p_value"] == test.p_value and comparison["p_holm"] == adjusted
        assert comparison["n"] == test.n and comparison["statistic"] == test.statistic
        assert comparison["effect_size"] == test.effect_size and comparison["method"] == test.method
        assert comparison["mean_difference"] == pytest.approx(test.mean_difference)
        assert comparison["median_difference"] == pytest.approx(test.median_difference)
        assert comparison["significant"] == (adjusted < 0.05)
    assert list(results["comparisons"]) == ["umamba", "segmamba"]
    assert results["comparisons"]["segmamba"]["n"] == results["comparisons"]["segmamba"]["cases"] == 7
    assert results["comparisons"]["umamba"]["effect_size"] == 1.0
    assert results["comparisons"]["segmamba"]["effect_size"] == -1.0


def test_best_and_verdict(results):
    assert results["best"] == "umamba"
    umamba = results["scores"]["umamba"]["case_mean"]["dice"]["mean"]
    baseline = results["scores"][BASELINE]["case_mean"]["dice"]["mean"]
    p_holm = results["comparisons"]["umamba"]["p_holm"]
    assert p_holm < 0.05
    assert results["verdict"] == (
        f"umamba has the highest mean Dice, {umamba:.3f} against {baseline:.3f} for the baseline {BASELINE}; "
        "its lead is significant (Wilcoxon signed-rank test on per-case mean Dice over 8 cases, "
        f"Holm-corrected p = {p_holm:.3g}, α 0.05)."
    )


def test_verdict_when_the_baseline_is_best():
    worse = build_results(INFO, [BASELINE, "segmamba"], BASELINE, _scores({k: DICE[k] for k in CONTESTANTS[::2]}), [])
    assert worse["best"] == BASELINE
    assert worse["verdict"].startswith(f"The baseline {BASELINE} has the highest mean Dice, ")
    assert "; segmamba is significantly worse (" in worse["verdict"]

    close = [tuple(v - 0.005 * (-1) ** i for v in pair) for i, pair in enumerate(DICE[BASELINE])]  # alternate signs
    tied = build_results(INFO, [BASELINE, "unet"], BASELINE, _scores({BASELINE: DICE[BASELINE], "unet": close}), [])
    assert tied["best"] == BASELINE and not tied["comparisons"]["unet"]["significant"]
    assert "; no other network is significantly worse (" in tied["verdict"]


def test_scores_in_any_order_give_the_same_numbers(results):
    shuffled = _scores()
    random.Random(0).shuffle(shuffled)
    again = build_results(INFO, CONTESTANTS, BASELINE, shuffled, list(reversed(_costs())), seed=SEED)
    for key in ("scores", "costs", "comparisons", "best", "verdict"):
        assert again[key] == results[key], key


def test_costs_per_fold_and_their_mean(results):
    costs = results["costs"]["umamba"]
    assert list(costs["folds"]) == ["0", "1"]
    assert costs["folds"]["1"] == {
        "parameters": 2_000_000,
        "epochs": 2,
        "samples": 40,
        "samples_per_second": 2.0,
        "seconds_per_epoch": 12.0,
        "peak_memory_mb": 500.0,
        "inference_seconds_per_case": 0.5,
        "precision": "float32",
        "patch_size": [32, 32, 32],
        "batch_size": 2,
    }
    assert costs["mean"] == {
        "parameters": 2_000_000,
        "epochs": 2,
        "samples": 40,
        "samples_per_second": 3.0,
        "seconds_per_epoch": 11.0,
        "peak_memory_mb": 500.0,  # fold 0 measured none
        "inference_seconds_per_case": 0.5,
    }


def test_a_contestant_without_scores_or_costs_is_kept_with_nulls_and_a_note():
    results = build_results(INFO, [*CONTESTANTS, "vmunet"], BASELINE, _scores(), _costs())
    vmunet = results["scores"]["vmunet"]
    assert vmunet["cases"] == 0
    assert vmunet["case_mean"]["dice"] == {"mean": None, "low": None, "high": None, "n": 0}
    assert vmunet["classes"]["anterior"]["hd95"]["mean"] is None
    assert results["costs"]["vmunet"] == {"folds": {}, "mean": dict.fromkeys(results["costs"]["umamba"]["mean"])}
    comparison = results["comparisons"]["vmunet"]
    assert (
        comparison["cases"] == comparison["n"] == 0 and comparison["p_value"] is None and comparison["p_holm"] is None
    )
    assert not comparison["significant"]
    assert results["notes"] == ["vmunet has no case score.", "vmunet has no measured cost."]
    assert results["best"] == "umamba"


def test_results_round_trip_through_json_without_nan():
    scores = [*_scores(), CaseScore("umamba", "2", "e", "anterior", math.nan, math.inf, None)]
    results = build_results(INFO, CONTESTANTS, BASELINE, scores, _costs())
    text = json.dumps(results, allow_nan=False)
    assert json.loads(text) == results
    assert results["case_scores"][-1] == {
        "contestant": "umamba",
        "fold": "2",
        "case": "e",
        "label": "anterior",
        "dice": None,
        "hd95": None,
        "nsd": None,
    }
    assert results["scores"]["umamba"]["cases"] == 9 and results["scores"]["umamba"]["case_mean"]["dice"]["n"] == 8


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="baseline 'nnunet'"):
        build_results(INFO, CONTESTANTS, "nnunet", _scores(), [])
    with pytest.raises(ValueError, match="'vmunet', which is not a contestant"):
        build_results(INFO, CONTESTANTS, BASELINE, [CaseScore("vmunet", "0", "a", "x", 1.0, 0.0, 1.0)], [])
    with pytest.raises(ValueError, match="two case scores"):
        build_results(INFO, CONTESTANTS, BASELINE, _scores() + _scores()[:1], [])
    with pytest.raises(ValueError, match="two cost records"):
        build_results(INFO, CONTESTANTS, BASELINE, _scores(), _costs() + _costs()[:1])


@dataclass(frozen=True)
class Paths:
    results: Path
    table: Path
    boxplot: Path
    markdown: Path
    html: Path


def test_write_report_writes_five_files(results, tmp_path):
    files = Paths(
        *(tmp_path / name for name in ("results.json", "results.csv", "dice.png", "report.md", "report.html"))
    )
    write_report(results, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in vars(files).values())
    assert json.loads(files.results.read_text(encoding="utf-8")) == results

    with files.table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["contestant", "fold", "case", "class", "dice", "hd95", "nsd"]
    assert len(rows) == 1 + len(_scores())
    assert ["segmamba", "0", "b", "posterior", "", "", ""] in rows
    assert ["umamba", "1", "d", "posterior", "0.78", "2.2", "0.78"] in rows

    page = files.html.read_text(encoding="utf-8")
    assert "http" not in page.lower() and "<script" not in page and 'src="data:image/png;base64,' in page
    assert page.count("<table>") == 5
    for heading in ("Dice", "HD95 (mm)", "NSD", "Comparisons with the baseline", "Costs", "Notes"):
        assert f"<h2>{heading}</h2>" in page
    assert html.escape(results["verdict"]) in page
    assert "0.806 [" in page and "unet_resenc (baseline)" in page
    images = re.findall(r'src="data:image/png;base64,([^"]*)"', page)
    assert len(images) == 1 and page.count("data:image/png;base64,") == 1
    png = base64.b64decode(html.unescape(images[0]), validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == files.boxplot.read_bytes()

    markdown = files.markdown.read_text(encoding="utf-8")
    assert results["verdict"] in markdown and "](dice.png)" in markdown
    assert all(name in markdown for name in CONTESTANTS)
    assert "https://example.org/notes" in markdown and "Test CPU" in markdown


def test_verdicts_without_scores_to_compare_and_their_report(tmp_path):
    alone = build_results(INFO, CONTESTANTS, BASELINE, _scores({"umamba": DICE["umamba"]}), [])
    mean = alone["scores"]["umamba"]["case_mean"]["dice"]["mean"]
    assert (
        alone["verdict"]
        == f"umamba has the highest mean Dice, {mean:.3f}; the baseline {BASELINE} has no score to test."
    )
    empty = build_results(INFO, CONTESTANTS, BASELINE, [], [])
    assert empty["best"] is None and empty["classes"] == []
    assert empty["verdict"] == "No contestant has a Dice score, so there is nothing to compare."
    for results in (alone, empty):
        files = Paths(*(tmp_path / name for name in ("r.json", "r.csv", "b.png", "r.md", "r.html")))
        write_report(results, files)
        assert files.boxplot.read_bytes().startswith(b"\x89PNG") and results["verdict"] in files.markdown.read_text()
