"""Recommend a configuration for the user's own production mix: per-slice results reweighted to the mix.

A mix gives each bin of one slice attribute a share (`profile=rotated:0.3`). Each configuration's
expected objective under the mix is the mix-weighted mean of its per-bin means (a stratified estimate),
with an interval from the per-bin variances; its p95 is the weighted quantile of its items' service
times; its SLA is checked on those reweighted figures. The best SLA-meeting configuration and those a
paired, mix-weighted test cannot tell below it (one-sided, 5 %) form the tied group, and the fastest of
that group is recommended. Bins the mix leaves out share what it leaves over, in the run's proportions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from raypipe.errors import RaypipeError
from raypipe.results import by_speed, rank, with_sla
from raypipe.slices import bin_column, bin_labels
from raypipe.spec import SLASpec
from raypipe.stats import Z_95, z_for
from raypipe.task import Metric, Task

TIE_ALPHA = 0.05


@dataclass
class Recommendation:
    """The reweighted ranking for one mix and what it recommends."""

    attribute: str | None
    mix: dict[str, float]
    ranking: pl.DataFrame
    recommended: str | None
    tied: list[str] = field(default_factory=list)
    note: str | None = None


def parse_mix(entries: list[str]) -> tuple[str | None, dict[str, float]]:
    """`ATTR=BIN:WEIGHT` entries (one attribute) as (attribute, {bin: weight})."""
    attribute, weights = None, {}
    for entry in entries:
        name, sep, rest = entry.partition("=")
        label, colon, weight = rest.rpartition(":")
        if not sep or not colon or not label:
            raise RaypipeError(f"--mix '{entry}': write it as ATTRIBUTE=BIN:WEIGHT, e.g. profile=rotated:0.3")
        if attribute is not None and name != attribute:
            raise RaypipeError(f"--mix: one attribute at a time (got '{attribute}' and '{name}')")
        try:
            weights[label] = float(weight)
        except ValueError as exc:
            raise RaypipeError(f"--mix '{entry}': the weight '{weight}' is not a number") from exc
        attribute = name
    return attribute, weights


def resolve_bins(weights: dict[str, float], known: list[str], edges: list[float] | None) -> dict[str, float]:
    """Map each named bin to a bin label of the run; a number names the continuous bin that holds it."""
    resolved: dict[str, float] = {}
    for label, weight in weights.items():
        if label not in known and edges is not None:
            label = _bin_of_value(label, edges, known)
        if label not in known:
            raise RaypipeError(f"--mix: no bin '{label}' in this run (bins: {', '.join(known)})")
        if weight < 0:
            raise RaypipeError(f"--mix: weight of '{label}' is negative")
        resolved[label] = resolved.get(label, 0.0) + weight
    return resolved


def _bin_of_value(text: str, edges: list[float], known: list[str]) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    if value == 0 and "= 0" in known:
        return "= 0"
    labels = bin_labels(edges)
    return labels[sum(value > e for e in edges)]


def mix_weights(items: pl.DataFrame, attribute: str, given: dict[str, float]) -> dict[str, float]:
    """The full mix: the given shares, and what they leave over spread over the other bins as in the run."""
    shares = items.unique("item_id").group_by(bin_column(attribute)).len().drop_nulls()
    own = {r[bin_column(attribute)]: r["len"] / shares["len"].sum() for r in shares.iter_rows(named=True)}
    total = sum(given.values())
    if total > 1 + 1e-9:
        raise RaypipeError(f"--mix: the weights add up to {total:g}, more than 1")
    rest = [b for b in own if b not in given]
    left = 1.0 - total
    if left > 1e-9 and not rest:
        return {b: w / total for b, w in given.items()}
    rest_share = sum(own[b] for b in rest)
    return given | {b: left * own[b] / rest_share for b in rest}


def own_mix(items: pl.DataFrame, attribute: str) -> dict[str, float]:
    return mix_weights(items, attribute, {})


def _variance(values: np.ndarray, metric: Metric) -> float:
    if metric.interval == "wilson":  # Agresti-Coull: a bounded score never gets a zero-width interval
        p = (values.sum() + 2) / (len(values) + 4)
        return float(p * (1 - p))
    return float(values.var(ddof=1)) if len(values) > 1 else math.inf


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])


def expected(items: pl.DataFrame, attribute: str, mix: dict[str, float], metric: Metric) -> dict[str, tuple]:
    """Per configuration: (expected value, standard error, p95 under the mix), or None when a bin with weight
    has no items of that configuration."""
    out: dict[str, tuple] = {}
    for (config_id,), frame in items.group_by("config_id"):
        total, var, weights, latencies, ok = 0.0, 0.0, [], [], True
        for label, w in mix.items():
            cell = frame.filter(pl.col(bin_column(attribute)) == label)
            values = cell[metric.name].drop_nulls().cast(pl.Float64).to_numpy()
            if w > 0 and len(values) == 0:
                ok = False
                break
            if w > 0:
                total += w * float(values.mean())
                var += w * w * _variance(values, metric) / len(values)
                latencies.append(cell["latency_total_ms"].to_numpy())
                weights.append(np.full(cell.height, w / cell.height))
        if ok:
            p95 = _weighted_quantile(np.concatenate(latencies), np.concatenate(weights), 0.95)
            out[config_id] = (total, math.sqrt(var), p95)
    return out


def tied_under_mix(
    items: pl.DataFrame, attribute: str, mix: dict[str, float], best: str, other: str, metric: Metric
) -> bool:
    """A one-sided, mix-weighted paired z-test cannot tell `other` below `best` at 5 %."""
    sign = 1.0 if metric.higher_is_better else -1.0
    pair = items.filter(pl.col("config_id").is_in([best, other])).select(
        "item_id", "config_id", bin_column(attribute), pl.col(metric.name).cast(pl.Float64)
    )
    wide = pair.pivot(
        on="config_id", index=["item_id", bin_column(attribute)], values=metric.name
    ).drop_nulls()
    diff, var = 0.0, 0.0
    for label, w in mix.items():
        cell = wide.filter(pl.col(bin_column(attribute)) == label)
        if w == 0 or cell.is_empty():
            continue
        d = ((cell[best] - cell[other]) * sign).to_numpy()
        diff += w * float(d.mean())
        var += w * w * (float(d.var(ddof=1)) if len(d) > 1 else 0.0) / len(d)
    if var == 0:
        return diff <= 0
    return diff / math.sqrt(var) < z_for(TIE_ALPHA, two_sided=False)


def reweighted_rows(
    items: pl.DataFrame, task: Task, objective: Metric, sla: SLASpec, attribute: str, mix: dict[str, float]
) -> pl.DataFrame:
    """Per configuration: expected objective under the mix with its interval, p95, and the SLA on them."""
    figures = expected(items, attribute, mix, objective)
    bounds = {m: expected(items, attribute, mix, task.metric(m)) for m, _, _ in sla.bounds()}
    rows = []
    for config_id, (value, se, p95) in figures.items():
        ok = sla.p95_latency_ms is None or p95 <= sla.p95_latency_ms
        for metric, side, bound in sla.bounds():
            got = bounds[metric].get(config_id, (None,))[0]
            ok = ok and got is not None and (got >= bound if side == "min" else got <= bound)
        low, high = value - Z_95 * se, value + Z_95 * se
        if objective.interval == "wilson":
            low, high = max(0.0, low), min(1.0, high)
        rows.append(
            {
                "config_id": config_id,
                "expected": value,
                "ci_low": low,
                "ci_high": high,
                "p95_ms": p95,
                "sla_pass": ok,
            }
        )
    schema = {"config_id": pl.String, "expected": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "p95_ms": pl.Float64, "sla_pass": pl.Boolean}  # fmt: skip
    return pl.DataFrame(rows, schema=schema).sort(
        ["sla_pass", "expected", "p95_ms"], descending=[True, objective.higher_is_better, False]
    )


def recommend(
    items: pl.DataFrame,
    configs: pl.DataFrame,
    task: Task,
    objective: Metric,
    sla: SLASpec,
    attribute: str | None,
    mix: dict[str, float],
    stage_names: list[str],
) -> Recommendation:
    """The reweighted ranking of the configurations no search dropped, and the recommended one."""
    if "dropped_after_items" in configs.columns:
        configs = configs.filter(pl.col("dropped_after_items").is_null())
    items = items.filter(pl.col("config_id").is_in(configs["config_id"].implode()))
    if attribute is None:
        return _own_data(configs, items, objective, sla, stage_names)
    ranking = reweighted_rows(items, task, objective, sla, attribute, mix)
    passing = ranking.filter(pl.col("sla_pass"))
    if passing.is_empty():
        ranking = ranking.with_columns(pl.lit(False).alias("tied"))
        note = "no configuration meets the SLA under this mix"
        return Recommendation(attribute, mix, ranking, None, note=note)
    best = passing["config_id"][0]
    tied = [c for c in passing["config_id"][1:] if tied_under_mix(items, attribute, mix, best, c, objective)]
    ranking = ranking.with_columns(pl.col("config_id").is_in([best, *tied]).alias("tied"))
    head = by_speed(ranking.filter(pl.col("tied")), objective, p95="p95_ms", value="expected")
    ranking = pl.concat([head, ranking.filter(~pl.col("tied"))])
    ranking = ranking.join(configs.select("config_id", *stage_names), on="config_id", how="left")
    chosen = head["config_id"][0]
    return Recommendation(attribute, mix, ranking, chosen, sorted({best, *tied} - {chosen}))


def _own_data(
    configs: pl.DataFrame, items: pl.DataFrame, objective: Metric, sla: SLASpec, stage_names: list[str]
) -> Recommendation:
    """For the run's own data the run's ranking is the answer: the same figures, tied test and order, with
    the SLA given (which may differ from the run's)."""
    frame = with_sla(configs.drop("sla_miss", "sla_pass", "tied", "rank", strict=False), sla)
    ranking = rank(frame, items, objective).select(
        "config_id",
        pl.col("objective").alias("expected"),
        pl.col("objective_ci_low").alias("ci_low"),
        pl.col("objective_ci_high").alias("ci_high"),
        pl.col("latency_p95_ms").alias("p95_ms"),
        "sla_pass",
        "tied",
        *stage_names,
    )
    if not ranking["sla_pass"].any():
        note = "no configuration meets the SLA on the run's data"
        return Recommendation(None, {}, ranking, None, note=note)
    chosen = ranking["config_id"][0]
    tied = ranking.filter(pl.col("tied"))["config_id"].to_list()
    return Recommendation(None, {}, ranking, chosen, sorted(set(tied) - {chosen}))
