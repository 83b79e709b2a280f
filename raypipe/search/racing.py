"""Racing: one streaming execution over the items in a seeded random order, dropping configurations as soon
as they are out with confidence, so the engine stops spending on them while the items still flow.

The race pulls the run's result stream; after every `look_every` new complete items it updates the race
(`race_state`) and tells the stream, through `drop`, which configurations the actors may skip.

- `keep="best"` (the default) races by the decision rule itself (`decide.decision`): at each look it drops
  what the rule excludes (missing the SLA with confidence, or more than epsilon below a configuration that
  meets it with confidence). Every test of the rule is anytime-valid, so the looks cost nothing and a
  dropped configuration is one the final decision would exclude too. With `until_decided` the run stops
  as soon as the rule certifies its pick, and a generated dataset grows with fresh items up to
  `max_items`. During the race the SLA's latency is each row's `cpu_total_ms` (the calibrated service
  time exists only after the run; CPU time barely moves with how many configurations share the cores);
  the final table re-judges it on service time.
- `keep="pareto"` drops only configurations dominated with confidence on both the objective and p95 (Holm
  across configurations), and those missing the SLA on its bounds, with `alpha` split over those rules, so
  the whole front survives.

`tolerance` is no longer a drop rule (the decision's epsilon is): replay still judges picks within it.
Drops reach the actors from their next batch, so items already in flight still finish: with stages of
microseconds (the digits task) the stream can run far ahead of the driver.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.decide.decision import Decision, DecisionSettings
from raypipe.errors import ConfigError
from raypipe.search.base import ResultStream, Search, SearchContext, SearchOutcome
from raypipe.search.costs import CostTracker
from raypipe.search.race_state import Race, RaceSettings
from raypipe.spec import columns
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric, Task

RACE_LATENCY = "cpu_total_ms"


class Racing(Search):
    """Race the configurations over a seeded shuffle of the items; see the module docstring."""

    name: ClassVar[str] = "racing"
    max_batch_size: ClassVar[int | None] = 4

    def __init__(
        self,
        alpha: float = 0.05,
        tolerance: float = 0.01,
        keep: str = "best",
        look_every: int = 10,
        seed: int = 0,
        until_decided: bool = False,
        max_items: int | None = None,
    ):
        problems = []
        if not 0 < alpha < 1:
            problems.append(f"alpha: {alpha} is not between 0 and 1 (the chance of a wrong drop, e.g. 0.05)")
        if tolerance < 0:
            problems.append(f"tolerance: {tolerance} is negative (on the objective's scale, e.g. 0.01)")
        if keep not in ("best", "pareto"):
            problems.append(f"keep: '{keep}' is neither 'best' nor 'pareto'")
        if look_every < 1:
            problems.append(f"look_every: {look_every} is not a positive number of items")
        if max_items is not None and max_items < 1:
            problems.append(f"max_items: {max_items} is not a positive number of items")
        if until_decided and keep != "best":
            problems.append("until_decided: a run stops once a pick is certified, which needs keep=best")
        if problems:
            raise ConfigError(problems, source="racing's parameters")
        self.settings = RaceSettings(alpha, tolerance, keep, look_every)  # type: ignore[arg-type]
        self.seed = seed
        self.until_decided, self.max_items = until_decided, max_items

    def new_race(
        self, config_ids: list[str], objective: Metric, sla: SLASpec, metrics: dict[str, Metric], n_items: int
    ) -> Race:
        """A race with these settings (`metrics`: the catalogue entries of the SLA's metrics); live racing
        and replay both start here."""
        return Race(config_ids, objective, sla, metrics, n_items, self.settings)

    def order(self, n_items: int, seed: int | None = None) -> np.ndarray:
        """The seeded random order the items race in."""
        return np.random.default_rng(self.seed if seed is None else seed).permutation(n_items)

    def run(self, ctx: SearchContext) -> SearchOutcome:
        self.settings = replace(
            self.settings, decision=DecisionSettings(ctx.spec.decision.epsilon, ctx.spec.decision.delta)
        )
        table = ctx.table.take(pa.array(self.order(ctx.table.num_rows)))
        cap = self.max_items or (None if not self.until_decided else table.num_rows)
        table = table.slice(0, cap) if cap else table
        race = self.new_race(
            [c.config_id for c in ctx.configs],
            ctx.objective,
            ctx.spec.sla,
            sla_metrics(ctx.task, ctx.spec.sla),
            cap or table.num_rows,
        )
        feed = LiveFeed(race, list(ctx.configs[0].stage_names), [c.labels for c in ctx.configs])
        feed.stop_when_certified = self.until_decided
        feed.consume(ctx.stream(table, list(range(len(ctx.configs)))))
        round_ = 0
        while self.until_decided and not feed.certified and race.live.any():
            round_ += 1
            extra = more_items(ctx, (cap or 0) - race.items_seen, round_)
            if extra is None:
                break
            feed.consume(ctx.stream(extra, [int(c) for c in np.flatnonzero(race.live)]))
        ruled = race.decide()
        summary = self.summary(race, feed, race.items_seen)
        summary["stopped"] = self.stopped(ruled, race.items_seen, ctx.dataset.num_rows, feed.certified)
        return SearchOutcome(self.name, race.drops, race.looks, summary)

    def stopped(self, ruled: Decision, seen: int, available: int, certified_live: bool) -> str:
        """What the terminal and the manifest say about when the race stopped."""
        if certified_live:
            return f"certified after {seen} of {available} items"
        if ruled.status == "certified":
            return f"certified after all {seen} items"
        why = "--max-items reached" if self.max_items and seen >= self.max_items else "the data ended"
        return f"{ruled.status} after {seen} items ({why})"

    def summary(self, race: Race, feed: LiveFeed, n_items: int) -> dict[str, Any]:
        pick = race.pick()
        exhaustive = feed.costs.exhaustive_per_item() * n_items
        return {
            "alpha": self.settings.alpha,
            "tolerance": self.settings.tolerance,
            "keep": self.settings.keep,
            "look_every": self.settings.look_every,
            "seed": self.seed,
            "alpha_per_rule": race.alpha,
            "looks": len(race.looks),
            "survivors": [race.config_ids[c] for c in np.flatnonzero(race.live)],
            "pick": None if pick is None else race.config_ids[pick],
            "race_latency": f"{RACE_LATENCY} (per-call CPU time during the race)",
            "cpu_seconds_spent": round(feed.costs.spent / 1000.0, 3),
            "exhaustive_cpu_seconds_estimate": round(exhaustive / 1000.0, 3),
            # CPU-seconds of the (stage, prefix) calls, so cache hits and contention do not skew the ratio.
            "engine_fraction": round(feed.costs.spent / exhaustive, 4) if exhaustive > 0 else None,
        }


def more_items(ctx: SearchContext, n: int, round_: int) -> pa.Table | None:
    """More items from the task's generator for a run until decided (None when the dataset has no
    generator or no more are wanted): fresh seeds, ids never seen in the run."""
    generate = ctx.spec.dataset.generate
    if generate is None or n <= 0 or ctx.request_dataset is not None:
        return None
    table = ctx.task.generate(generate.profile, n, generate.seed + 7919 * round_, **generate.params)
    known = pa.array(ctx.dataset.column("item_id").to_pylist(), pa.string())
    table = table.filter(pc.invert(pc.is_in(table.column("item_id"), known)))
    ctx.dataset = pa.concat_tables([ctx.dataset, table.select(ctx.dataset.column_names)])
    return table


def sla_metrics(task: Task, sla: SLASpec) -> dict[str, Metric]:
    """The task's catalogue entries of the metrics the SLA bounds."""
    return {name: task.metric(name) for name, _, _ in sla.bounds()}


class LiveFeed:
    """Turns streamed result batches into the race's per-item arrays, and looks every `look_every` items."""

    def __init__(self, race: Race, stage_names: list[str], labels: list[tuple[str, ...]]):
        self.race, self.stage_names = race, stage_names
        self.costs = CostTracker(labels)
        self.metric_names = list(race.metrics)
        wanted = [
            race.objective.name,
            RACE_LATENCY,
            *self.metric_names,
            *[columns.stage_ms("cpu", s) for s in stage_names],
        ]
        self.columns = list(dict.fromkeys(wanted))
        self.pending: list[pl.DataFrame] = []
        self.seen: set[str] = set()
        self.stop_when_certified = False
        self.certified = False

    def consume(self, stream: ResultStream) -> None:
        """Pull the stream to its end, or until the race certifies its pick (with `stop_when_certified`);
        drops go back to the stream as the race decides them."""
        for batch in stream:
            dropped = self.take(batch)
            if self.certified:
                stream.drop([int(c) for c in np.flatnonzero(self.race.live)])
                return  # the rest of the stream is not needed
            if dropped:
                stream.drop(dropped)
        self.flush()

    def take(self, batch: pa.Table) -> list[int]:
        """Take a result batch and look when `look_every` new items are complete: the configurations the
        look dropped (`certified` says whether the pick is certified)."""
        rows = pl.from_arrow(batch.select(["item_id", "config_index", *self.columns]))
        rows = rows.filter(~pl.col("item_id").is_in(list(self.seen)))  # a retried batch's repeats
        self.pending.append(rows)
        new = pl.concat(self.pending)["item_id"].n_unique()
        if self.race.items_seen + new >= self.race.n_items:
            self.flush()  # the last items: nothing left to save, so no look (as in replay)
            return []
        if new < self.race.settings.look_every:
            return []
        dropped = self.look()
        if self.stop_when_certified and self.race.decision is not None:
            self.certified = self.race.decision.status == "certified"
        return dropped

    def look(self) -> list[int]:
        self.flush()
        return self.race.look()

    def flush(self) -> None:
        """Hand the pending items to the race (and the cost account) without deciding."""
        if not self.pending:
            return
        rows = pl.concat(self.pending)
        self.pending = []
        self.seen.update(rows["item_id"].unique().to_list())
        arrays = item_arrays(rows, len(self.race.config_ids), self.columns)
        metrics = {m: arrays[m] for m in self.metric_names}
        self.race.add(arrays[self.race.objective.name], arrays[RACE_LATENCY], metrics)
        self.costs.add([arrays[columns.stage_ms("cpu", s)] for s in self.stage_names])


def item_arrays(rows: pl.DataFrame, n_configs: int, columns: list[str]) -> dict[str, np.ndarray]:
    """Per column, an (items, K) float array in the items' first-arrival order; NaN where there is no row."""
    items = rows["item_id"].unique(maintain_order=True)
    position = rows["item_id"].replace_strict(items, pl.int_range(len(items), eager=True)).to_numpy()
    config = rows["config_index"].to_numpy()
    arrays = {}
    for name in columns:
        out = np.full((len(items), n_configs), np.nan)
        out[position, config] = rows[name].cast(pl.Float64).fill_null(math.nan).to_numpy()
        arrays[name] = out
    return arrays
