"""The deployed configuration's objective on an unlabelled batch: estimated, never measured, with intervals.

Two estimators, each with a 95 % interval:

- mix-reweighted: the reference's per-slice means of the objective, weighted by the batch's estimated slice
  mix. It is right when the batch differs from the reference only in its mix.
- score-calibrated: each batch item's label-free score (the assertion score, the classifier's confidence)
  mapped to the reference's mean objective among items with that score (or score decile). It also sees
  changes inside a slice, as far as the score follows the objective.

What an interval covers is the batch's own mean objective, the number a labelled check of that batch would
measure, so each variance has two parts: the reference's error in what it maps the batch to (per-slice or
per-score means, and for the mix its estimate's covariance, delta method), and the batch items' own spread
around those means, which a small batch does not average away (sum over bins of share x variance / n).
Without the second part a 95 % interval held a batch of 20's objective 56 % of the time (digits, a
reference of 1,000; MONITORING.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from raypipe.decide.stats import Z_95
from raypipe.monitor.mix import MixEstimate
from raypipe.spec.task import Metric

SCORE_BINS = 10
SMOOTHING = 2.0  # pseudo-items at the overall mean in each score bin: a bin of 3 items cannot claim 0 or 1


@dataclass(frozen=True)
class Estimate:
    """An estimate of the objective's mean with its 95 % interval."""

    method: str
    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, object]:
        """As JSON holds it: an estimate that could not be made has nulls, not NaN."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def _interval(method: str, value: float, variance: float, metric: Metric) -> Estimate:
    half = Z_95 * math.sqrt(max(variance, 0.0))
    low, high = value - half, value + half
    if metric.interval == "wilson":
        low, high = max(0.0, low), min(1.0, high)
    return Estimate(method, value, low, high)


def slice_means(outputs: pl.DataFrame, bin_column: str, metric: Metric) -> pl.DataFrame:
    """Per bin: n, the mean of `metric` and its variance of the mean (Agresti-Coull for bounded scores)."""
    values = pl.col(metric.name).cast(pl.Float64)
    frame = outputs.filter(pl.col(bin_column).is_not_null() & values.is_not_null())
    grouped = frame.group_by(bin_column).agg(
        pl.len().alias("n"), values.mean().alias("mean"), values.var(ddof=1).fill_null(0.0).alias("var")
    )
    if metric.interval == "wilson":
        p = (pl.col("mean") * pl.col("n") + 2) / (pl.col("n") + 4)
        grouped = grouped.with_columns((p * (1 - p)).alias("var"))
    return grouped.with_columns((pl.col("var") / pl.col("n")).alias("var_of_mean")).rename(
        {bin_column: "bin"}
    )


def mix_reweighted(per_slice: pl.DataFrame, mix: MixEstimate, metric: Metric) -> Estimate:
    """Sum over bins of share x mean; bins the reference never saw with this configuration count at the
    reference's overall mean (there is nothing better to say about them)."""
    known = {r["bin"]: r for r in per_slice.iter_rows(named=True)}
    overall = float((per_slice["mean"] * per_slice["n"]).sum() / per_slice["n"].sum())
    means = np.array([known[b]["mean"] if b in known else overall for b in mix.labels])
    var_means = np.array([known[b]["var_of_mean"] if b in known else 0.25 for b in mix.labels])
    spreads = np.array([known[b]["var"] if b in known else 0.25 for b in mix.labels])
    value = float(mix.shares @ means)
    reference_error = float(mix.shares**2 @ var_means + means @ mix.covariance @ means)
    variance = reference_error + float(mix.shares @ spreads) / mix.items
    return _interval("mix-reweighted", value, variance, metric)


def score_calibrated(
    reference: pl.DataFrame, batch_scores: np.ndarray, score: str, metric: Metric
) -> Estimate:
    """The mean, over batch items, of the reference's objective among items with the same score bin."""
    frame = reference.select(
        pl.col(score).cast(pl.Float64), pl.col(metric.name).cast(pl.Float64)
    ).drop_nulls()
    scores, truth = frame[score].to_numpy(), frame[metric.name].to_numpy()
    batch_scores = batch_scores[~np.isnan(batch_scores)]
    if len(scores) == 0 or len(batch_scores) == 0:
        return Estimate("score-calibrated", math.nan, math.nan, math.nan)
    edges = _score_edges(scores)
    overall = float(truth.mean())
    reference_bins, batch_bins = np.digitize(scores, edges), np.digitize(batch_scores, edges)
    spread = max(float(np.var(truth)), 1e-4)
    means, spreads, counts = (np.zeros(len(edges) + 1) for _ in range(3))
    for b in range(len(edges) + 1):
        cell = truth[reference_bins == b]
        counts[b] = len(cell)
        means[b] = (cell.sum() + SMOOTHING * overall) / (len(cell) + SMOOTHING)
        # the bin's spread of the objective, shrunk like its mean towards the whole reference's
        spreads[b] = (np.sum((cell - means[b]) ** 2) + SMOOTHING * spread) / (len(cell) + SMOOTHING)
    weights = np.bincount(batch_bins, minlength=len(edges) + 1) / len(batch_bins)
    reference_error = float(weights**2 @ (spreads / (counts + SMOOTHING)))
    variance = reference_error + float(weights @ spreads) / len(batch_bins)
    return _interval("score-calibrated", float(weights @ means), variance, metric)


def _score_edges(scores: np.ndarray) -> np.ndarray:
    """Bin edges: between the distinct values where there are few, else at the reference's deciles."""
    distinct = np.unique(scores)
    if len(distinct) <= SCORE_BINS:
        return (distinct[:-1] + distinct[1:]) / 2
    return np.unique(np.quantile(scores, np.linspace(0, 1, SCORE_BINS + 1)[1:-1]))


def observed(outputs: pl.DataFrame, metric: Metric) -> Estimate | None:
    """The objective measured on the batch where it carries truth (a labelled check tests the estimates)."""
    values = (
        outputs[metric.name].cast(pl.Float64).drop_nulls().to_numpy()
        if metric.name in outputs.columns
        else []
    )
    if len(values) == 0:
        return None
    variance = float(np.var(values, ddof=1)) / len(values) if len(values) > 1 else 0.0
    return _interval("observed", float(values.mean()), variance, metric)
