"""The numbers of a benchmark: per-case scores and measured costs of each contestant, summed up as ``results.json``.

A benchmark trains several networks (the contestants, nnU-Net itself among them as ``"nnunet"`` where it ran) on
the same folds at the same budget and validates every held-out case. ``build_results`` turns the case scores and
the costs into the content of ``results.json`` (``RESULTS_SCHEMA_VERSION``):

    schema_version, benchmark    the schema, and the benchmark's description as the orchestrator gave it
    bootstrap                    ``seed``, ``resamples`` and ``confidence`` of every interval
    baseline, contestants        the network the others are compared with, and every contestant in order
    classes                      the class (or region) names, in the order first seen in the scores
    scores                       per contestant: ``cases`` (how many), ``classes`` (per class) and ``case_mean``,
                                 each metric's percentile-bootstrap interval ``{mean, low, high, n}`` over cases
    costs                        per contestant: ``folds`` (the measured ``RunCosts`` of each fold) and their
                                 ``mean`` over folds, numeric fields only
    comparisons                  per contestant but the baseline: the Wilcoxon signed-rank test of its per-case
                                 mean Dice against the baseline's on the cases both have (``cases``; ``n`` of them
                                 differ, which the test ranks), with Holm's p over all
    best, verdict                the contestant with the highest mean per-case Dice, and one sentence on it
    notes                        what the numbers lack (a contestant with no score or no cost)
    case_scores                  every case score as given, for the CSV and the plots

A case is a (fold, case) pair; its mean over classes (per metric) leaves out the classes whose value is not
defined. Cases are ordered by (fold, case), so the order in which scores arrive changes no number. Undefined and
non-finite values are ``null``, never ``NaN``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from mambaseg.evaluation.statistics import Interval, bootstrap_mean, holm, wilcoxon_signed_rank

RESULTS_SCHEMA_VERSION = 1
METRICS = ("dice", "hd95", "nsd")
CONFIDENCE = 0.95
RESAMPLES = 10_000
ALPHA = 0.05
COST_NUMBERS = (
    "parameters",
    "epochs",
    "samples",
    "samples_per_second",
    "seconds_per_epoch",
    "peak_memory_mb",
    "inference_seconds_per_case",
)

Case = tuple[str, str]  # (fold, case)


@dataclass(frozen=True)
class CaseScore:
    """One class of one validation case of one contestant: a row of ``results.csv``.

    Attributes:
        contestant: a network name, or ``"nnunet"`` for nnU-Net itself.
        fold: the fold that held the case out, e.g. ``"0"``.
        case: the case name.
        label: the class (or region) name, e.g. ``"anterior"``.
        dice: Dice; None where it is not defined (NaN in the evaluation's summary).
        hd95: the 95th percentile Hausdorff distance in mm; None where not defined.
        nsd: the normalised surface Dice; None where not defined.
    """

    contestant: str
    fold: str
    case: str
    label: str
    dice: float | None
    hd95: float | None
    nsd: float | None


@dataclass(frozen=True)
class RunCosts:
    """What one contestant's training on one fold cost, measured in this benchmark on this machine.

    Attributes:
        contestant: the contestant.
        fold: the fold.
        parameters: trainable parameters of the network.
        epochs: epochs trained.
        samples: training samples seen: epochs x iterations x batch.
        samples_per_second: training samples per second of epoch wall time.
        seconds_per_epoch: mean wall time of an epoch.
        peak_memory_mb: peak resident memory of the training process.
        inference_seconds_per_case: mean time to predict one validation case.
        precision: the training precision, e.g. ``"float32"`` or ``"bfloat16 autocast"``.
        patch_size: the training patch.
        batch_size: the training batch.
    """

    contestant: str
    fold: str
    parameters: int | None
    epochs: int
    samples: int
    samples_per_second: float | None
    seconds_per_epoch: float | None
    peak_memory_mb: float | None
    inference_seconds_per_case: float | None
    precision: str
    patch_size: list[int]
    batch_size: int


def finite(value: float | None) -> float | None:
    """``value`` as a float, or None where it is None, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _number(value: float | None) -> float | None:
    """An integer as it is; any other number as ``finite`` makes it."""
    return value if isinstance(value, int) else finite(value)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def case_means(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[Case, float | None]:
    """Per case, the mean of ``metric`` over its classes with a value; cases sorted by (fold, case).

    Args:
        rows: one contestant's case scores, as ``CaseScore`` fields.
        metric: ``"dice"``, ``"hd95"`` or ``"nsd"``.
    """
    per_case: dict[Case, list[float | None]] = {}
    for row in rows:
        per_case.setdefault((row["fold"], row["case"]), []).append(row[metric])
    return {case: _mean(per_case[case]) for case in sorted(per_case)}


def _interval(values: Sequence[float | None], seed: int) -> dict[str, Any]:
    interval: Interval = bootstrap_mean(values, confidence=CONFIDENCE, resamples=RESAMPLES, seed=seed)
    return {"mean": finite(interval.mean), "low": finite(interval.low), "high": finite(interval.high), "n": interval.n}


def _rows(scores: Sequence[CaseScore], contestants: Sequence[str]) -> list[dict[str, Any]]:
    """The scores as plain rows, undefined values as None; raises on an unknown contestant or a repeated row."""
    rows, seen = [], set()
    for score in scores:
        if score.contestant not in contestants:
            raise ValueError(f"case score of {score.contestant!r}, which is not a contestant of {list(contestants)}")
        key = (score.contestant, score.fold, score.case, score.label)
        if key in seen:
            raise ValueError(f"two case scores for contestant, fold, case and class {key}")
        seen.add(key)
        rows.append({**asdict(score), **{metric: finite(getattr(score, metric)) for metric in METRICS}})
    return rows


def _contestant_scores(rows: list[dict[str, Any]], classes: Sequence[str], seed: int) -> dict[str, Any]:
    """One contestant's intervals per class and for the case mean, each metric."""
    per_class = {}
    for label in classes:
        by_case = {(r["fold"], r["case"]): r for r in rows if r["label"] == label}
        per_class[label] = {m: _interval([by_case[c][m] for c in sorted(by_case)], seed) for m in METRICS}
    case_mean = {m: _interval(list(case_means(rows, m).values()), seed) for m in METRICS}
    return {"cases": len(case_means(rows, "dice")), "classes": per_class, "case_mean": case_mean}


def _costs(costs: Sequence[RunCosts], contestant: str) -> dict[str, Any]:
    """One contestant's costs per fold, sorted by fold, and the mean over folds of the numbers."""
    folds: dict[str, dict[str, Any]] = {}
    for run in costs:
        if run.contestant != contestant:
            continue
        if run.fold in folds:
            raise ValueError(f"two cost records for contestant {contestant!r}, fold {run.fold!r}")
        entry = {f.name: getattr(run, f.name) for f in fields(run) if f.name not in ("contestant", "fold")}
        entry.update({name: _number(entry[name]) for name in COST_NUMBERS})
        entry["patch_size"] = [int(s) for s in run.patch_size]
        folds[run.fold] = entry
    folds = {fold: folds[fold] for fold in sorted(folds)}
    mean = {name: _mean(finite(entry[name]) for entry in folds.values()) for name in COST_NUMBERS}
    return {"folds": folds, "mean": mean}


def _comparisons(
    means: Mapping[str, dict[Case, float | None]], contestants: Sequence[str], baseline: str
) -> dict[str, dict[str, Any]]:
    """Each contestant but the baseline against it: Wilcoxon on per-case mean Dice paired by case, Holm over all."""
    reference = means[baseline]
    tests, shared = {}, {}
    for name in contestants:
        if name == baseline:
            continue
        shared[name] = sorted(set(means[name]) & set(reference))
        tests[name] = wilcoxon_signed_rank([means[name][c] for c in shared[name]], [reference[c] for c in shared[name]])
    adjusted = holm([finite(test.p_value) for test in tests.values()])
    comparisons = {}
    for (name, test), p_holm in zip(tests.items(), adjusted, strict=True):
        comparisons[name] = {
            "baseline": baseline,
            "cases": len(shared[name]),
            "n": test.n,
            "statistic": finite(test.statistic),
            "p_value": finite(test.p_value),
            "p_holm": p_holm,
            "effect_size": finite(test.effect_size),
            "mean_difference": finite(test.mean_difference),
            "median_difference": finite(test.median_difference),
            "method": test.method,
            "significant": p_holm is not None and p_holm < ALPHA,
        }
    return comparisons


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict(results: Mapping[str, Any]) -> str:
    """One sentence: the best contestant, its mean Dice against the baseline's, and whether its lead is significant.

    Args:
        results: ``results.json`` content with ``scores``, ``comparisons``, ``baseline`` and ``best``.
    """
    best, baseline = results["best"], results["baseline"]
    if best is None:
        return "No contestant has a Dice score, so there is nothing to compare."
    dice = {name: entry["case_mean"]["dice"]["mean"] for name, entry in results["scores"].items()}
    test = "Wilcoxon signed-rank test on per-case mean Dice, Holm-corrected, α 0.05"
    if best == baseline:
        comparisons = results["comparisons"].items()
        worse = [name for name, c in comparisons if c["significant"] and (c["mean_difference"] or 0.0) < 0.0]
        tail = "no other network is significantly worse"
        if worse:
            tail = f"{_names(worse)} {'is' if len(worse) == 1 else 'are'} significantly worse"
        return f"The baseline {baseline} has the highest mean Dice, {dice[best]:.3f}; {tail} ({test})."
    if dice[baseline] is None:
        return f"{best} has the highest mean Dice, {dice[best]:.3f}; the baseline {baseline} has no score to test."
    comparison = results["comparisons"][best]
    lead = (
        f"{best} has the highest mean Dice, {dice[best]:.3f} against {dice[baseline]:.3f} for the baseline {baseline}"
    )
    if comparison["p_holm"] is None:
        return f"{lead}; they share no case with differing Dice, so whether its lead is significant cannot be tested."
    significance = "significant" if comparison["significant"] else "not significant"
    return (
        f"{lead}; its lead is {significance} (Wilcoxon signed-rank test on per-case mean Dice over {comparison['n']} "
        f"cases, Holm-corrected p = {comparison['p_holm']:.3g}, α 0.05)."
    )


def build_results(
    info: Mapping[str, Any],
    contestants: Sequence[str],
    baseline: str,
    scores: Sequence[CaseScore],
    costs: Sequence[RunCosts],
    seed: int = 0,
) -> dict[str, Any]:
    """The content of ``results.json``: intervals, costs, comparisons with the baseline, the best and a verdict.

    Args:
        info: the benchmark's description (name, dataset, configuration, budget, folds, machine, command, notes),
            kept as ``benchmark``.
        contestants: the contestants, in the order of the report; the baseline among them.
        baseline: the contestant the others are compared with.
        scores: every case score of every contestant, in any order.
        costs: the costs of every contestant's every fold.
        seed: the bootstrap's seed.

    Raises:
        ValueError: the baseline is not a contestant, a score or cost names another contestant, or a contestant's
            (fold, case, class) score or fold cost comes twice.
    """
    contestants = list(dict.fromkeys(contestants))
    if baseline not in contestants:
        raise ValueError(f"baseline {baseline!r} is not one of the contestants {contestants}")
    for run in costs:
        if run.contestant not in contestants:
            raise ValueError(f"costs of {run.contestant!r}, which is not a contestant of {contestants}")
    rows = _rows(scores, contestants)
    classes = list(dict.fromkeys(row["label"] for row in rows))
    own = {name: [row for row in rows if row["contestant"] == name] for name in contestants}
    results: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "benchmark": dict(info),
        "bootstrap": {"seed": seed, "resamples": RESAMPLES, "confidence": CONFIDENCE},
        "baseline": baseline,
        "contestants": contestants,
        "classes": classes,
        "scores": {name: _contestant_scores(own[name], classes, seed) for name in contestants},
        "costs": {name: _costs(costs, name) for name in contestants},
        "comparisons": _comparisons({n: case_means(own[n], "dice") for n in contestants}, contestants, baseline),
    }
    dice = {name: results["scores"][name]["case_mean"]["dice"]["mean"] for name in contestants}
    scored = [name for name in contestants if dice[name] is not None]
    results["best"] = max(scored, key=lambda name: dice[name]) if scored else None
    results["verdict"] = verdict(results)
    results["notes"] = [f"{name} has no case score." for name in contestants if not own[name]] + [
        f"{name} has no measured cost." for name in contestants if not results["costs"][name]["folds"]
    ]
    results["case_scores"] = rows
    return results


def mean_dice_by_case(results: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per contestant, the defined per-case mean Dice values, for the box plot."""
    rows = results["case_scores"]
    return {
        name: [v for v in case_means((r for r in rows if r["contestant"] == name), "dice").values() if v is not None]
        for name in results["contestants"]
    }


def class_dice(results: Mapping[str, Any], label: str) -> dict[str, list[float]]:
    """Per contestant, the defined Dice values of one class over cases."""
    rows = results["case_scores"]
    return {
        name: [r["dice"] for r in rows if r["contestant"] == name and r["label"] == label and r["dice"] is not None]
        for name in results["contestants"]
    }
