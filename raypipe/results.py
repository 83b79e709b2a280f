"""Run results with Polars: items assembled from the streamed parts, and per-configuration aggregates over the
task's metric catalogue (intervals, service-time percentiles, SLA, Pareto front, ranking with ties)."""

from __future__ import annotations

from typing import Any

import polars as pl

from raypipe import stats
from raypipe.space import Configuration
from raypipe.spec import SLASpec
from raypipe.task import Metric, Task

WORK_KINDS = ("calls", "reused", "cached", "busy_ms", "cpu_ms")
TIE_ALPHA = 0.05
SAME_P95 = 0.02  # p95s this close (relative) are not told apart when ordering the tied group


def work_columns(stage_names: list[str] | tuple[str, ...]) -> list[str]:
    return [f"_{what}_{name}" for what in WORK_KINDS for name in stage_names]


def work_counts(
    rows: pl.LazyFrame | pl.DataFrame, stage_names: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Per stage, summed over items: calls made, calls saved by identical-input reuse, cache hits, and
    engine-seconds spent in wall time (under contention) and in CPU time (cache hits cost none)."""
    present = set(rows.collect_schema().names())
    wanted = [c for c in work_columns(stage_names) if c in present]
    sums = (
        rows.lazy().select(pl.col(c).fill_null(0).sum() for c in wanted).collect().row(0, named=True)
        if wanted
        else {}
    )

    def total(column: str) -> float:
        return float(sums.get(column) or 0.0)

    return {
        name: {
            "calls": int(total(f"_calls_{name}")),
            "saved_by_reuse": int(total(f"_reused_{name}")),
            "cache_hits": int(total(f"_cached_{name}")),
            "engine_seconds": round(total(f"_busy_ms_{name}") / 1000.0, 3),
            "cpu_seconds": round(total(f"_cpu_ms_{name}") / 1000.0, 3),
        }
        for name in stage_names
    }


def complete_items(rows: pl.DataFrame, n_configs: int) -> set[str]:
    """Items that already have a row for every configuration (a resumed run skips them)."""
    counts = rows.group_by("item_id").agg(pl.col("config_index").n_unique().alias("n"))
    return set(counts.filter(pl.col("n") == n_configs)["item_id"].to_list())


def configs_frame(configs: list[Configuration]) -> pl.DataFrame:
    """config_index -> config_id and one column per stage holding its choice label."""
    data: dict[str, list] = {
        "config_index": list(range(len(configs))),
        "config_id": [c.config_id for c in configs],
    }
    for k, name in enumerate(configs[0].stage_names):
        data[name] = [c.labels[k] for c in configs]
    return pl.DataFrame(data)


def assemble_items(
    rows: pl.LazyFrame | pl.DataFrame, configs: list[Configuration], attributes: pl.DataFrame
) -> pl.LazyFrame:
    """Result rows, one per (item, configuration) (a resumed run's repeated rows dropped), joined with their
    configuration's choices and the item's attributes; lazy, so a large run is never held in memory."""
    names = rows.collect_schema().names()
    frame = rows.lazy().drop([c for c in names if c.startswith("_")])
    frame = frame.unique(subset=["item_id", "config_index"], keep="last")
    frame = frame.join(configs_frame(configs).lazy(), on="config_index", how="left")
    frame = frame.join(attributes.lazy(), on="item_id", how="left")
    first = ["config_id", *configs[0].stage_names, "item_id"]
    rest = [c for c in frame.collect_schema().names() if c not in first]
    return frame.select([*first, *rest])


def metric_aggregates(metrics: tuple[Metric, ...] | list[Metric]) -> list[pl.Expr]:
    """Mean and interval of every catalogue metric."""
    exprs = []
    for m in metrics:
        low, high = stats.interval_exprs(m.name, m.interval)
        exprs += [
            pl.col(m.name).cast(pl.Float64).mean().alias(m.name),
            low.alias(f"{m.name}_ci_low"),
            high.alias(f"{m.name}_ci_high"),
        ]
    return exprs


def latency_aggregates(stage_names: list[str]) -> list[pl.Expr]:
    """Service-time percentiles (failed items count what they spent), busy (under load) percentiles."""
    total, busy = pl.col("latency_total_ms"), pl.col("busy_total_ms")
    return [
        total.quantile(0.50, "linear").alias("latency_p50_ms"),
        total.quantile(0.95, "linear").alias("latency_p95_ms"),
        total.quantile(0.99, "linear").alias("latency_p99_ms"),
        total.mean().alias("latency_mean_ms"),
        (1000.0 / total.mean()).alias("throughput_items_per_s"),
        *[pl.col(f"latency_{s}_ms").median().alias(f"latency_{s}_p50_ms") for s in stage_names],
        busy.quantile(0.50, "linear").alias("busy_p50_ms"),
        busy.quantile(0.95, "linear").alias("busy_p95_ms"),
        busy.quantile(0.99, "linear").alias("busy_p99_ms"),
    ]


def aggregate_configs(
    items: pl.LazyFrame | pl.DataFrame, stage_names: list[str], task: Task, objective: Metric, sla: SLASpec
) -> pl.DataFrame:
    """configs.parquet: every metric with its interval, the objective, latency percentiles, SLA, Pareto,
    ranked with the tied group of the best first and ordered by p95."""
    columns = set(items.collect_schema().names())
    present = [m for m in task.metrics if m.name in columns]
    frame = (
        items.lazy()
        .group_by(["config_id", *stage_names])
        .agg(
            pl.len().alias("n_items"),
            pl.col("error").is_not_null().sum().alias("n_errors"),
            *metric_aggregates(present),
            *latency_aggregates(stage_names),
        )
        .collect(engine="streaming")
    )
    frame = frame.with_columns(
        pl.col(objective.name).alias("objective"),
        pl.col(f"{objective.name}_ci_low").alias("objective_ci_low"),
        pl.col(f"{objective.name}_ci_high").alias("objective_ci_high"),
    )
    frame = with_sla(frame, sla)
    return rank(with_pareto(frame, objective), items, objective)


def sla_failures(row: dict[str, Any], sla: SLASpec) -> list[str]:
    """Why a configuration misses the SLA (empty when it meets it), on point estimates."""
    reasons = []
    p95 = row.get("latency_p95_ms")
    if sla.p95_latency_ms is not None and (p95 is None or p95 > sla.p95_latency_ms):
        reasons.append(f"p95 {p95 or float('nan'):.0f} ms > {sla.p95_latency_ms:g}")
    for metric, side, bound in sla.bounds():
        value = row.get(metric)
        if value is None or (value < bound if side == "min" else value > bound):
            shown = value if value is None else round(value, 3)
            reasons.append(f"{metric} {shown} {'<' if side == 'min' else '>'} {bound:g}")
    return reasons


def with_sla(frame: pl.DataFrame, sla: SLASpec) -> pl.DataFrame:
    reasons = [("; ".join(sla_failures(r, sla)) or None) for r in frame.iter_rows(named=True)]
    return frame.with_columns(
        pl.Series("sla_miss", reasons, dtype=pl.String), pl.Series("sla_pass", [r is None for r in reasons])
    )


def with_pareto(frame: pl.DataFrame, objective: Metric) -> pl.DataFrame:
    """Flag configurations that no other beats on both the objective and p95 service time."""
    sign = 1.0 if objective.higher_is_better else -1.0
    keys = frame.select(
        "config_id",
        score=(pl.col("objective") * sign).fill_null(float("-inf")),
        p95=pl.col("latency_p95_ms").fill_null(float("inf")),
    )
    pairs = keys.join(keys, how="cross", suffix="_o")
    dominated = (
        pairs.filter(
            (pl.col("score_o") >= pl.col("score"))
            & (pl.col("p95_o") <= pl.col("p95"))
            & ((pl.col("score_o") > pl.col("score")) | (pl.col("p95_o") < pl.col("p95")))
        )
        .select("config_id")
        .unique()
    )
    return frame.with_columns((~pl.col("config_id").is_in(dominated["config_id"].implode())).alias("pareto"))


def paired_scores(items: pl.LazyFrame | pl.DataFrame, metric: str) -> pl.DataFrame:
    """item_id x config_id table of a metric (nulls where a configuration has no value for an item)."""
    frame = items.lazy().select("item_id", "config_id", pl.col(metric).cast(pl.Float64)).collect()
    return frame.pivot(on="config_id", index="item_id", values=metric, aggregate_function="first")


def tied_with(
    scores: pl.DataFrame, best: str, others: list[str], objective: Metric, alpha: float = TIE_ALPHA
) -> set[str]:
    """Configurations a one-sided sign test on the same items cannot tell below `best` at level `alpha`."""
    sign = 1.0 if objective.higher_is_better else -1.0
    tied = set()
    for other in others:
        diff = ((scores[best] - scores[other]) * sign).drop_nulls()
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        if stats.sign_test_p(wins, losses) >= alpha:
            tied.add(other)
    return tied


def rank(frame: pl.DataFrame, items: pl.LazyFrame | pl.DataFrame, objective: Metric) -> pl.DataFrame:
    """SLA-meeting first; among them, the best by the objective and every configuration tied with it (a
    paired sign test on the same items) form the first group, fastest p95 first; then the rest by the
    objective and p95. `tied` marks the group; `rank` is the position."""
    descending = objective.higher_is_better
    frame = frame.sort(
        ["sla_pass", "objective", "latency_p95_ms"], descending=[True, descending, False], nulls_last=True
    )
    passing = frame.filter(pl.col("sla_pass"))
    group: set[str] = set()
    if passing.height:
        best = passing["config_id"][0]
        scores = paired_scores(
            items.filter(pl.col("config_id").is_in(passing["config_id"].implode())), objective.name
        )
        group = {best} | tied_with(scores, best, passing["config_id"][1:].to_list(), objective)
    frame = frame.with_columns(pl.col("config_id").is_in(list(group)).alias("tied"))
    head = by_speed(frame.filter(pl.col("tied")), objective)
    tail = frame.filter(~pl.col("tied"))
    return pl.concat([head, tail]).with_row_index("rank", offset=1)


def by_speed(
    group: pl.DataFrame,
    objective: Metric,
    same: float = SAME_P95,
    p95: str = "latency_p95_ms",
    value: str = "objective",
) -> pl.DataFrame:
    """The tied group fastest first. p95s within `same` (relative) of the fastest of a run of them count as
    equal, and those are ordered by the objective: two configurations that share every expensive call (two
    extractors after one OCR engine) differ in p95 by a fraction of a percent, which says nothing."""
    ordered = group.sort(p95, nulls_last=True)
    bucket, start, buckets = -1, None, []
    for latency in ordered[p95].to_list():
        if start is None or latency is None or latency > start * (1 + same):
            bucket, start = bucket + 1, latency
        buckets.append(bucket)
    return (
        ordered.with_columns(pl.Series("_speed", buckets))
        .sort(["_speed", value], descending=[False, objective.higher_is_better])
        .drop("_speed")
    )
