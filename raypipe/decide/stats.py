"""Confidence intervals and tests that rankings, slices and searches share: one owner for each formula."""

from __future__ import annotations

import math

import polars as pl

Z_95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion; `successes` may be fractional (a sum of scores in [0, 1])."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, min(centre - half_width, p)), min(1.0, max(centre + half_width, p)))


def wilson_expr(successes: pl.Expr, n: pl.Expr, z: float = Z_95) -> tuple[pl.Expr, pl.Expr]:
    """The Wilson score interval as Polars expressions (same formula as `wilson_interval`)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * ((p * (1 - p) / n + z * z / (4 * n * n)).sqrt())
    # the interval holds p exactly; rounding at p = 0 or 1 must not put it a hair outside
    return pl.min_horizontal(centre - half, p).clip(0, 1), pl.max_horizontal(centre + half, p).clip(0, 1)


def normal_expr(column: str, z: float = Z_95) -> tuple[pl.Expr, pl.Expr]:
    """Mean +- z standard errors of a column, for unbounded per-item values."""
    values = pl.col(column)  # mean, std and count leave nulls out
    half = z * values.std() / values.count().sqrt()
    return values.mean() - half, values.mean() + half


def interval_exprs(column: str, method: str, z: float = Z_95) -> tuple[pl.Expr, pl.Expr]:
    """The interval of a column's mean by a catalogue's method: wilson, normal or none."""
    values = pl.col(column).cast(pl.Float64)  # sum and count leave nulls out; drop_nulls would not stream
    if method == "wilson":
        return wilson_expr(values.sum(), values.count(), z)
    if method == "normal":
        return normal_expr(column, z)
    return pl.lit(None, pl.Float64), pl.lit(None, pl.Float64)


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: the chance of at least `wins` heads in `wins + losses` fair coin flips."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0


def quantile_bounds(sorted_values: list[float], q: float = 0.95, z: float = Z_95) -> tuple[float, float]:
    """Distribution-free confidence bounds of a quantile from order statistics (normal approximation of
    the binomial count below it); (0, inf) when there are too few values to bound it."""
    n = len(sorted_values)
    if n == 0:
        return 0.0, math.inf
    spread = z * math.sqrt(n * q * (1 - q))
    low_rank, high_rank = math.floor(n * q - spread), math.ceil(n * q + spread) + 1
    low = sorted_values[low_rank - 1] if low_rank >= 1 else 0.0
    high = sorted_values[high_rank - 1] if high_rank <= n else math.inf
    return low, high


def z_for(alpha: float, two_sided: bool = True) -> float:
    """The standard normal quantile for level `alpha`."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - (alpha / 2 if two_sided else alpha))
