"""Results per data slice: attributes binned, each cell's configurations with intervals, and its decision.

Continuous attributes are cut into bins (edges from the spec, else from the task, else quantiles of the
data; a task may give exact zeros a bin of their own), categorical ones keep their values. Every item gets
a `bin_<attribute>` column, so slices, `raypipe recommend` and monitoring all bin the same way. Each
(attribute, bin) cell, and each cell of the crossed pairs the spec asks for, reports every configuration's
objective with its interval and n, and the decision rule's outcome on the cell's own items
(`decide.decision`): a certified winner with its certified group, or an undecided cell's candidates and
provisional pick. The SLA is judged on the cell's own items, as a deployment to that slice would face it.
Cells are corrected for their number: each is decided at delta / M, M the cells with at least `min_items`
items over every dimension, so all the winners of a run hold at once with probability >= 1 - delta. A
cell with fewer than `min_items` items names no winner.
"""

from __future__ import annotations

import itertools
import math

import polars as pl

from raypipe.decide import stats
from raypipe.decide.decision import DecisionSettings, decide_items
from raypipe.decide.results import percentile_table
from raypipe.spec.schema import PipelineSpec, SLASpec
from raypipe.spec.task import Metric, SliceAttribute, Task

TOO_FEW = "too few items"


def bin_column(attribute: str) -> str:
    return f"bin_{attribute}"


def _edge(value: float) -> str:
    return f"{value:.3g}"


def bin_labels(edges: list[float]) -> list[str]:
    """Labels of the bins that inner `edges` make: (-inf, a], (a, b], ..., (z, inf)."""
    bounds = [-math.inf, *edges, math.inf]
    return [
        f"({_edge(lo)}, {_edge(hi)}]" if hi != math.inf else f"({_edge(lo)}, inf)"
        for lo, hi in itertools.pairwise(bounds)
    ]


def edges_for(attribute: SliceAttribute, values: pl.Series, spec: PipelineSpec) -> list[float]:
    """Inner bin edges: the spec's, else the task's, else quantiles of the data (non-zero with a zero bin)."""
    if attribute.name in spec.slices.bins:
        return sorted(spec.slices.bins[attribute.name])
    if attribute.bins is not None:
        return list(attribute.bins)
    data = values.drop_nulls()
    if attribute.zero_bin:
        data = data.filter(data != 0)
    if data.is_empty():
        return []
    q = spec.slices.quantiles
    cuts = [float(data.quantile(i / q, "linear")) for i in range(1, q)]
    return sorted(set(cuts))


def bin_expr(attribute: SliceAttribute, edges: list[float]) -> pl.Expr:
    """An expression giving each item its bin label (null where the attribute is null)."""
    col = pl.col(attribute.name)
    if attribute.kind == "categorical":
        return col.cast(pl.String)
    labels = bin_labels(edges)
    expr = pl.lit(labels[-1])
    for edge, label in reversed(list(zip(edges, labels, strict=False))):
        expr = pl.when(col.cast(pl.Float64) <= edge).then(pl.lit(label)).otherwise(expr)
    if attribute.zero_bin:
        expr = pl.when(col == 0).then(pl.lit("= 0")).otherwise(expr)
    return pl.when(col.is_null()).then(None).otherwise(expr)


def slice_attributes(task: Task, spec: PipelineSpec, items: pl.DataFrame) -> list[SliceAttribute]:
    """The task's attributes the spec slices by and the items carry (not all null)."""
    wanted = spec.slices.attributes
    return [
        a
        for a in task.slice_attributes
        if (wanted is None or a.name in wanted)
        and a.name in items.columns
        and items[a.name].null_count() < items.height
    ]


def bin_exprs(
    attributes: pl.DataFrame, task: Task, spec: PipelineSpec
) -> tuple[list[pl.Expr], dict[str, list[float]]]:
    """A bin_<attribute> expression per slice attribute, with edges from the items' attributes (one row per
    item), and the edges used for each."""
    used: dict[str, list[float]] = {}
    exprs = []
    for attribute in slice_attributes(task, spec, attributes):
        values = attributes[attribute.name]
        edges = edges_for(attribute, values, spec) if attribute.kind == "continuous" else []
        used[attribute.name] = edges
        exprs.append(bin_expr(attribute, edges).alias(bin_column(attribute.name)))
    return exprs, used


def cell_stats(
    items: pl.LazyFrame, keys: list[str], objective: Metric, sla: SLASpec, alive: list[str]
) -> pl.DataFrame:
    """Per cell and configuration: n, objective mean and interval, p95 service time, and whether it meets the
    SLA on the cell's own items (the SLA a deployment to that slice would face) and no search dropped it.
    Counts, means and intervals stream through Polars' group-by; each cell's p95 is read per cell."""
    low, high = stats.interval_exprs(objective.name, objective.interval)
    bounds = sla.bounds()
    frame = (
        items.group_by([*keys, "config_id"])
        .agg(
            pl.col(objective.name).count().alias("n"),
            pl.col(objective.name).cast(pl.Float64).mean().alias("objective"),
            low.alias("ci_low"),
            high.alias("ci_high"),
            *[pl.col(m).cast(pl.Float64).mean().alias(f"_sla_{m}") for m in {m for m, _, _ in bounds}],
        )
        .collect(engine="streaming")
    )
    key_types = {k: frame.schema[k] for k in keys}
    p95 = [
        percentile_table(items.filter(_match(keys, key)), cell["config_id"].to_list(), P95).with_columns(
            [pl.lit(v, key_types[k]).alias(k) for k, v in zip(keys, key, strict=True)]
        )
        for key, cell in frame.group_by(keys)
    ]
    schema = {"config_id": pl.String, "latency_p95_ms": pl.Float64} | key_types
    p95_frame = pl.concat([pl.DataFrame(schema=schema), *p95], how="diagonal_relaxed")
    frame = frame.join(p95_frame, on=[*keys, "config_id"], how="left")
    ok = pl.col("config_id").is_in(alive)
    if sla.p95_latency_ms is not None:
        ok = ok & (pl.col("latency_p95_ms") <= sla.p95_latency_ms)
    for metric, side, bound in bounds:
        value = pl.col(f"_sla_{metric}")
        ok = ok & (value >= bound if side == "min" else value <= bound)
    return frame.with_columns(
        ok.fill_null(False).alias("eligible"), pl.col("config_id").is_in(alive).alias("alive")
    ).drop([c for c in frame.columns if c.startswith("_sla_")])


P95 = {"latency_total_ms": [("latency_p95_ms", 0.95)]}


def _match(keys: list[str], values: tuple) -> pl.Expr:
    return pl.all_horizontal([pl.col(k) == v for k, v in zip(keys, values, strict=True)])


def cell_items(items: pl.LazyFrame, keys: list[str]) -> dict[tuple, int]:
    """Each cell's number of distinct items."""
    counts = items.select([*keys, "item_id"]).unique().group_by(keys).len().collect(engine="streaming")
    return {tuple(row[:-1]): int(row[-1]) for row in counts.iter_rows()}


def cell_winners(
    items: pl.LazyFrame,
    per_cell: pl.DataFrame,
    keys: list[str],
    objective: Metric,
    spec: PipelineSpec,
    metrics: dict[str, Metric],
    n_cells: int,
    n_items: dict[tuple, int],
) -> pl.DataFrame:
    """Per cell: the number of items, the certified winner (or why none), its certified group or candidates,
    and the provisional pick of an undecided cell."""
    rows = []
    for cell_key, cell in per_cell.group_by(keys, maintain_order=True):
        found = _cell_winner(
            items.filter(_match(keys, cell_key)), n_items[tuple(cell_key)], cell, objective, spec, metrics,
            n_cells,
        )  # fmt: skip
        rows.append(dict(zip(keys, cell_key, strict=True)) | found)
    schema = {k: pl.String for k in keys} | CELL_SCHEMA
    return pl.DataFrame(rows, schema=schema)


CELL_SCHEMA = {
    "cell_items": pl.Int64,
    "cell_status": pl.String,
    "winner": pl.String,
    "provisional": pl.String,
    "tied": pl.List(pl.String),
    "note": pl.String,
}


def cell_settings(spec: PipelineSpec, n_cells: int) -> DecisionSettings:
    """Each cell's rule at delta / (number of cells that may name a winner): Bonferroni across every cell
    of every dimension, so all the winners a run names hold together with probability >= 1 - delta."""
    return DecisionSettings(spec.decision.epsilon, spec.decision.delta / max(n_cells, 1))


def _cell_winner(
    cell_items: pl.LazyFrame,
    n_items: int,
    cell: pl.DataFrame,
    objective: Metric,
    spec: PipelineSpec,
    metrics: dict[str, Metric],
    n_cells: int,
) -> dict:
    """One cell's decision among the configurations no search dropped, on the cell's own items (the SLA a
    deployment to that slice would face)."""
    row = {"cell_items": n_items, "cell_status": None, "winner": None, "provisional": None, "tied": [],
           "note": None}  # fmt: skip
    if n_items < spec.slices.min_items:
        return row | {"note": f"{TOO_FEW} ({n_items} < {spec.slices.min_items})"}
    alive = cell.filter(pl.col("alive"))["config_id"].to_list()
    if not alive:
        return row | {"note": "every configuration was dropped by the search"}
    decision, _ = decide_items(
        cell_items, sorted(alive), objective, spec.sla, metrics, cell_settings(spec, n_cells)
    )
    group = decision.certified if decision.status == "certified" else decision.candidates
    row |= {"cell_status": decision.status, "tied": sorted(set(group) - {decision.config_id})}
    if decision.status == "certified":
        return row | {"winner": decision.config_id, "note": decision.headline()}
    return row | {"provisional": decision.config_id, "note": decision.headline()}


def alive_configs(configs: pl.DataFrame) -> list[str]:
    """Configurations that no search dropped (a dropped one saw fewer items: it names no slice winner)."""
    if "dropped_after_items" not in configs.columns:
        return configs["config_id"].to_list()
    return configs.filter(pl.col("dropped_after_items").is_null())["config_id"].to_list()


def slice_table(
    items: pl.LazyFrame | pl.DataFrame,
    configs: pl.DataFrame,
    task: Task,
    objective: Metric,
    spec: PipelineSpec,
) -> pl.DataFrame:
    """slices.parquet: one row per (dimension, cell, configuration), with the cell's winner and ties.
    `items` may be lazy (a run's items.parquet): nothing reads more than a cell's arrays at once."""
    items = items.lazy()
    columns = items.collect_schema().names()
    alive = alive_configs(configs)
    dims = [[bin_column(a.name)] for a in task.slice_attributes if bin_column(a.name) in columns]
    dims += [
        [bin_column(a), bin_column(b)]
        for a, b in spec.slices.cross
        if bin_column(a) in columns and bin_column(b) in columns
    ]
    metrics = {m: task.metric(m) for m, _, _ in spec.sla.bounds()}
    cells = {}
    for keys in dims:
        present = items.drop_nulls(keys)
        counts = cell_items(present, keys)
        if counts:
            cells[tuple(keys)] = (present, counts, cell_stats(present, keys, objective, spec.sla, alive))
    n_cells = sum(sum(n >= spec.slices.min_items for n in counts.values()) for _, counts, _ in cells.values())
    frames = []
    for keys, (present, counts, per_cell) in cells.items():
        keys = list(keys)
        winners = cell_winners(present, per_cell, keys, objective, spec, metrics, n_cells, counts)
        frame = per_cell.join(winners, on=keys, how="left").with_columns(
            (pl.col("config_id") == pl.col("winner")).fill_null(False).alias("is_winner"),
        )
        frames.append(_long_form(frame, keys))
    if not frames:
        return pl.DataFrame(schema=SLICE_SCHEMA)
    return pl.concat(frames, how="vertical_relaxed").sort(
        "dimension", "cell", "objective", descending=[False, False, objective.higher_is_better]
    )


SLICE_SCHEMA = {
    "dimension": pl.String,
    "cell": pl.String,
    "config_id": pl.String,
    "n": pl.UInt32,
    "objective": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "latency_p95_ms": pl.Float64,
    **CELL_SCHEMA,  # each cell's decision, repeated on its configurations' rows
    "is_winner": pl.Boolean,
    "is_tied": pl.Boolean,
    "eligible": pl.Boolean,
}


def _long_form(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """One naming for every dimension: `dimension` "a" or "a x b", `cell` "bin" or "bin | bin"."""
    names = [k.removeprefix("bin_") for k in keys]
    cell = pl.concat_str([pl.col(k) for k in keys], separator=" | ")
    return frame.with_columns(
        pl.lit(" x ".join(names)).alias("dimension"),
        cell.alias("cell"),
        (
            pl.col("tied").list.contains(pl.col("config_id"))
            | pl.col("is_winner")
            | (pl.col("config_id") == pl.col("provisional")).fill_null(False)
        ).alias("is_tied"),
    ).select(list(SLICE_SCHEMA))


def cell_summary(slices: pl.DataFrame) -> pl.DataFrame:
    """One row per cell: its items, winner (objective and interval), how many are tied, or its note."""
    winners = slices.filter(pl.col("is_winner")).select(
        "dimension",
        "cell",
        pl.col("objective").alias("winner_objective"),
        "ci_low",
        "ci_high",
        "latency_p95_ms",
    )
    extra = [pl.col(c).first() for c in ("cell_status", "provisional") if c in slices.columns]
    cells = slices.group_by("dimension", "cell", maintain_order=True).agg(
        pl.col("cell_items").first(),
        pl.col("winner").first(),
        pl.col("tied").first().list.len().alias("n_tied"),
        pl.col("note").first(),
        *extra,
    )
    return cells.join(winners, on=["dimension", "cell"], how="left").sort("dimension", "cell")
