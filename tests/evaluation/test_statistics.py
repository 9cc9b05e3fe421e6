import math

import numpy as np
import pytest
from scipy import stats

from mambaseg.evaluation.statistics import Interval, bootstrap_mean, holm, wilcoxon_signed_rank


def test_bootstrap_is_reproducible_with_a_seed():
    values = np.random.default_rng(1).uniform(size=30).tolist()
    first = bootstrap_mean(values, resamples=2_000, seed=7)
    assert first == bootstrap_mean(values, resamples=2_000, seed=7)
    assert first.low < first.mean < first.high


def test_bootstrap_of_constant_values_is_a_point():
    interval = bootstrap_mean([0.8] * 12, resamples=500)
    assert interval.low == interval.mean == interval.high == pytest.approx(0.8)


def test_bootstrap_drops_missing_values():
    interval = bootstrap_mean([0.5, None, math.nan, 0.7, math.inf, 0.9], resamples=500)
    assert interval.n == 3 and interval.mean == pytest.approx(0.7)


def test_bootstrap_edge_counts():
    assert bootstrap_mean([None, math.nan]) == Interval(None, None, None, 0, 0.95)
    assert bootstrap_mean([0.25, None], confidence=0.9) == Interval(0.25, 0.25, 0.25, 1, 0.9)


def test_bootstrap_resamples_as_documented():
    values = np.random.default_rng(2).normal(size=30)
    interval = bootstrap_mean(values.tolist(), confidence=0.9, resamples=3_000, seed=5)
    means = values[np.random.default_rng(5).integers(0, 30, (3_000, 30))].mean(axis=1)
    assert interval.low == pytest.approx(np.quantile(means, 0.05), rel=1e-12)
    assert interval.high == pytest.approx(np.quantile(means, 0.95), rel=1e-12)
    assert interval.mean == pytest.approx(values.mean(), rel=1e-12)


def test_bootstrap_matches_the_normal_interval_of_a_proportion():
    # Mean 0.5 of 100 Bernoulli values: standard error sqrt(0.25 / 100) = 0.05, so about 0.5 +- 0.098.
    interval = bootstrap_mean([0.0] * 50 + [1.0] * 50, resamples=4_000)
    assert interval.low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.02)
    assert interval.high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.02)


@pytest.mark.parametrize("confidence, resamples", [(0.0, 100), (1.0, 100), (0.95, 0)])
def test_bootstrap_rejects_bad_settings(confidence, resamples):
    with pytest.raises(ValueError, match=str(resamples if resamples == 0 else confidence)):
        bootstrap_mean([0.1, 0.2], confidence=confidence, resamples=resamples)


def _assert_matches_scipy(x, y, method):
    result = wilcoxon_signed_rank(x, y)
    reference = stats.wilcoxon(x, y)
    assert result.method == method
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    return result


def test_wilcoxon_by_hand():
    # Differences 1, 2, 3, 4, 5, -6: ranks 1..6, R+ = 15, R- = 6, statistic 6. Under random signs R- is the sum of
    # a subset of {1..6}, each of the 2**6 = 64 subsets equally likely. Subsets with sum <= 6: {} (0); {1}; {2};
    # {3}, {1,2}; {4}, {1,3}; {5}, {1,4}, {2,3}; {6}, {1,5}, {2,4}, {1,2,3} -> 1+1+1+2+2+3+4 = 14.
    # Two-sided p = 2 * 14 / 64 = 0.4375; effect size (15 - 6) / 21 = 3 / 7.
    y = [0.5] * 6
    x = [1.5, 2.5, 3.5, 4.5, 5.5, -5.5]
    result = wilcoxon_signed_rank(x, y)
    assert result.n == 6 and result.method == "exact"
    assert result.statistic == 6.0
    assert result.p_value == pytest.approx(0.4375)
    assert result.effect_size == pytest.approx(3 / 7)
    assert result.mean_difference == pytest.approx(9 / 6)
    assert result.median_difference == pytest.approx(2.5)  # median of -6, 1, 2, 3, 4, 5
    assert wilcoxon_signed_rank(y, x).effect_size == pytest.approx(-3 / 7)


def test_wilcoxon_exact_without_ties():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=8), rng.normal(size=8)
    _assert_matches_scipy(x.tolist(), y.tolist(), "exact")
    x, y = rng.normal(0.4, 1.0, size=40), rng.normal(size=40)
    _assert_matches_scipy(x.tolist(), y.tolist(), "exact")


def test_wilcoxon_with_ties_uses_the_normal_approximation():
    rng = np.random.default_rng(4)
    y = rng.uniform(size=25)
    x = y + rng.choice([-0.3, -0.1, 0.1, 0.2, 0.3, 0.4], size=25)
    _assert_matches_scipy(x.tolist(), y.tolist(), "normal")


def test_wilcoxon_with_ties_in_a_small_sample_is_exact():
    x = [3.0, 5.0, 2.0, 4.0, 6.0, 1.0, 7.0, 3.0, 2.0, 5.0]
    y = [1.0, 4.0, 3.0, 2.0, 4.0, 1.0, 4.0, 2.0, 2.0, 6.0]  # differences with ties and two zeros
    result = _assert_matches_scipy(x, y, "exact")
    assert result.n == 8


def test_wilcoxon_with_zero_differences():
    rng = np.random.default_rng(5)
    y = rng.uniform(size=30)
    x = y + rng.normal(0.1, 0.2, size=30)
    x[:4] = y[:4]
    result = _assert_matches_scipy(x.tolist(), y.tolist(), "normal")
    assert result.n == 26
    assert result.mean_difference == pytest.approx(float(np.mean(x - y)))


def test_wilcoxon_large_sample_without_ties():
    rng = np.random.default_rng(6)
    x, y = rng.normal(0.3, 1.0, size=60), rng.normal(size=60)
    _assert_matches_scipy(x.tolist(), y.tolist(), "normal")


def test_wilcoxon_drops_missing_pairs():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=12).tolist(), rng.normal(size=12).tolist()
    x[2], y[5], x[9] = None, math.nan, None
    kept = [i for i in range(12) if i not in (2, 5, 9)]
    result = wilcoxon_signed_rank(x, y)
    reference = stats.wilcoxon([x[i] for i in kept], [y[i] for i in kept])
    assert result.n == 9
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)


def test_wilcoxon_without_nonzero_differences():
    result = wilcoxon_signed_rank([0.5, 0.7, None], [0.5, 0.7, 0.1])
    assert result.n == 0 and result.statistic is None and result.p_value is None and result.effect_size is None
    assert result.mean_difference == 0.0 and result.median_difference == 0.0
    empty = wilcoxon_signed_rank([], [])
    assert empty.mean_difference is None and empty.median_difference is None


def test_wilcoxon_rejects_different_lengths():
    with pytest.raises(ValueError, match="3 values and y has 2"):
        wilcoxon_signed_rank([0.1, 0.2, 0.3], [0.1, 0.2])


def test_holm_by_hand():
    # m = 3; ascending 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06.
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])


def test_holm_is_monotone_and_capped():
    p_values = np.random.default_rng(8).uniform(0.0, 0.5, size=15).tolist()
    adjusted = holm(p_values)
    pairs = sorted(zip(p_values, adjusted, strict=True))
    assert all(low[1] <= high[1] for low, high in zip(pairs, pairs[1:], strict=False))
    assert all(raw <= fixed <= 1.0 for raw, fixed in pairs)
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == []


def test_holm_rejects_values_outside_the_unit_interval():
    with pytest.raises(ValueError, match="1.5"):
        holm([0.2, 1.5])
