"""One race's state, fed complete items in order and asked to decide at each look: shared by live racing
and replay, so both take exactly the same decisions on the same numbers.

A `Race` knows configurations only by position (0..K-1) and items only as rows of arrays: per item and
configuration, the objective's score, the latency the SLA is judged on, and the SLA metrics (NaN where a
configuration has no row). keep="best" decides by `decide.decision` (the run's own rule); keep="pareto" by
`raypipe.search.stopping`'s Pareto rules. This module keeps the running evidence and records what it
dropped and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from raypipe.decide import decision
from raypipe.search import stopping
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric

Keep = Literal["best", "pareto"]


@dataclass(frozen=True)
class RaceSettings:
    """The knobs of a race (racing's `--search-param`s other than the seed)."""

    alpha: float = 0.05
    tolerance: float = 0.01
    keep: Keep = "best"
    look_every: int = 10
    decision: decision.DecisionSettings = field(default_factory=decision.DecisionSettings)

    def rules(self, sla: SLASpec) -> list[str]:
        """keep="pareto": the rules that can drop a configuration; alpha is split evenly between them (a
        union bound). keep="best" races by the decision rule, whose delta is split inside it."""
        if self.keep == "best":
            return ["decision"]
        rules = ["objective", "latency"]
        if sla.p95_latency_ms is not None or sla.bounds():
            rules.append("sla")
        return rules


@dataclass
class MetricBound:
    """One SLA bound on a metric's mean and the evidence that a configuration misses it."""

    metric: str
    side: str  # "min" | "max"
    value: float
    evidence: stopping.Evidence


@dataclass
class Race:
    """A race over `config_ids`: call `add` with new complete items, then `look` for the new drops."""

    config_ids: list[str]
    objective: Metric
    sla: SLASpec
    metrics: dict[str, Metric]  # the catalogue entries of the SLA's metrics
    n_items: int
    settings: RaceSettings = field(default_factory=RaceSettings)

    def __post_init__(self) -> None:
        k, s = len(self.config_ids), self.settings
        self.live = np.ones(k, dtype=bool)
        self.items_seen = 0
        self.alpha = dict.fromkeys(s.rules(self.sla), s.alpha / len(s.rules(self.sla)))
        self.n_looks = max(1, math.ceil(self.n_items / s.look_every))
        bounded = self.objective.interval == "wilson"
        self.worse = stopping.Evidence.start((k, k), *((-1.0, 1.0) if bounded else (None, None)))
        self.bounds = [self._bound(m, side, v) for m, side, v in self.sla.bounds()]
        self.score_sum, self.score_n = np.zeros(k), np.zeros(k)
        self.metric_sum = {m: np.zeros(k) for m in self.metrics}
        self.metric_n = {m: np.zeros(k) for m in self.metrics}
        self.latency: list[np.ndarray] = []
        self.drops: list[dict] = []
        self.looks: list[dict] = []
        # keep="best" races by the decision rule itself: it drops what the rule excludes, so a run that stops
        # once the rule certifies carries the rule's guarantee (raypipe.decide.decision)
        self.evidence = decision.Evidence(
            self.config_ids, self.objective, self.sla, self.metrics, self.settings.decision
        )
        self.decision: decision.Decision | None = None

    def _bound(self, metric: str, side: str, value: float) -> MetricBound:
        # H0 "meets the bound" as E[x] <= 0: x = bound - score for a min, score - bound for a max.
        bounded = self.metrics[metric].interval == "wilson"
        low, high = (value - 1.0, value) if side == "min" else (-value, 1.0 - value)
        evidence = stopping.Evidence.start(
            (len(self.config_ids),), *((low, high) if bounded else (None, None))
        )
        return MetricBound(metric, side, value, evidence)

    # -- data ---------------------------------------------------------------------------------------------
    def add(self, scores: np.ndarray, latency: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
        """New complete items, in arrival order: arrays of shape (items, K), NaN where a configuration has
        no row (dropped ones). `scores` are the objective's raw values."""
        raw = np.where(self.live, np.asarray(scores, dtype=float), np.nan)
        live_metrics = {
            m: np.where(self.live, np.asarray(v, dtype=float), np.nan) for m, v in metrics.items()
        }
        self.evidence.add(raw, np.where(self.live, np.asarray(latency, dtype=float), np.nan), live_metrics)
        scores = raw * (1.0 if self.objective.higher_is_better else -1.0)  # dropped: late rows count no more
        idx = np.flatnonzero(self.live)
        if self.settings.keep == "pareto":  # keep="best" compares through self.evidence alone
            block = np.ix_(idx, idx)
            diff = scores[:, None, idx] - scores[:, idx, None]  # [item, X, Y] = s_Y - s_X
            self.worse = _advance_block(self.worse, diff, block)
        for bound in self.bounds:
            values = np.asarray(metrics[bound.metric], dtype=float)[:, idx]
            x = bound.value - values if bound.side == "min" else values - bound.value
            bound.evidence = _advance_block(bound.evidence, x, (idx,))
        self._accumulate(scores, latency, metrics)

    def _accumulate(self, scores: np.ndarray, latency: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
        self.items_seen += len(scores)
        self.score_sum += np.nansum(scores, axis=0)
        self.score_n += (~np.isnan(scores)).sum(axis=0)
        for name in self.metrics:
            values = np.asarray(metrics[name], dtype=float)
            self.metric_sum[name] += np.nansum(values, axis=0)
            self.metric_n[name] += (~np.isnan(values)).sum(axis=0)
        self.latency.append(np.where(self.live, np.asarray(latency, dtype=float), np.nan))

    # -- estimates ----------------------------------------------------------------------------------------
    def objective_means(self) -> np.ndarray:
        """Oriented (higher is better) objective means so far."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.score_sum / self.score_n

    def _latency_matrix(self) -> np.ndarray:
        return np.vstack(self.latency) if self.latency else np.full((0, len(self.config_ids)), np.nan)

    def feasible(self, p95: np.ndarray) -> np.ndarray:
        """Point estimates meet the SLA (who may lead or keep a tie; never a reason to drop)."""
        ok = np.ones(len(self.config_ids), dtype=bool)
        if self.sla.p95_latency_ms is not None:
            ok &= p95 <= self.sla.p95_latency_ms
        for metric, side, value in self.sla.bounds():
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = self.metric_sum[metric] / self.metric_n[metric]
            ok &= (mean >= value) if side == "min" else (mean <= value)
        return ok

    def snapshot(self) -> stopping.Snapshot:
        """What the rules read now (sorts the latencies once)."""
        self.sorted_latency = stopping.sorted_columns(self._latency_matrix())
        p95 = stopping.p95_points(*self.sorted_latency)
        return stopping.Snapshot(
            self.live.copy(),
            np.nan_to_num(self.objective_means(), nan=-np.inf),
            p95,
            self.feasible(p95),
            stopping.p_values(self.worse),
        )

    def pick(self, snap: stopping.Snapshot | None = None) -> int | None:
        """keep="best": the decision rule's pick (certified or provisional); keep="pareto": the live
        configuration meeting the SLA on point estimates with the best objective so far."""
        if self.settings.keep == "best":
            ruled = self.decision or self.decide()
            return None if ruled.config_id is None else self.config_ids.index(ruled.config_id)
        snap = snap or self.snapshot()
        candidates = np.flatnonzero(self.live & snap.feasible)
        if not len(candidates):
            return None
        return int(min(candidates, key=lambda c: (-snap.objective[c], snap.p95[c], c)))

    # -- decisions ----------------------------------------------------------------------------------------
    def decide(self) -> decision.Decision:
        """The decision rule on the items seen so far, configurations dropped earlier staying excluded."""
        dropped = {d["config_id"]: d["drop_reason"] for d in self.drops}
        self.decision = decision.decide(self.evidence, dropped)
        return self.decision

    def look(self) -> list[int]:
        """Apply the drop rules to the items seen so far; returns the configurations newly dropped."""
        snap = self.snapshot()
        if self.settings.keep == "pareto":
            reasons = self._sla_reasons(snap)
            reasons |= self._pareto_reasons(_without(snap, reasons))
        else:
            ruled = self.decide()
            reasons = {
                c: f"excluded by the decision rule: {ruled.excluded[self.config_ids[c]]}"
                for c in np.flatnonzero(self.live)
                if self.config_ids[c] in ruled.excluded
            }
        for config, reason in sorted(reasons.items()):
            self.live[config] = False
            self.drops.append(
                {
                    "config_id": self.config_ids[config],
                    "dropped_after_items": self.items_seen,
                    "drop_reason": reason,
                }
            )
        self.looks.append(self._look_record(snap, sorted(reasons)))
        return sorted(reasons)

    def _sla_reasons(self, snap: stopping.Snapshot) -> dict[int, str]:
        if "sla" not in self.alpha:
            return {}
        limit = self.sla.p95_latency_ms
        share = self.alpha["sla"] / (int(limit is not None) + len(self.bounds))
        reasons = {}
        if limit is not None:  # an order-statistic bound is not anytime-valid: split alpha over the looks
            low, _ = stopping.p95_bounds(*self.sorted_latency, share / self.n_looks)
            for c in np.flatnonzero(stopping.sla_drops(snap.live, low, limit)):
                reasons[int(c)] = f"SLA: p95 lower bound {low[c]:.3g} ms > {limit:g} ms"
        if self.bounds:
            bound_p = np.column_stack([stopping.p_values(b.evidence) for b in self.bounds])
            live = snap.live & ~np.isin(np.arange(snap.size), list(reasons))
            across = self.settings.keep == "pareto"
            for c in np.flatnonzero(stopping.bound_drops(live, bound_p, share * len(self.bounds), across)):
                b = self.bounds[int(np.argmin(bound_p[c]))]
                mean = self.metric_sum[b.metric][c] / max(self.metric_n[b.metric][c], 1)
                word = "below min" if b.side == "min" else "above max"
                reasons[int(c)] = f"SLA: {b.metric} {word} {b.value:g} with confidence (mean {mean:.3f})"
        return reasons

    def _pareto_reasons(self, snap: stopping.Snapshot) -> dict[int, str]:
        share = self.alpha["latency"] / (self.n_looks * len(self.config_ids))
        low, high = stopping.p95_bounds(*self.sorted_latency, share)
        found = stopping.pareto_drops(snap, low, high, self.alpha["objective"])
        return {c: self._compare(c, r, "Pareto: dominated with confidence by") for c, r in found.items()}

    def _compare(self, config: int, rival: int, words: str) -> str:
        means = self.objective_means() * (1.0 if self.objective.higher_is_better else -1.0)
        name = self.objective.name
        return (
            f"{words} {self.config_ids[rival]} ({name} {means[config]:.3f} vs {means[rival]:.3f} "
            f"on {self.items_seen} items)"
        )

    def _look_record(self, snap: stopping.Snapshot, dropped: list[int]) -> dict:
        leader = self.pick(snap)
        raw = self.objective_means() * (1.0 if self.objective.higher_is_better else -1.0)
        return {
            "look": len(self.looks) + 1,
            "items": self.items_seen,
            "status": None if self.decision is None else self.decision.status,
            "live": int(self.live.sum()),
            "dropped": ",".join(self.config_ids[c] for c in dropped),
            "leader": None if leader is None else self.config_ids[leader],
            "leader_objective": None if leader is None else float(raw[leader]),
            "leader_p95_ms": None if leader is None else float(snap.p95[leader]),
        }


def _without(snap: stopping.Snapshot, dropped: dict[int, str]) -> stopping.Snapshot:
    live = snap.live.copy()
    live[list(dropped)] = False
    return stopping.Snapshot(live, snap.objective, snap.p95, snap.feasible, snap.worse_p)


def _advance_block(evidence: stopping.Evidence, x: np.ndarray, block: tuple) -> stopping.Evidence:
    """Advance only the cells in `block` (the live configurations), leaving the others frozen."""
    sub = stopping.Evidence(
        evidence.low,
        evidence.high,
        evidence.n[block],
        evidence.total[block],
        evidence.total_sq[block],
        evidence.log_wealth[block],
        evidence.min_p[block],
    )
    sub = stopping.advance(sub, x)
    arrays = {}
    for name in ("n", "total", "total_sq", "log_wealth", "min_p"):
        full = getattr(evidence, name).copy()
        full[block] = getattr(sub, name)
        arrays[name] = full
    return stopping.Evidence(evidence.low, evidence.high, **arrays)
