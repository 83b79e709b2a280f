"""Recommend a configuration for the user's own production mix: the run's items reweighted to the mix.

A mix gives cells a share: one attribute's bins (`profile=rotated:0.3`) or joint cells of several
(`profile=rotated&bin_rotation=180:0.3`: an `&` joins attributes). Bins the mix leaves out share what it
leaves over, in the run's proportions. Each item is weighted by its cell's share in the mix over its share
in the run, so every configuration's mean over the weighted items is its expected value under the mix (a
stratified estimate); the decision rule (`raypipe.decide.decision`) then runs on the weighted items, with the
test ranges widened to the largest weight, so a pick under a mix carries the same guarantee as the run's
own. The displayed interval is the stratified normal interval; the p95 shown is the weighted quantile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from raypipe.decide.decision import Decision, DecisionSettings, Evidence, decide, item_arrays, item_order
from raypipe.decide.results import DECISION_COLUMNS, DECISION_ORDER, decide_and_rank, with_sla
from raypipe.decide.slices import bin_column, bin_labels
from raypipe.decide.stats import Z_95
from raypipe.errors import RaypipeError
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric, Task

JOIN = "&"  # joins the attributes of a joint cell in --mix and in cell labels


@dataclass
class Recommendation:
    """The reweighted ranking for one mix and what it recommends (`decision` says with what guarantee)."""

    attribute: str | None
    mix: dict[str, float]
    ranking: pl.DataFrame
    recommended: str | None
    tied: list[str] = field(default_factory=list)
    note: str | None = None
    decision: Decision | None = None


def parse_mix(entries: list[str]) -> tuple[str | None, dict[str, float]]:
    """`ATTR=BIN:WEIGHT` entries, or joint `ATTR=BIN&ATTR2=BIN2:WEIGHT`, as (attribute, {bin: weight}); a
    joint mix's attribute and bins are its parts joined by `&`."""
    attribute, weights = None, {}
    for entry in entries:
        cell, colon, weight = entry.rpartition(":")
        parts = [p.partition("=") for p in cell.split(JOIN)] if colon else []
        if not parts or any(not sep or not name or not label for name, sep, label in parts):
            raise RaypipeError(
                f"--mix '{entry}': write it as ATTRIBUTE=BIN:WEIGHT (e.g. profile=rotated:0.3), or "
                f"ATTR=BIN{JOIN}ATTR2=BIN2:WEIGHT for a joint cell"
            )
        name = JOIN.join(n for n, _, _ in parts)
        if attribute is not None and name != attribute:
            raise RaypipeError(
                f"--mix: every entry names the same attributes (got '{attribute}' and '{name}')"
            )
        try:
            weights[JOIN.join(label for _, _, label in parts)] = float(weight)
        except ValueError as exc:
            raise RaypipeError(f"--mix '{entry}': the weight '{weight}' is not a number") from exc
        attribute = name
    return attribute, weights


def attributes_of(attribute: str) -> list[str]:
    return attribute.split(JOIN)


def cell_expr(attribute: str) -> pl.Expr:
    """Each item's cell under a (possibly joint) attribute: its bins joined by `&` (null if one is)."""
    return pl.concat_str([pl.col(bin_column(a)) for a in attributes_of(attribute)], separator=JOIN)


def with_cells(items: pl.DataFrame, attribute: str) -> pl.DataFrame:
    return items.with_columns(cell_expr(attribute).alias(CELL))


CELL = "_mix_cell"


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
    """The full mix: the given shares, and what they leave over spread over the other cells as in the run."""
    own = own_shares(items, attribute)
    total = sum(given.values())
    if total > 1 + 1e-9:
        raise RaypipeError(f"--mix: the weights add up to {total:g}, more than 1")
    rest = [b for b in own if b not in given]
    left = 1.0 - total
    if left > 1e-9 and not rest:
        return {b: w / total for b, w in given.items()}
    rest_share = sum(own[b] for b in rest)
    return given | {b: left * own[b] / rest_share for b in rest}


def own_shares(items: pl.DataFrame, attribute: str) -> dict[str, float]:
    """Each cell's share of the run's items."""
    cells = with_cells(items.unique("item_id"), attribute).group_by(CELL).len().drop_nulls()
    return {r[CELL]: r["len"] / cells["len"].sum() for r in cells.iter_rows(named=True)}


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


def expected(items: pl.DataFrame, mix: dict[str, float], metric: Metric) -> dict[str, tuple]:
    """Per configuration (items carry their CELL): (expected value, standard error, p95 under the mix), or
    absent when a cell with weight has no items of that configuration."""
    out: dict[str, tuple] = {}
    for (config_id,), frame in items.group_by("config_id"):
        total, var, weights, latencies, ok = 0.0, 0.0, [], [], True
        for label, w in mix.items():
            cell = frame.filter(pl.col(CELL) == label)
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


def item_weights(items: pl.DataFrame, order: list[str], mix: dict[str, float]) -> np.ndarray:
    """Per item in `order`: its cell's share in the mix over its share in the run (0 outside every cell)."""
    cells = items.unique("item_id").select("item_id", CELL)
    shares = cells.group_by(CELL).len().drop_nulls()
    own = {r[CELL]: r["len"] / cells.height for r in shares.iter_rows(named=True)}
    cell_of = dict(zip(cells["item_id"].to_list(), cells[CELL].to_list(), strict=True))
    return np.array([mix.get(cell_of[i], 0.0) / own[cell_of[i]] if cell_of[i] in own else 0.0 for i in order])


def mix_decision(
    items: pl.DataFrame,
    config_ids: list[str],
    task: Task,
    objective: Metric,
    sla: SLASpec,
    mix: dict[str, float],
    settings: DecisionSettings | None,
) -> Decision:
    """The decision rule on the items weighted to the mix."""
    metrics = {m: task.metric(m) for m, _, _ in sla.bounds()}
    columns = list(dict.fromkeys([objective.name, "latency_total_ms", *metrics]))
    order = item_order(items["item_id"].to_list())
    arrays = item_arrays(items, config_ids, columns, order)
    weights = item_weights(items, order, mix)
    evidence = Evidence(config_ids, objective, sla, metrics, settings, scale=max(1.0, float(weights.max())))
    evidence.add(arrays[objective.name], arrays["latency_total_ms"], {m: arrays[m] for m in metrics}, weights)
    return decide(evidence)


def reweighted_rows(
    items: pl.DataFrame, task: Task, objective: Metric, sla: SLASpec, mix: dict[str, float]
) -> pl.DataFrame:
    """Per configuration: expected objective under the mix with its interval, p95, and the SLA on those
    point estimates (the decision judges it on bounds)."""
    figures = expected(items, mix, objective)
    bounds = {m: expected(items, mix, task.metric(m)) for m, _, _ in sla.bounds()}
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
            {"config_id": config_id, "expected": value, "ci_low": low, "ci_high": high, "p95_ms": p95,
             "sla_pass": ok}
        )  # fmt: skip
    schema = {"config_id": pl.String, "expected": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "p95_ms": pl.Float64, "sla_pass": pl.Boolean}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def recommend(
    items: pl.DataFrame,
    configs: pl.DataFrame,
    task: Task,
    objective: Metric,
    sla: SLASpec,
    attribute: str | None,
    mix: dict[str, float],
    stage_names: list[str],
    settings: DecisionSettings | None = None,
) -> Recommendation:
    """The ranking under the mix (None: the run's own data) and the decision rule's pick, among the
    configurations no search dropped."""
    if attribute is None:
        return _own_data(configs, items, task, objective, sla, stage_names, settings)
    if "dropped_after_items" in configs.columns:
        configs = configs.filter(pl.col("dropped_after_items").is_null())
    items = with_cells(items.filter(pl.col("config_id").is_in(configs["config_id"].implode())), attribute)
    ranking = reweighted_rows(items, task, objective, sla, mix)
    decision = mix_decision(items, ranking["config_id"].to_list(), task, objective, sla, mix, settings)
    ranking = ranking.with_columns(
        pl.col("config_id").map_elements(decision.row_status, return_dtype=pl.String).alias("decision")
    )
    group = {"pick", "certified"} if decision.status == "certified" else {"pick", "candidate"}
    ranking = ranking.with_columns(pl.col("decision").is_in(list(group)).alias("tied"))
    ranking = _in_decision_order(ranking, objective, "expected", "p95_ms")
    ranking = ranking.join(configs.select("config_id", *stage_names), on="config_id", how="left")
    return _recommendation(attribute, mix, ranking, decision)


def _in_decision_order(frame: pl.DataFrame, objective: Metric, value: str, p95: str) -> pl.DataFrame:
    order = pl.col("decision").replace_strict(DECISION_ORDER, return_dtype=pl.Int8)
    return frame.sort(
        [order, value, p95], descending=[False, objective.higher_is_better, False], nulls_last=True
    )


def _recommendation(
    attribute: str | None, mix: dict[str, float], ranking: pl.DataFrame, decision: Decision
) -> Recommendation:
    if decision.config_id is None:
        return Recommendation(attribute, mix, ranking, None, note=decision.headline(), decision=decision)
    group = decision.certified if decision.status == "certified" else decision.candidates
    tied = sorted(set(group) - {decision.config_id})
    return Recommendation(attribute, mix, ranking, decision.config_id, tied, decision.headline(), decision)


def _own_data(
    configs: pl.DataFrame,
    items: pl.DataFrame,
    task: Task,
    objective: Metric,
    sla: SLASpec,
    stage_names: list[str],
    settings: DecisionSettings | None,
) -> Recommendation:
    """For the run's own data the run's decision is the answer: the same rule on the same items in the same
    order, with the SLA given (which may differ from the run's)."""
    frame = with_sla(configs.drop(*DECISION_COLUMNS, "rank", "sla_miss", "sla_pass", strict=False), sla)
    ranked, decision = decide_and_rank(frame, items, task, objective, sla, settings)
    ranking = ranked.filter(pl.col("decision") != "dropped").select(
        "config_id",
        pl.col("objective").alias("expected"),
        pl.col("objective_ci_low").alias("ci_low"),
        pl.col("objective_ci_high").alias("ci_high"),
        pl.col("latency_p95_ms").alias("p95_ms"),
        "sla_pass",
        "decision",
        "tied",
        *stage_names,
    )
    return _recommendation(None, {}, ranking, decision)
