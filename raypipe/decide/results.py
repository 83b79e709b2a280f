"""Run results with Polars: items assembled from the streamed parts, and per-configuration aggregates over the
task's metric catalogue (intervals, service-time percentiles, SLA, Pareto front, ranking with ties)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from raypipe.decide import stats
from raypipe.decide.decision import (
    Decision,
    DecisionSettings,
    Evidence,
    chunks,
    decide_items,
    item_arrays,
    item_ids,
    p95_interval,
)
from raypipe.spec import columns
from raypipe.spec.schema import SLASpec
from raypipe.spec.space import Configuration
from raypipe.spec.task import Metric, Task

WORK_KINDS = ("calls", "reused", "cached", "busy_ms", "cpu_ms")


def work_columns(stage_names: list[str] | tuple[str, ...]) -> list[str]:
    return [columns.work(what, name) for what in WORK_KINDS for name in stage_names]


def work_counts(
    rows: pl.LazyFrame | pl.DataFrame, stage_names: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Per stage, summed over items: calls made, calls saved by identical-input reuse, cache hits, and
    engine-seconds spent in wall time (under contention) and in CPU time (cache hits cost none)."""
    present = set(rows.collect_schema().names())
    wanted = [c for c in work_columns(stage_names) if c in present]
    sums = (
        rows.lazy()
        .select(pl.col(c).fill_null(0).sum() for c in wanted)
        .collect(engine="streaming")
        .row(0, named=True)
        if wanted
        else {}
    )

    def total(column: str) -> float:
        return float(sums.get(column) or 0.0)

    return {
        name: {
            "calls": int(total(columns.work("calls", name))),
            "saved_by_reuse": int(total(f"_reused_{name}")),
            "cache_hits": int(total(f"_cached_{name}")),
            "engine_seconds": round(total(columns.work("busy_ms", name)) / 1000.0, 3),
            "cpu_seconds": round(total(columns.work("cpu_ms", name)) / 1000.0, 3),
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
    """Result rows, one per (item, configuration), joined with their configuration's choices and the item's
    attributes; lazy, so a large run is never held in memory. The rows must be unique: a resumed run drops
    its unfinished items' earlier rows before running them again (`RunDir.drop_from_parts`), because a
    `unique` here held every row (330 MB at 1,000 items x 525 configurations)."""
    names = rows.collect_schema().names()
    frame = rows.lazy().drop([c for c in names if c.startswith("_")])
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


def latency_percentiles(stage_names: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Per latency column, the percentiles configs.parquet reports, (output column, quantile): service-time
    percentiles (failed items count what they spent), per-stage medians, busy (under load) percentiles."""
    return {
        "latency_total_ms": [("latency_p50_ms", 0.50), ("latency_p95_ms", 0.95), ("latency_p99_ms", 0.99)],
        **{f"latency_{s}_ms": [(f"latency_{s}_p50_ms", 0.50)] for s in stage_names},
        "busy_total_ms": [("busy_p50_ms", 0.50), ("busy_p95_ms", 0.95), ("busy_p99_ms", 0.99)],
    }


def percentile_table(
    items: pl.LazyFrame | pl.DataFrame, config_ids: list[str], wanted: dict[str, list[tuple[str, float]]]
) -> pl.DataFrame:
    """Per configuration, linearly interpolated percentiles (Polars' and NumPy's "linear") of each column,
    nulls left out. Read into (items, K) arrays, a block of configurations at a time (`decision.chunks`): a
    quantile cannot stream in Polars' group-by, which held every row of a 20,000-item x 525-configuration
    run (3.1 GB)."""
    items = items.lazy()
    order = item_ids(items)
    data: dict[str, Any] = {"config_id": pl.Series(config_ids, dtype=pl.String)}
    result = {column: np.full((len(outputs), len(config_ids)), np.nan) for column, outputs in wanted.items()}
    done = 0
    for block in chunks(config_ids, len(order), len(wanted)):  # bounded memory: a block of configurations
        arrays = item_arrays(items, block, list(wanted), order)
        for column, outputs in wanted.items():
            values, quantiles = arrays.pop(column), [q for _, q in outputs]
            missing = np.isnan(values)
            if not missing.any():  # the usual case, and in place: no copy of the block
                found = np.quantile(values, quantiles, axis=0, overwrite_input=True)
                result[column][:, done : done + len(block)] = found
            else:
                for k in np.flatnonzero(~missing.all(axis=0)):
                    result[column][:, done + k] = np.quantile(values[~missing[:, k], k], quantiles)
            del values, missing
        done += len(block)
    for column, outputs in wanted.items():
        for (name, _), row in zip(outputs, result[column], strict=True):
            data[name] = pl.Series(name, row, dtype=pl.Float64).fill_nan(None)
    return pl.DataFrame(data)


def aggregate_configs(
    items: pl.LazyFrame | pl.DataFrame, stage_names: list[str], task: Task, objective: Metric, sla: SLASpec
) -> pl.DataFrame:
    """configs.parquet's figures: every metric with its interval, the objective, latency percentiles, the SLA
    on point estimates, Pareto; `decide_and_rank` then decides and orders. Counts, means and intervals
    stream through Polars' group-by; the percentiles come from `percentile_table`."""
    columns = set(items.collect_schema().names())
    present = [m for m in task.metrics if m.name in columns]
    total = pl.col("latency_total_ms")
    frame = (
        items.lazy()
        .group_by("config_id")
        .agg(
            *[pl.col(s).first() for s in stage_names],
            pl.len().alias("n_items"),
            pl.col("error").is_not_null().sum().alias("n_errors"),
            *metric_aggregates(present),
            total.mean().alias("latency_mean_ms"),
            (1000.0 / total.mean()).alias("throughput_items_per_s"),
        )
        .collect(engine="streaming")
    )
    wanted = latency_percentiles(stage_names)
    frame = frame.join(percentile_table(items, frame["config_id"].to_list(), wanted), on="config_id")
    names = [n for outputs in wanted.values() for n, _ in outputs]
    latency = [*names[:3], "latency_mean_ms", "throughput_items_per_s", *names[3:]]
    frame = frame.select(pl.exclude(latency), *latency)
    frame = frame.with_columns(
        pl.col(objective.name).alias("objective"),
        pl.col(f"{objective.name}_ci_low").alias("objective_ci_low"),
        pl.col(f"{objective.name}_ci_high").alias("objective_ci_high"),
    )
    frame = with_sla(frame, sla)
    return with_pareto(frame, objective)


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


def decide_and_rank(
    frame: pl.DataFrame,
    items: pl.LazyFrame | pl.DataFrame,
    task: Task,
    objective: Metric,
    sla: SLASpec,
    settings: DecisionSettings | None = None,
) -> tuple[pl.DataFrame, Decision]:
    """Apply the decision rule (decide.decision) to the configurations no search dropped, and order the
    table by it: the pick, the rest of the certified group, the candidates, the excluded; configurations a
    search dropped follow, unranked, with when and why. `tied` marks the group the pick came from."""
    dropped = _dropped(frame)
    live = [c for c in frame["config_id"].to_list() if c not in dropped]
    metrics = {m: task.metric(m) for m, _, _ in sla.bounds()}
    decision, evidence = decide_items(items, live, objective, sla, metrics, settings)
    intervals = p95_intervals(items, frame["config_id"].to_list(), evidence)
    del evidence
    status = ["dropped" if c in dropped else decision.row_status(c) for c in frame["config_id"].to_list()]
    reasons = [dropped.get(c) or decision.excluded.get(c) for c in frame["config_id"].to_list()]
    frame = frame.with_columns(
        pl.Series("decision", status, dtype=pl.String),
        pl.Series("decision_reason", reasons, dtype=pl.String),
        pl.col("config_id")
        .replace_strict(decision.sla_status, default=None, return_dtype=pl.String)
        .alias("sla_status"),
    ).join(intervals, on="config_id", how="left")
    group = {"pick", "certified"} if decision.status == "certified" else {"pick", "candidate"}
    frame = frame.with_columns(pl.col("decision").is_in(list(group)).alias("tied"))
    return order_by_decision(frame, objective), decision


DECISION_COLUMNS = ("decision", "decision_reason", "sla_status", "p95_ci_low", "p95_ci_high", "tied")
DECISION_ORDER = {"pick": 0, "certified": 1, "candidate": 2, "excluded": 3, "dropped": 4}


def order_by_decision(frame: pl.DataFrame, objective: Metric) -> pl.DataFrame:
    """Rows in decision order, the objective (then p95) within each; `rank` for every row no search
    dropped."""
    order = pl.col("decision").replace_strict(DECISION_ORDER, return_dtype=pl.Int8)
    frame = frame.sort(
        [order, "objective", "latency_p95_ms"], descending=[False, objective.higher_is_better, False],
        nulls_last=True,
    )  # fmt: skip
    ranked = (pl.col("decision") != "dropped").cum_sum().cast(pl.UInt32)
    rank = pl.when(pl.col("decision") != "dropped").then(ranked).otherwise(None).alias("rank")
    return frame.with_columns(rank).select("rank", pl.exclude("rank"))


def _dropped(frame: pl.DataFrame) -> dict[str, str]:
    """config_id -> why and when a search dropped it."""
    if "dropped_after_items" not in frame.columns:
        return {}
    gone = frame.filter(pl.col("dropped_after_items").is_not_null())
    reason = gone["drop_reason"] if "drop_reason" in gone.columns else pl.Series([None] * gone.height)
    return {
        c: f"dropped by the search after {n} items" + (f": {r}" if r else "")
        for c, n, r in zip(gone["config_id"], gone["dropped_after_items"], reason, strict=True)
    }


def p95_intervals(
    items: pl.LazyFrame | pl.DataFrame, config_ids: list[str], evidence: Evidence | None = None
) -> pl.DataFrame:
    """Per configuration with service times: the 95 % order-statistic interval of its p95 service time.
    Configurations the decision's `evidence` holds take the p95s it computed; the others (dropped by a
    search) are read from `items`, a block of configurations at a time (`decision.chunks`)."""
    found: dict[str, tuple[float, float]] = {}
    if evidence is not None and evidence.config_ids:
        _, low, high = evidence.p95()
        found = {c: (low[k], high[k]) for k, c in enumerate(evidence.config_ids) if evidence.n_latency[k]}
    held = set(evidence.config_ids) if evidence is not None else set()
    rest = [c for c in config_ids if c not in held]
    if rest:
        items = items.lazy()
        order = item_ids(items)
        for block in chunks(rest, len(order)):
            values = item_arrays(items, block, ["latency_total_ms"], order)["latency_total_ms"]
            for config_id, column in zip(block, values.T, strict=True):
                if not np.isnan(column).all():  # p95_interval leaves the NaN (no row) out itself
                    found[config_id] = p95_interval(column)[1:]
    data = [
        {"config_id": c, "p95_ci_low": found[c][0], "p95_ci_high": found[c][1]}
        for c in config_ids
        if c in found
    ]
    schema = {"config_id": pl.String, "p95_ci_low": pl.Float64, "p95_ci_high": pl.Float64}
    return pl.DataFrame(data, schema=schema)
