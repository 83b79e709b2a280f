"""The drop rules of `keep="pareto"` racing as pure functions on NumPy arrays (keep="best" races by
`raypipe.decide.decision`).

Racing looks at its data again and again (after every few items), so each test must stay valid however
often it is looked at and whichever configuration happens to lead: the tests are the anytime-valid
confidence sequences of `raypipe.decide.confseq` (betting for values in [0, 1], the asymptotic sequence
otherwise), re-exported here. p95 latency is bounded from order statistics (`decide.stats.quantile_bounds`)
with alpha split evenly over the planned looks (Bonferroni), since an order-statistic bound is not
anytime-valid.

Configurations are compared pairwise on the items both have seen (paired, like McNemar: every configuration
reads the same items). A configuration is dropped when its test against *some* rival rejects at a
Bonferroni share alpha/(K-1), K the number of configurations raced: the test is valid whichever rival
leads, so no leader is selected on the items it is tested on. Every member of the Pareto front must
survive, so Holm's step-down runs across the configurations on top (`holm`), keeping the chance of
dropping any front member under alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from raypipe.decide import stats
from raypipe.decide.confseq import (  # noqa: F401 - the tests racing reads, re-exported
    CLT_MIN_ITEMS,
    LAMBDA_CAP,
    Evidence,
    advance,
    clt_p_value,
    p_values,
)


def holm(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down: which hypotheses to reject so that the chance of any false rejection is <= alpha."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    passes = p[order] <= alpha / (len(p) - np.arange(len(p)))
    stop = len(p) if passes.all() else int(np.argmin(passes))
    reject = np.zeros(len(p), dtype=bool)
    reject[order[:stop]] = True
    return reject


def sorted_columns(latency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column sorted with its NaNs (unseen items) last, and how many values each column holds."""
    return np.sort(latency, axis=0), (~np.isnan(latency)).sum(axis=0)


def p95_points(sorted_latency: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per column, the p95 by linear interpolation (as Polars' and NumPy's quantile); inf with no values."""
    position = np.maximum(counts - 1, 0) * 0.95
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, np.maximum(counts - 1, 0))
    columns = np.arange(sorted_latency.shape[1])
    if not sorted_latency.shape[0]:
        return np.full(len(counts), np.inf)
    low, high = sorted_latency[below, columns], sorted_latency[above, columns]
    return np.where(counts > 0, low + (high - low) * (position - below), np.inf)


def p95_bounds(sorted_latency: np.ndarray, counts: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column: one-sided order-statistic bounds of the p95 (`stats.quantile_bounds`), each holding with
    probability 1 - alpha."""
    z = -NormalDist().inv_cdf(alpha)  # stats.z_for's 1 - alpha rounds to 1 below alpha ~ 1e-16
    bounds = [stats.quantile_bounds(sorted_latency[:n, c], 0.95, z) for c, n in enumerate(counts)]
    return np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])


def rival_p(pair_p: np.ndarray, eligible: np.ndarray, n_configs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per configuration X (row): the Bonferroni p-value over its rivals, min over eligible Y of
    (K - 1) p[X, Y], valid whichever Y leads; and that Y (-1 where none is eligible)."""
    masked = np.where(eligible, pair_p, np.inf)
    best = np.argmin(masked, axis=1)
    p = np.minimum(1.0, (n_configs - 1) * masked[np.arange(len(masked)), best])
    has = np.isfinite(masked).any(axis=1)
    return np.where(has, p, 1.0), np.where(has, best, -1)


# -- drop rules ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the drop rules read at one look; arrays indexed by configuration (K) or pair (K x K).

    `objective` is oriented (higher is better); `p95` is the racing latency's point estimate (it only
    orders a tie: the faster one stays); `feasible` says the point estimates meet the SLA, which lets a
    configuration lead or keep a tie but never drops anything."""

    live: np.ndarray
    objective: np.ndarray
    p95: np.ndarray
    feasible: np.ndarray
    worse_p: np.ndarray  # p[X, Y]: H0 "X is at least as good as Y"

    @property
    def size(self) -> int:
        return len(self.live)


def sla_drops(live: np.ndarray, p95_low: np.ndarray, p95_limit: float | None) -> np.ndarray:
    """Live configurations whose p95 lower bound exceeds the SLA's bound (bounds at the spent level)."""
    if p95_limit is None:
        return np.zeros(len(live), dtype=bool)
    return live & (p95_low > p95_limit)


def bound_drops(live: np.ndarray, bound_p: np.ndarray, alpha: float, across: bool) -> np.ndarray:
    """Live configurations that miss a metric bound with confidence: `bound_p` (K x B) holds anytime
    p-values of "meets bound b"; Bonferroni over the B bounds, and Holm across configurations if `across`."""
    drops = np.zeros(len(live), dtype=bool)
    if bound_p.shape[1] == 0 or not live.any():
        return drops
    p = np.minimum(1.0, bound_p.shape[1] * bound_p.min(axis=1))
    idx = np.flatnonzero(live)
    drops[idx[holm(p[idx], alpha) if across else p[idx] <= alpha]] = True
    return drops


def pareto_drops(snap: Snapshot, p95_low: np.ndarray, p95_high: np.ndarray, alpha: float) -> dict[int, int]:
    """Live configurations dominated with confidence by a live SLA-meeting one: better objective (the paired
    test) and lower p95 (its upper bound below the other's lower bound). {dropped: dominating}.

    Every member of the front is a hypothesis that must survive, so Holm's step-down runs across the
    configurations on top of the Bonferroni share over rivals."""
    others = ~np.eye(snap.size, dtype=bool)
    faster = p95_high[None, :] < p95_low[:, None]
    eligible = (snap.live & snap.feasible)[None, :] & faster & others
    return _reject_over_live(snap.live, snap.worse_p, eligible, alpha, across=True)


def _reject_over_live(
    live: np.ndarray, pair_p: np.ndarray, eligible: np.ndarray, alpha: float, across: bool
) -> dict[int, int]:
    """Live configurations whose Bonferroni-over-rivals p-value rejects at `alpha`, with Holm's step-down
    across them when `across`; {rejected: its rival}."""
    idx = np.flatnonzero(live)
    if len(idx) < 2:
        return {}
    p, rival = rival_p(pair_p, eligible, len(live))
    reject = holm(p[idx], alpha) if across else p[idx] <= alpha
    return {int(x): int(rival[x]) for x in idx[reject] if rival[x] >= 0}
