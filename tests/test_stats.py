"""Unit tests of decide.stats: Wilson and normal intervals, the sign test, quantile bounds, known values."""

from __future__ import annotations

import math

import polars as pl
import pytest

from raypipe.decide.stats import Z_95, interval_exprs, quantile_bounds, sign_test_p, wilson_interval, z_for


def test_wilson_interval_matches_the_published_value():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    # With no successes the upper bound has the closed form z^2 / (n + z^2).
    assert low == 0.0 and high == pytest.approx(Z_95**2 / (20 + Z_95**2))


def test_wilson_interval_takes_a_fractional_sum_of_scores():
    low, high = wilson_interval(7.5, 10)
    assert (round(low, 4), round(high, 4)) == (0.4422, 0.9191)


def test_wilson_interval_rejects_more_successes_than_trials():
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match=r"got successes=1, n=-1"):
        wilson_interval(1, -1)


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame({"passed": [1.0, 0.0, 1.0, 1.0, None], "value": [1.0, 2.0, 3.0, 4.0, None]})


def _bounds(frame: pl.DataFrame, column: str, method: str) -> tuple[float | None, float | None]:
    low, high = interval_exprs(column, method)
    return frame.select(low.alias("low"), high.alias("high")).row(0)


def test_interval_exprs_wilson_agrees_with_wilson_interval_and_skips_nulls(frame):
    low, high = _bounds(frame, "passed", "wilson")
    assert (low, high) == pytest.approx(wilson_interval(3, 4))
    assert (round(low, 4), round(high, 4)) == (0.3006, 0.9544)


def test_interval_exprs_normal_is_the_mean_plus_minus_z_standard_errors(frame):
    # mean 2.5, sample standard deviation sqrt(5/3), 4 values
    half = Z_95 * math.sqrt(5 / 3) / 2
    assert _bounds(frame, "value", "normal") == pytest.approx((2.5 - half, 2.5 + half))
    assert round(half, 4) == 1.2652


def test_interval_exprs_none_gives_null_bounds(frame):
    assert _bounds(frame, "value", "none") == (None, None)


def test_sign_test_p_is_the_exact_one_sided_binomial_tail():
    assert sign_test_p(5, 0) == 1 / 32
    assert sign_test_p(3, 1) == 5 / 16  # (C(4,3) + C(4,4)) / 2^4
    assert sign_test_p(0, 3) == 1.0
    assert sign_test_p(0, 0) == 1.0


def test_quantile_bounds_are_order_statistics_around_the_quantile():
    assert quantile_bounds(list(range(1, 1001))) == (936, 965)
    assert quantile_bounds(list(range(1, 11))) == (8, math.inf)  # too few values for an upper bound
    assert quantile_bounds([]) == (0.0, math.inf)


@pytest.mark.parametrize("n", [50, 200, 1000])
def test_quantile_bounds_cover_the_p95_with_at_least_95_percent_chance(n):
    # With values 1..n a bound's value is its rank. The true p95 lies between order statistics j and k
    # exactly when j <= B < k, where B ~ Binomial(n, 0.95) counts the values at or below it.
    low, high = quantile_bounds([float(rank) for rank in range(1, n + 1)])
    high_rank = n + 1 if math.isinf(high) else int(high)
    coverage = sum(math.comb(n, i) * 0.95**i * 0.05 ** (n - i) for i in range(int(low), high_rank))
    assert coverage >= 0.95, (n, low, high, coverage)


def test_z_for_gives_the_normal_quantiles():
    assert z_for(0.05) == pytest.approx(Z_95)
    assert z_for(0.05, two_sided=False) == pytest.approx(1.6449, abs=1e-4)
