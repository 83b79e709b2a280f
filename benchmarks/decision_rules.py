"""The rules the decision benchmark compares, each on (items, configurations) arrays of a truth run's items.

- `decision`: raypipe's rule (`raypipe.decide.decision`), fed the items in their (random) order.
- `previous`: the rule before issue 16 (`rank`, `tied_with` and `by_speed` of raypipe/decide/results.py at
  ad55b23): the SLA on point estimates; the best SLA-meeting configuration and every one a one-sided exact
  sign test at 5 % cannot tell below it form a group; rank 1 is its fastest p95 (p95s within 2 % count as
  equal and go by the objective). With nothing meeting the SLA, rank 1 was the best objective.
- `argmax`: the best objective among the configurations that meet the SLA on point estimates.
- `asha`: Ray Tune's ASHA (`ASHAScheduler(max_t, grace_period=1, reduction_factor=4)`, as
  benchmarks/tune.py runs it) simulated offline: the items in chunks are Tune's iterations; trials report
  in grid order, each compared at a rung with the trials recorded there before it (Ray's asynchronous
  cutoff, `np.nanpercentile` at 1 - 1/rf); the pick is taken as table 1 takes Tune's: the best SLA-meeting
  configuration, on point estimates, among the trials that ran every item.
- `until_decided`: `--until-decided` simulated: looks of `look` items fed to `decision.Evidence`,
  `decide` at each look, the configurations it excludes masked (no rows) from then on, stop when certified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from raypipe.decide import stats
from raypipe.decide.decision import DecisionSettings, Evidence, decide
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric

PREVIOUS_ALPHA = 0.05  # results.TIE_ALPHA at ad55b23
PREVIOUS_SAME_P95 = 0.02  # results.SAME_P95 at ad55b23


@dataclass(frozen=True)
class Pool:
    """A truth run's items as arrays (items, K): the objective's raw scores, latency_total_ms, SLA metrics."""

    config_ids: list[str]
    objective: Metric
    sla: SLASpec
    metrics: dict[str, Metric]
    scores: np.ndarray
    latency: np.ndarray
    values: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return self.scores.shape[0]

    def take(self, rows: np.ndarray) -> Pool:
        """The items `rows`, in that order."""
        values = {m: v[rows] for m, v in self.values.items()}
        return replace(self, scores=self.scores[rows], latency=self.latency[rows], values=values)

    def oriented(self) -> np.ndarray:
        return self.scores * (1.0 if self.objective.higher_is_better else -1.0)


@dataclass(frozen=True)
class Outcome:
    """What a rule said on one sample: its status, its pick, and the items and calls it used."""

    rule: str
    status: str  # certified | undecided | no_feasible (raypipe's rule); picked | none (the others)
    pick: str | None
    items: int
    evaluations: int  # (item, configuration) pairs evaluated


@dataclass(frozen=True)
class PointEstimates:
    """Per configuration: the oriented objective mean, the p95 (linear, as Polars) and the SLA verdict."""

    objective: np.ndarray
    p95: np.ndarray
    feasible: np.ndarray


def point_estimates(pool: Pool) -> PointEstimates:
    """What a run's table shows: means and p95 over the items, and the SLA judged on them."""
    with np.errstate(all="ignore"):
        objective = np.nanmean(pool.oriented(), axis=0)
        p95 = np.nanquantile(pool.latency, 0.95, axis=0)
        feasible = ~np.isnan(objective)
        if pool.sla.p95_latency_ms is not None:
            feasible &= p95 <= pool.sla.p95_latency_ms
        for metric, side, bound in pool.sla.bounds():
            mean = np.nanmean(pool.values[metric], axis=0)
            feasible &= (mean >= bound) if side == "min" else (mean <= bound)
    return PointEstimates(np.nan_to_num(objective, nan=-np.inf), p95, feasible)


def decision_rule(pool: Pool, settings: DecisionSettings) -> Outcome:
    """raypipe's rule on the items as a fixed-size run would feed them."""
    evidence = Evidence(pool.config_ids, pool.objective, pool.sla, pool.metrics, settings)
    evidence.add(pool.scores, pool.latency, pool.values)
    d = decide(evidence)
    return Outcome("decision", d.status, d.config_id, pool.size, pool.size * len(pool.config_ids))


def _best_first(est: PointEstimates, among: np.ndarray) -> list[int]:
    """Indices in `among`, best objective first, then the faster p95, then configuration order."""
    return sorted(np.flatnonzero(among).tolist(), key=lambda c: (-est.objective[c], est.p95[c], c))


def previous_rule(pool: Pool) -> Outcome:
    """Rank 1 of the table before issue 16: the fastest of the group a sign test cannot tell below best."""
    est = point_estimates(pool)
    done = Outcome("previous", "picked", None, pool.size, pool.size * len(pool.config_ids))
    passing = _best_first(est, est.feasible)
    if not passing:  # nothing met the SLA: rank 1 was the best objective of them all
        return replace(done, pick=pool.config_ids[_best_first(est, np.ones(len(est.feasible), bool))[0]])
    best, scores = passing[0], pool.oriented()
    group = [best]
    for other in passing[1:]:
        diff = scores[:, best] - scores[:, other]
        diff = diff[~np.isnan(diff)]
        if stats.sign_test_p(int((diff > 0).sum()), int((diff < 0).sum())) >= PREVIOUS_ALPHA:
            group.append(other)
    return replace(done, pick=pool.config_ids[fastest_of(group, est)])


def fastest_of(group: list[int], est: PointEstimates) -> int:
    """`by_speed`: p95 buckets (within 2 % of a bucket's fastest), the first bucket by the objective."""
    ordered = sorted(group, key=lambda c: est.p95[c])
    start, bucket, buckets = None, -1, []
    for c in ordered:
        if start is None or est.p95[c] > start * (1 + PREVIOUS_SAME_P95):
            bucket, start = bucket + 1, est.p95[c]
        buckets.append(bucket)
    return min(zip(buckets, ordered, strict=True), key=lambda bc: (bc[0], -est.objective[bc[1]]))[1]


def argmax_rule(pool: Pool) -> Outcome:
    """The best point estimate among the configurations that meet the SLA on point estimates."""
    est = point_estimates(pool)
    passing = _best_first(est, est.feasible)
    pick = pool.config_ids[passing[0]] if passing else None
    n = pool.size * len(pool.config_ids)
    return Outcome("argmax", "picked" if pick else "none", pick, pool.size, n)


def asha_milestones(max_t: int, grace: int = 1, rf: float = 4) -> list[int]:
    """Ray's ASHA rungs: grace x rf^k for k below int(log(max_t / grace) / log(rf) + 1)."""
    rungs = int(math.log(max_t / grace) / math.log(rf) + 1)
    return [int(grace * rf**k) for k in range(rungs)]


def asha_rule(pool: Pool, chunk: int, rf: float = 4) -> Outcome:
    """ASHA over the items in chunks of `chunk`; the pick among the trials that finished (see the module)."""
    n, k = pool.scores.shape
    max_t = math.ceil(n / chunk)
    recorded: dict[int, list[float]] = {m: [] for m in asha_milestones(max_t, 1, rf)}
    scores, ran = pool.oriented(), np.zeros(k, dtype=int)
    for c in range(k):
        for t in range(1, max_t + 1):
            ran[c] = t
            if t not in recorded:
                continue
            value = float(np.nanmean(scores[: t * chunk, c])) if t * chunk else 0.0
            cutoff = np.nanpercentile(recorded[t], (1 - 1 / rf) * 100) if recorded[t] else None
            recorded[t].append(value)
            if cutoff is not None and value < cutoff:
                break
    finished = ran == max_t
    est = point_estimates(pool)
    passing = _best_first(est, est.feasible & finished)
    pick = pool.config_ids[passing[0]] if passing else None
    evaluations = int(np.minimum(ran * chunk, n).sum())
    return Outcome("asha", "picked" if pick else "none", pick, n, evaluations)


def until_decided(
    pool: Pool, settings: DecisionSettings, look: int = 10, cap: int | None = None, mask: bool = True
) -> Outcome:
    """Feed `pool`'s items (already in a random order) in looks of `look` until certified, no configuration
    is feasible, or `cap` items; with `mask`, configurations the decision excludes get no rows afterwards."""
    evidence = Evidence(pool.config_ids, pool.objective, pool.sla, pool.metrics, settings)
    cap = min(cap or pool.size, pool.size)
    live, dropped, evaluations = np.ones(len(pool.config_ids), dtype=bool), {}, 0
    decision = None
    for start in range(0, cap, look):
        part = pool.take(np.arange(start, min(start + look, cap)))
        hide = np.where(live, 1.0, np.nan)[None, :]
        evidence.add(part.scores * hide, part.latency * hide, {m: v * hide for m, v in part.values.items()})
        evaluations += part.size * int(live.sum())
        decision = decide(evidence, dropped if mask else None)
        if decision.status != "undecided":
            break
        if mask:
            dropped = dict(decision.excluded)
            live = np.array([c not in dropped for c in pool.config_ids])
    if decision is None:
        raise ValueError("--until-decided on an empty pool")
    rule = "until-decided" if mask else "until-decided (no masking)"
    return Outcome(rule, decision.status, decision.config_id, evidence.n_items, evaluations)
