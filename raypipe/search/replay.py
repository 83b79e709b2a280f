"""Replay a racing search on an exhaustive run's recorded per-item results, over many seeded item orders,
without calling any engine: what it would spend, what it would pick, and how much of the Pareto front it
would keep.

Each order feeds the same `Race` live racing uses (same settings, same rules, same code) with the run's
rows, `look_every` items at a time, in the order `Racing.order(n, seed)` gives. Drops take effect from the
next item (live, items already in flight still finish). Latency is the calibrated service time
(`latency_total_ms`); an item's cost is the sum over the (stage, prefix) calls that the configurations
still racing need, each stage priced at its `latency_<stage>_ms`, counted once per item as prefix sharing
runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from raypipe.decide import results
from raypipe.search.costs import group_costs, live_cost, prefix_groups
from raypipe.search.racing import Racing
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric

REPLAY_LATENCY = "latency_total_ms"


@dataclass
class RecordedRun:
    """An exhaustive run as arrays: configurations sorted by id, items by id; (items, K) per column."""

    config_ids: list[str]
    labels: list[tuple[str, ...]]
    scores: np.ndarray
    latency: np.ndarray
    metrics: dict[str, np.ndarray]
    stage_costs: list[np.ndarray]  # per stage: prefix-group costs, (items, groups)
    groups: list[np.ndarray]

    @property
    def n_items(self) -> int:
        return self.scores.shape[0]


@dataclass
class ExhaustiveTruth:
    """What the exhaustive run itself concluded, on point estimates over every item."""

    objective: np.ndarray  # oriented: higher is better
    p95: np.ndarray
    best: int | None  # the best SLA-meeting configuration (the faster of equals)
    front: np.ndarray  # bool: on the Pareto front of the SLA-meeting configurations
    sla_pass: np.ndarray


def record(items: pl.DataFrame, stage_names: list[str], objective: Metric, sla: SLASpec) -> RecordedRun:
    """The arrays a replay needs from items.parquet (one row per item and configuration)."""
    configs = items.select("config_id", *stage_names).unique().sort("config_id")
    config_ids = configs["config_id"].to_list()
    labels = [tuple(r) for r in configs.select(stage_names).iter_rows()]
    item_ids = items["item_id"].unique().sort()

    def matrix(column: str) -> np.ndarray:
        wide = items.pivot(on="config_id", index="item_id", values=column, aggregate_function="first")
        wide = item_ids.to_frame().join(wide, on="item_id", how="left")
        return wide.select(pl.col(config_ids).cast(pl.Float64)).to_numpy()

    groups = prefix_groups(labels)
    costs = [group_costs(matrix(f"latency_{s}_ms"), groups[k]) for k, s in enumerate(stage_names)]
    metrics = {m: matrix(m) for m, _, _ in sla.bounds()}
    return RecordedRun(
        config_ids, labels, matrix(objective.name), matrix(REPLAY_LATENCY), metrics, costs, groups
    )


def exhaustive_truth(run: RecordedRun, objective: Metric, sla: SLASpec) -> ExhaustiveTruth:
    """Means, p95s, SLA, best and Pareto front as the exhaustive run's own tables compute them."""
    sign = 1.0 if objective.higher_is_better else -1.0
    frame = pl.DataFrame(
        {
            "config_id": run.config_ids,
            "objective": np.nanmean(run.scores, axis=0),
            "latency_p95_ms": [float(np.nanquantile(c, 0.95)) for c in run.latency.T],
            **{m: np.nanmean(v, axis=0) for m, v in run.metrics.items()},
        }
    )
    frame = results.with_sla(frame, sla)
    passing = frame["sla_pass"].to_numpy()
    front = np.zeros(len(run.config_ids), dtype=bool)
    if passing.any():
        flagged = results.with_pareto(frame.filter(pl.col("sla_pass")), objective)
        front = np.isin(run.config_ids, flagged.filter(pl.col("pareto"))["config_id"].to_list())
    oriented, p95 = sign * frame["objective"].to_numpy(), frame["latency_p95_ms"].to_numpy()
    return ExhaustiveTruth(oriented, p95, best_of(oriented, p95, passing), front, passing)


def best_of(objective: np.ndarray, p95: np.ndarray, candidates: np.ndarray) -> int | None:
    """The candidate with the highest (oriented) objective; the lower p95 of equals."""
    found = np.flatnonzero(candidates)
    if not len(found):
        return None
    return int(min(found, key=lambda c: (-objective[c], p95[c], c)))


def replay_order(
    racing: Racing,
    run: RecordedRun,
    truth: ExhaustiveTruth,
    objective: Metric,
    sla: SLASpec,
    metrics: dict[str, Metric],
    seed: int,
) -> dict[str, Any]:
    """One simulated race over the items in the order `seed` gives."""
    race = racing.new_race(run.config_ids, objective, sla, metrics, run.n_items)
    order, step = racing.order(run.n_items, seed), racing.settings.look_every
    spent = 0.0
    for start in range(0, run.n_items, step):
        block = order[start : start + step]
        spent += live_cost([c[block] for c in run.stage_costs], run.groups, race.live).sum()
        race.add(run.scores[block], run.latency[block], {m: v[block] for m, v in run.metrics.items()})
        if start + step < run.n_items:
            race.look()
    everything = live_cost(run.stage_costs, run.groups, np.ones(len(run.config_ids), dtype=bool)).sum()
    return {
        "seed": seed,
        "engine_fraction": round(float(spent / everything), 4),
        **judge(race.live, truth, run, racing.settings.tolerance),
        "last_drop_after_items": max((d["dropped_after_items"] for d in race.drops), default=None),
    }


def judge(
    survivors: np.ndarray, truth: ExhaustiveTruth, run: RecordedRun, tolerance: float
) -> dict[str, Any]:
    """The race's pick among its survivors (by the exhaustive run's numbers, as the final ranking sees them:
    survivors ran on every item), its gap to the exhaustive best, and the share of the front kept."""
    pick = best_of(truth.objective, truth.p95, survivors & truth.sla_pass)
    best = truth.best
    gap = None if pick is None or best is None else float(truth.objective[best] - truth.objective[pick])
    front = truth.front.sum()
    return {
        "survivors": int(survivors.sum()),
        "pick": None if pick is None else run.config_ids[pick],
        "gap_to_best": gap,
        "within_tolerance": (pick is None) == (best is None) and (gap is None or gap <= tolerance + 1e-12),
        "pareto_share": float((truth.front & survivors).sum() / front) if front else None,
    }


def replay(
    racing: Racing,
    items: pl.DataFrame,
    stage_names: list[str],
    objective: Metric,
    sla: SLASpec,
    metrics: dict[str, Metric],
    orders: int = 20,
) -> dict[str, Any]:
    """Replay `racing` over `orders` seeded item orders (seeds racing.seed, racing.seed + 1, ...) of an
    exhaustive run's items; per order and summarised."""
    run = record(items, stage_names, objective, sla)
    truth = exhaustive_truth(run, objective, sla)
    per_order = [
        replay_order(racing, run, truth, objective, sla, metrics, racing.seed + i) for i in range(orders)
    ]
    return {"summary": summarise(per_order, run, truth), "orders": per_order}


def summarise(per_order: list[dict[str, Any]], run: RecordedRun, truth: ExhaustiveTruth) -> dict[str, Any]:
    fractions = np.array([o["engine_fraction"] for o in per_order])
    shares = [o["pareto_share"] for o in per_order if o["pareto_share"] is not None]
    best = truth.best
    return {
        "orders": len(per_order),
        "n_items": run.n_items,
        "n_configs": len(run.config_ids),
        "exhaustive_best": None if best is None else run.config_ids[best],
        "exhaustive_pareto_size": int(truth.front.sum()),
        "engine_fraction_mean": round(float(fractions.mean()), 4),
        "engine_fraction_max": round(float(fractions.max()), 4),
        "picks_within_tolerance": sum(bool(o["within_tolerance"]) for o in per_order),
        "pareto_share_mean": round(float(np.mean(shares)), 4) if shares else None,
        "pareto_share_min": round(float(np.min(shares)), 4) if shares else None,
    }
