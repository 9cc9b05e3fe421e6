"""Statistics for comparing segmentation networks scored on the same cases.

- ``bootstrap_mean``: a confidence interval for a network's mean score over cases, by Efron's percentile
  bootstrap (Efron 1979; Efron & Tibshirani 1993): the cases are resampled with replacement many times and
  the interval is read off the quantiles of the resampled means, with no assumption on the scores' shape.
- ``wilcoxon_signed_rank``: whether two networks differ on paired cases, by Wilcoxon's signed-rank test
  (Wilcoxon 1945), which ranks the sizes of the per-case differences and compares the rank sums of the
  positive and negative ones. Its effect size is the matched-pairs rank-biserial correlation (Kerby 2014):
  the share of the rank sum favouring the first network minus the share favouring the second.
- ``holm``: p-values adjusted for testing several comparisons at once by Holm's step-down method
  (Holm 1979), which controls the family-wise error rate and is never less powerful than Bonferroni's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

EXACT_MAX_PAIRS = 50
"""Pairs up to which an untied sample without zero differences gets the exact null distribution (scipy's rule)."""

TIED_EXACT_MAX_PAIRS = 13
"""Pairs up to which a sample with ties or zero differences gets the exact distribution of its own ranks (scipy
enumerates all 2**n sign patterns there)."""


@dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval.

    Attributes:
        mean: Mean of the finite values; None when there are none.
        low: Lower bound of the confidence interval.
        high: Upper bound of the confidence interval.
        n: Number of finite values used.
        confidence: Coverage of the interval, e.g. 0.95.
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float


@dataclass(frozen=True)
class PairedTest:
    """The result of a two-sided paired test.

    Attributes:
        n: Pairs used: pairs with a missing value on either side and zero differences dropped.
        statistic: The smaller of the rank sums R+ and R-.
        p_value: Two-sided p-value.
        effect_size: Matched-pairs rank-biserial correlation (R+ - R-) / (R+ + R-), positive when x tends to
            exceed y.
        mean_difference: Mean of x - y over the pairs with both values (zero differences included).
        median_difference: Median of x - y over the same pairs.
        method: ``"exact"`` or ``"normal"``.
    """

    n: int
    statistic: float | None
    p_value: float | None
    effect_size: float | None
    mean_difference: float | None
    median_difference: float | None
    method: str


def _as_floats(values: Sequence[float | None]) -> np.ndarray:
    """The values as a float array, None as NaN."""
    return np.array([math.nan if value is None else float(value) for value in values], dtype=np.float64)


def bootstrap_mean(
    values: Sequence[float | None], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Interval:
    """Percentile bootstrap confidence interval of the mean over cases.

    Non-finite values (None, NaN, infinities) are dropped first. The remaining n values are resampled with
    replacement ``resamples`` times by ``numpy.random.default_rng(seed).integers(0, n, (resamples, n))``; the
    bounds are the (1 - confidence) / 2 and 1 - (1 - confidence) / 2 quantiles of the resampled means.

    Args:
        values: One score per case.
        confidence: Coverage of the interval, strictly between 0 and 1.
        resamples: Number of bootstrap resamples, at least 1.
        seed: Seed of the random generator.

    Returns:
        The interval; all None when no value is finite, and a point when there is one.

    Raises:
        ValueError: If ``confidence`` or ``resamples`` is out of range.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    array = _as_floats(values)
    array = array[np.isfinite(array)]
    n = int(array.size)
    if n == 0:
        return Interval(None, None, None, 0, confidence)
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1, confidence)
    indices = np.random.default_rng(seed).integers(0, n, (resamples, n))  # (resamples, n)
    means = array[indices].mean(axis=1)  # (resamples,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(mean, float(low), float(high), n, confidence)


def _exact_two_sided(doubled_ranks: np.ndarray, doubled_r_plus: int) -> float:
    """Two-sided p-value of R+ under random signs of the given ranks, counted exactly.

    The ranks come doubled so that average ranks of ties are integers. Each rank is positive or negative with
    probability 1/2; a dynamic programme over the ranks counts the sign patterns giving each value of 2 R+.
    """
    counts = np.zeros(int(doubled_ranks.sum()) + 1, dtype=np.int64)
    counts[0] = 1
    for rank in doubled_ranks.astype(np.int64):
        shifted = np.zeros_like(counts)
        shifted[rank:] = counts[:-rank]
        counts = counts + shifted
    total = 2.0**doubled_ranks.size
    at_most = counts[: doubled_r_plus + 1].sum() / total
    at_least = counts[doubled_r_plus:].sum() / total
    return float(min(1.0, 2.0 * min(at_most, at_least)))


def _normal_two_sided(ranks: np.ndarray, r_plus: float) -> float:
    """Two-sided p-value of R+ by the normal approximation, tie-corrected variance, no continuity correction."""
    n = ranks.size
    _, tie_sizes = np.unique(ranks, return_counts=True)
    variance = (n * (n + 1) * (2 * n + 1) - float(np.sum(tie_sizes**3 - tie_sizes)) / 2.0) / 24.0
    z = (r_plus - n * (n + 1) / 4.0) / math.sqrt(variance)
    return float(min(1.0, 2.0 * special.ndtr(-abs(z))))


def wilcoxon_signed_rank(x: Sequence[float | None], y: Sequence[float | None]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of paired values, ``x[i]`` with ``y[i]``.

    Pairs with a None or NaN on either side are dropped, then zero differences (Wilcoxon's own treatment);
    the sizes of the differences are ranked, ties sharing their average rank. The p-value follows
    ``scipy.stats.wilcoxon(x, y)`` with its defaults (scipy 1.17), where "pairs" counts zero differences too:
    the exact null distribution for at most 50 pairs with neither ties nor zeros; the exact distribution of
    the sample's own (tied) ranks under random signs for at most 13 pairs with ties or zeros; otherwise the
    normal approximation with tie-corrected variance and no continuity correction.

    Args:
        x: First network's score per case.
        y: Second network's score per case, in the same case order.

    Returns:
        The test; statistic, p-value and effect size are None when no nonzero difference is left.

    Raises:
        ValueError: If ``x`` and ``y`` differ in length.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must pair up, but x has {len(x)} values and y has {len(y)}")
    a, b = _as_floats(x), _as_floats(y)
    differences = (a - b)[~(np.isnan(a) | np.isnan(b))]  # (pairs,)
    pairs = int(differences.size)
    nonzero = differences[differences != 0]  # (n,)
    n = int(nonzero.size)
    ranks = stats.rankdata(np.abs(nonzero))  # (n,)
    untied = np.unique(ranks).size == n == pairs  # neither ties nor zero differences
    exact = pairs <= TIED_EXACT_MAX_PAIRS or (untied and pairs <= EXACT_MAX_PAIRS)
    method = "exact" if exact else "normal"
    mean_difference = float(differences.mean()) if pairs else None
    median_difference = float(np.median(differences)) if pairs else None
    if n == 0:
        return PairedTest(0, None, None, None, mean_difference, median_difference, method)
    r_plus = float(ranks[nonzero > 0].sum())
    r_minus = float(ranks[nonzero < 0].sum())
    if method == "exact":
        p_value = _exact_two_sided(np.rint(2.0 * ranks), int(round(2.0 * r_plus)))
    else:
        p_value = _normal_two_sided(ranks, r_plus)
    effect_size = (r_plus - r_minus) / (r_plus + r_minus)
    return PairedTest(n, min(r_plus, r_minus), p_value, effect_size, mean_difference, median_difference, method)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    With the m non-None p-values sorted ascending as p_(0) <= ... <= p_(m-1), the adjusted value of p_(i) is
    the largest of min(1, (m - j) p_(j)) over j <= i. None stays None and does not count in m.

    Args:
        p_values: One p-value per comparison, or None where there is none.

    Returns:
        The adjusted p-values, None where the input is None.

    Raises:
        ValueError: If a p-value is NaN or outside [0, 1].
    """
    for p in p_values:
        if p is not None and not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    present = [i for i, p in enumerate(p_values) if p is not None]
    order = sorted(present, key=lambda i: p_values[i])
    m = len(order)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * float(p_values[i])))
        adjusted[i] = running
    return adjusted
