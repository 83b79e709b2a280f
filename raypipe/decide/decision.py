"""The decision rule: which configuration to deploy, with a stated guarantee, or an honest "not yet".

**Certified** means: with probability at least 1 - delta, the pick meets the SLA and its objective is within
epsilon of the best configuration that meets the SLA. Every statement the rule relies on is a one-sided
test from `raypipe.decide.confseq`: anytime-valid (confidence sequences: betting for scores in [0, 1], the
asymptotic sequence of Waudby-Smith et al. for unbounded ones), so the same rule is valid after a fixed-size
run and at every look of a run that stops as soon as it is decided (`--until-decided`). The tests:

- SLA, per configuration and bound, both ways: "meets" and "misses" with confidence, else undecided. The
  p95 bound is the order-statistic test in betting form: p95 <= L exactly when at most 5 % of the items
  exceed L, so the test is on the share of items over L (distribution-free, as an order-statistic interval).
  A metric bound tests the metric's mean against it.
- Objective, per ordered pair (i, j): "i is more than epsilon below j" (`far`) and "j is not better than
  i by epsilon or more" (`near`).

Which statements can make a pick wrong? Let k* be the best SLA-meeting configuration. A pick is wrong only
if some SLA statement is false (a "meets" for the pick or a "misses" for k*), or a `near` statement about
k* is false (near[p, k*] for the pick p), or k* was excluded by a false `far[k*, r]`. So only the 2(K - 1)
comparisons that involve k* matter (Hsu's multiple comparisons with the best): each pairwise test runs at
delta_obj / (2(K - 1)) and each SLA test at delta_sla / (K x bounds), Bonferroni, with delta split evenly
between the objective and the SLA when there is one.

- Excluded: confidently missing the SLA, or confidently more than epsilon below a configuration that
  confidently meets it: such a configuration can be neither the best nor a certified pick. (One that is
  confidently worse by less than epsilon stays: it may be the cheapest certified pick.)
- Certified group: confidently meets the SLA, and within epsilon of every configuration not excluded (k* is
  excluded only through a false statement, which the budget already counts). Among them the cheapest
  wins where the latency evidence separates them (p95 intervals apart, or a paired per-item comparison;
  and p95s more than `SAME_P95` apart, the run-to-run noise measured in BENCHMARKS.md); otherwise the
  higher objective wins.
- Undecided: the candidates are the configurations not excluded; the provisional pick is the best point
  estimate among them (never the fastest of a group that merely was not shown worse), and `items_needed`
  projects, from the evidence so far, how many more items the slowest blocking test needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from raypipe.decide import confseq, stats
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric

Status = Literal["certified", "undecided", "no_feasible"]
QUANTILE = 0.95
# Two p95s count as different only when their intervals separate and they differ by more than this share:
# BENCHMARKS.md measured the same configuration's p95 move by up to 14.8 % between repeats.
SAME_P95 = 0.15
# A projection of the items a test still needs is a rough guess; this covers the bet's learning phase.
PROJECTION_SLACK = 1.25
# "Cheaper" is not part of the guarantee (any certified configuration keeps it): a plain 5 % test decides it.
PAIRED_ALPHA = 0.05


@dataclass(frozen=True)
class DecisionSettings:
    """epsilon: how far below the best a pick may be; delta: the chance the guarantee may fail."""

    epsilon: float = 0.02
    delta: float = 0.05


@dataclass(frozen=True)
class Decision:
    """The outcome of the rule on one set of items (a run, a slice cell or a mix)."""

    status: Status
    config_id: str | None
    epsilon: float
    delta: float
    n_items: int
    candidates: list[str]
    certified: list[str]
    items_needed: int | None
    reason: str
    excluded: dict[str, str] = field(default_factory=dict)
    sla_status: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("excluded")
        out.pop("sla_status")
        return out

    def row_status(self, config_id: str) -> str:
        """pick | certified | candidate | excluded, for the results table."""
        if config_id == self.config_id:
            return "pick"
        if config_id in self.certified:
            return "certified"
        return "candidate" if config_id in self.candidates else "excluded"

    def headline(self) -> str:
        """One line for people: what was decided, on how much data, and what would decide it."""
        share = f"epsilon {self.epsilon:g}, delta {self.delta:g}"
        if self.status == "certified":
            return (
                f"certified after {self.n_items} items: {self.config_id} is within {self.epsilon:g} of the "
                f"best SLA-meeting configuration and meets the SLA, with probability >= {1 - self.delta:g}"
            )
        if self.status == "no_feasible":
            return f"no configuration can meet the SLA ({self.reason}; {share})"
        more = (
            f"about {self.items_needed} more items would decide"
            if self.items_needed is not None
            else "the estimates so far do not point to a decision at any size"
        )
        return (
            f"undecided after {self.n_items} items ({share}): {len(self.candidates)} candidates, "
            f"provisional pick {self.config_id}; {self.reason}; {more}"
        )


@dataclass(frozen=True)
class Levels:
    """The level of each test, from delta and the number of configurations and SLA bounds."""

    pair: float
    sla: float

    @classmethod
    def of(cls, settings: DecisionSettings, n_configs: int, n_sla: int) -> Levels:
        objective_delta = settings.delta / 2 if n_sla else settings.delta
        pair = objective_delta / (2 * max(n_configs - 1, 1))
        sla = settings.delta / 2 / (n_configs * n_sla) if n_sla else 1.0
        return cls(pair, sla)


@dataclass
class SLATest:
    """Both one-sided tests of one SLA bound for every configuration."""

    name: str
    meets: confseq.Evidence
    misses: confseq.Evidence


# How many (item, X, Y) differences the pairwise tests are fed at once. One item over K configurations makes
# K x K of them (2.2 MB at 525 configurations), so a run's items go in blocks of about 8 MB: all 1,000
# items of a 525-configuration run at once took 2.2 GB an array (and 200 items already 1 GB of driver).
PAIR_CELLS_AT_ONCE = 1 << 20
BATCH_ROWS = 1 << 16  # rows of a run's items read into the (items, K) arrays at a time
# The most float64 cells of (items, K) arrays a finished run's rule and percentiles hold at once (32 MB): a
# larger run is read a block of items (the rule) or of configurations (percentiles) at a time, so the
# driver's memory does not grow with items x configurations (BENCHMARKS.md section 3).
ARRAY_CELLS_AT_ONCE = 1 << 22


class Evidence:
    """The running evidence of the rule over K configurations, fed items in order (NaN: no row)."""

    def __init__(
        self,
        config_ids: list[str],
        objective: Metric,
        sla: SLASpec,
        metrics: dict[str, Metric],
        settings: DecisionSettings | None = None,
        scale: float = 1.0,
        read_latency: Callable[[list[int]], np.ndarray] | None = None,
    ):
        """`scale`: the largest item weight `add` will be given (1 without weights): bounded values range
        over [0, scale] once weighted. `read_latency`: where the p95s read a block of configurations'
        latency columns, (items, len(block)), instead of keeping every item's latency (`decide_items`)."""
        self.config_ids, self.objective, self.sla = list(config_ids), objective, sla
        self.settings = settings or DecisionSettings()
        self.scale = scale
        k, eps, w = len(self.config_ids), self.settings.epsilon, scale
        bounded = objective.interval == "wilson"
        self.far = confseq.Evidence.start((k, k), *((-w - eps, w - eps) if bounded else (None, None)))
        self.near = confseq.Evidence.start((k, k), *((eps - w, eps + w) if bounded else (None, None)))
        self.metric_bounds = [(m, side, v, metrics[m]) for m, side, v in sla.bounds()]
        self.tests = self._sla_tests(k)
        self.levels = Levels.of(self.settings, k, len(self.tests))
        self.n = np.zeros(k)
        self.score_sum = np.zeros(k)
        # wins[a, b]: items on which both ran and a was faster (the paired comparison of `cheapest`)
        self.wins = np.zeros((k, k), dtype=np.int64)
        self.read_latency = read_latency
        self.latency: list[np.ndarray] = []
        self.rows = 0  # items added, with or without rows for every configuration
        self.n_latency = np.zeros(k, dtype=np.int64)  # items with a latency, per configuration
        self._p95: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _sla_tests(self, k: int) -> list[SLATest]:
        tests = []
        if self.sla.p95_latency_ms is not None:
            q = 1 - QUANTILE  # x = q - over for "meets", over - q for "misses"
            meets = confseq.Evidence.start((k,), q - self.scale, q)
            tests.append(SLATest(f"p95 <= {self.sla.p95_latency_ms:g} ms", meets, _flip(meets, k)))
        for metric, side, value, entry in self.metric_bounds:
            if entry.interval == "wilson":
                over = (-value, self.scale - value)  # score - value
                meets = confseq.Evidence.start((k,), *(over if side == "min" else _neg(over)))
                misses = confseq.Evidence.start((k,), *(_neg(over) if side == "min" else over))
            else:
                meets = misses = confseq.Evidence.start((k,))
            sign = ">=" if side == "min" else "<="
            tests.append(SLATest(f"{metric} {sign} {value:g}", meets, misses))
        return tests

    # -- data ---------------------------------------------------------------------------------------------
    def add(
        self,
        scores: np.ndarray,
        latency: np.ndarray,
        metrics: dict[str, np.ndarray],
        weights: np.ndarray | None = None,
    ) -> None:
        """New items, in order: arrays (items, K) of the objective's raw scores, the latency the SLA is judged
        on and the SLA's metrics; NaN where a configuration has no row. `weights` (one per item, mean 1 over
        the run, at most `scale`) reweight the items to another mix: every mean becomes the mix's mean."""
        sign = 1.0 if self.objective.higher_is_better else -1.0
        scores, latency = np.asarray(scores, dtype=float), np.asarray(latency, dtype=float)
        weights = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
        eps, block = self.settings.epsilon, max(1, PAIR_CELLS_AT_ONCE // max(1, scores.shape[1] ** 2))
        for start in range(0, len(scores), block):  # the tests advance item by item: blocks change nothing
            rows = slice(start, start + block)
            w = weights[rows]
            s = scores[rows] * sign * w[:, None]
            diff = s[:, None, :] - s[:, :, None]  # [item, X, Y] = s_Y - s_X
            self.far = confseq.advance(self.far, diff - eps)
            del diff
            self.near = confseq.advance(self.near, eps + s[:, :, None] - s[:, None, :])
            block_metrics = {m: np.asarray(v, dtype=float)[rows] * w[:, None] for m, v in metrics.items()}
            times = latency[rows]
            self._add_sla(times, block_metrics, w)
            self.wins += (times[:, :, None] < times[:, None, :]).sum(axis=0)  # NaN compares False: both ran
            self.n += (~np.isnan(s)).sum(axis=0)
            self.score_sum += np.nansum(s, axis=0)
        if self.read_latency is None:
            self.latency.append(latency)
        self.rows += len(scores)
        self.n_latency += (~np.isnan(latency)).sum(axis=0)
        self._p95 = None

    def _add_sla(self, latency: np.ndarray, metrics: dict[str, np.ndarray], w: np.ndarray) -> None:
        k = 0
        if self.sla.p95_latency_ms is not None:
            over = (latency > self.sla.p95_latency_ms).astype(float) * w[:, None]
            over = np.where(np.isnan(latency), np.nan, over)
            q = 1 - QUANTILE
            test = self.tests[0]
            test.meets = confseq.advance(test.meets, q - over)
            test.misses = confseq.advance(test.misses, over - q)
            k = 1
        for (metric, side, value, _), test in zip(self.metric_bounds, self.tests[k:], strict=True):
            x = np.asarray(metrics[metric], dtype=float) - value
            test.meets = confseq.advance(test.meets, x if side == "min" else -x)
            test.misses = confseq.advance(test.misses, -x if side == "min" else x)

    # -- what the data say ----------------------------------------------------------------------------------
    def latency_rows(self) -> np.ndarray:
        """Every item's latency so far, (items, K), when the evidence keeps it (no `read_latency`): joined
        once and kept joined."""
        if not self.latency:
            return np.zeros((0, len(self.config_ids)))
        if len(self.latency) > 1:
            self.latency = [np.concatenate(self.latency)]
        return self.latency[0]

    @property
    def n_items(self) -> int:
        return int(self.n.max()) if len(self.n) else 0

    def means(self) -> np.ndarray:
        """Oriented objective means (higher is better); -inf where a configuration has no items."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.score_sum / np.maximum(self.n, 1), -np.inf)

    def p95(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per configuration: p95 point estimate and its 95 % order-statistic interval (kept until the next
        `add`); read a block of configurations at a time when the evidence has a `read_latency`."""
        if self._p95 is None:
            k = len(self.config_ids)
            read = self.read_latency or (lambda block: self.latency_rows()[:, block])
            out = [
                p95_interval(column)
                for block in chunks(list(range(k)), self.rows)
                for column in read(block).T
            ]
            self._p95 = tuple(np.array([o[i] for o in out]).reshape(k) for i in range(3))  # type: ignore[assignment]
        return self._p95  # type: ignore[return-value]

    def sla_state(self) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """Per configuration: confidently meets every bound; confidently misses one; the missed bounds."""
        k = len(self.config_ids)
        meets, misses = np.ones(k, dtype=bool), np.zeros(k, dtype=bool)
        why: list[list[str]] = [[] for _ in range(k)]
        for test in self.tests:
            meets &= confseq.p_values(test.meets) <= self.levels.sla
            missed = confseq.p_values(test.misses) <= self.levels.sla
            misses |= missed
            for c in np.flatnonzero(missed):
                why[c].append(f"misses {test.name} with confidence")
        return meets, misses, why


def _neg(interval: tuple[float, float]) -> tuple[float, float]:
    return -interval[1], -interval[0]


def _flip(meets: confseq.Evidence, k: int) -> confseq.Evidence:
    return confseq.Evidence.start((k,), *_neg((meets.low, meets.high)))


def p95_interval(values: np.ndarray, coverage: float = 0.95) -> tuple[float, float, float]:
    """p95 (linear interpolation, as Polars) and its exact distribution-free interval from order statistics:
    ranks whose binomial(n, 0.95) tails hold (1 - coverage) / 2 each; (0, inf) ends where n is too small."""
    v = np.sort(values[~np.isnan(values)])
    n = len(v)
    if n == 0:
        return math.inf, 0.0, math.inf
    from scipy.special import bdtr  # the binomial CDF; scipy.stats costs a command-line run 0.6 s to import

    point = float(np.quantile(v, QUANTILE))
    tail = (1 - coverage) / 2
    cdf = bdtr(np.arange(n + 1), n, QUANTILE)
    low_rank = int(np.searchsorted(cdf, tail, side="right"))  # P(B < low_rank) <= tail
    high_rank = int(np.searchsorted(cdf, 1 - tail, side="left")) + 1  # P(B >= high_rank) <= tail
    low = float(v[low_rank - 1]) if low_rank >= 1 else 0.0
    high = float(v[high_rank - 1]) if high_rank <= n else math.inf
    return point, low, high


def decide(evidence: Evidence, dropped: dict[str, str] | None = None) -> Decision:
    """The rule (module docstring) on the evidence so far. `dropped`: configurations a race already excluded
    by this rule at an earlier look (config_id -> why); they stay excluded."""
    ids, s = evidence.config_ids, evidence.settings
    means = evidence.means()
    meets, misses, why = evidence.sla_state()
    gone = np.array([c in (dropped or {}) for c in ids])
    misses = misses & ~gone
    far_p, near_p = confseq.p_values(evidence.far), confseq.p_values(evidence.near)
    level = evidence.levels.pair
    others = ~np.eye(len(ids), dtype=bool)
    excluded = dict(dropped or {}) | {ids[c]: "; ".join(why[c]) for c in np.flatnonzero(misses)}
    beaten = (far_p <= level) & others & (meets & ~gone)[None, :]
    for c in np.flatnonzero(beaten.any(axis=1) & ~misses & ~gone):
        rival = int(np.flatnonzero(beaten[c])[np.argmax(means[beaten[c]])])
        excluded[ids[c]] = f"more than {s.epsilon:g} below {ids[rival]} (which meets the SLA) with confidence"
    live = np.array([i not in excluded for i in ids])
    n_items = evidence.n_items
    sla_status = {
        ids[c]: "meets" if meets[c] else "misses" if misses[c] else "undecided" for c in range(len(ids))
    }
    common = dict(epsilon=s.epsilon, delta=s.delta, n_items=n_items, excluded=excluded, sla_status=sla_status)
    if not live.any():
        return Decision("no_feasible", None, candidates=[], certified=[], items_needed=None,
                        reason="every configuration misses the SLA with confidence", **common)  # fmt: skip
    # k* is among the configurations not excluded, unless an exclusion was false (an error already counted)
    near_all = ((near_p <= level) | ~others | ~live[None, :]).all(axis=1)
    certified = np.flatnonzero(meets & near_all & live)
    candidates = [ids[c] for c in np.flatnonzero(live)]
    point, low, high = evidence.p95()
    if len(certified):
        pick = cheapest(certified, means, point, confidently_faster(evidence.wins, point, low, high))
        names = [ids[c] for c in certified]
        return Decision("certified", ids[pick], candidates=candidates, certified=names, items_needed=0,
                        reason="certified", **common)  # fmt: skip
    order = sorted(np.flatnonzero(live), key=lambda c: (-means[c], point[c]))
    pick = int(order[0])
    reason, needed = blocking(evidence, pick, meets, live, near_p, level)
    return Decision("undecided", ids[pick], candidates=candidates, certified=[], items_needed=needed,
                    reason=reason, **common)  # fmt: skip


def cheapest(group: np.ndarray, means: np.ndarray, point: np.ndarray, faster) -> int:
    """From the best objective in `group`, move to a member confidently cheaper (`faster(a, b)`: a is
    cheaper than b with confidence), the best objective among those, until none is: cheaper only where the
    latency evidence says so, the higher objective otherwise."""
    current = int(max(group, key=lambda c: (means[c], -point[c])))
    while True:
        cheaper = [int(c) for c in group if faster(int(c), current)]
        if not cheaper:
            return current
        current = max(cheaper, key=lambda c: (means[c], -point[c]))


def confidently_faster(wins: np.ndarray, point: np.ndarray, low: np.ndarray, high: np.ndarray):
    """faster(a, b): a's p95 is lower than b's by more than SAME_P95, and the evidence separates them: their
    p95 intervals do not overlap, or, on the items both ran, a is faster on so many more items than b
    (`wins[a, b]` against `wins[b, a]`) that a one-sided sign test rejects at 5 % (configurations that share
    stages differ item by item, so paired evidence comes far sooner than distribution-free p95 intervals,
    which need 73 items to close)."""

    def faster(a: int, b: int) -> bool:
        if a == b or not point[a] < point[b] * (1 - SAME_P95):
            return False
        if high[a] < low[b]:
            return True
        return stats.sign_test_p(int(wins[a, b]), int(wins[b, a])) <= PAIRED_ALPHA

    return faster


def blocking(
    evidence: Evidence, pick: int, meets: np.ndarray, live: np.ndarray, near_p: np.ndarray, level: float
) -> tuple[str, int | None]:
    """Why the provisional pick is not certified, and how many more items its slowest test would need."""
    ids, reasons, needs = evidence.config_ids, [], []
    if not meets[pick]:
        for test in evidence.tests:
            if confseq.p_values(test.meets)[pick] > evidence.levels.sla:
                reasons.append(f"{test.name} not yet shown")
                needs.append(projected_items(test.meets, pick, evidence.levels.sla))
    open_rivals = [c for c in range(len(ids)) if c != pick and live[c] and near_p[pick, c] > level]
    if open_rivals:
        shown = ", ".join(ids[c] for c in open_rivals[:3]) + (" ..." if len(open_rivals) > 3 else "")
        reasons.append(
            f"not yet within {evidence.settings.epsilon:g} of {len(open_rivals)} rival(s) ({shown})"
        )
        needs += [projected_items(evidence.near, (pick, c), level) for c in open_rivals]
    if any(n is None for n in needs):
        return "; ".join(reasons), None
    return "; ".join(reasons), max(0, max(needs) - evidence.n_items) if needs else 0


def projected_items(e: confseq.Evidence, cell, level: float) -> int | None:
    """Items in all a test would need to reject at `level` if the values keep their mean and spread: the
    bet's growth rate per item at the mean's optimal stake, into log(1 / level)."""
    n = float(e.n[cell])
    if n == 0:
        return None
    mean, second = float(e.total[cell]) / n, float(e.total_sq[cell]) / n
    if mean <= 0:
        return None
    if not e.bounded:  # the CLT sequence: roughly a z-test at the level
        var = max(second - mean * mean, 1e-12)
        return math.ceil(PROJECTION_SLACK * 2 * var * math.log(1 / level) / mean**2)
    stake = min(mean / max(second, 1e-12), confseq.LAMBDA_CAP / max(-e.low, 1e-9))
    # growth of log-wealth per item for values with this mean and second moment, to second order
    growth = stake * mean - stake * stake * second / 2
    if growth <= 0:
        return None
    return math.ceil(PROJECTION_SLACK * math.log(1 / level) / growth)


def from_arrays(
    config_ids: list[str],
    objective: Metric,
    sla: SLASpec,
    metrics: dict[str, Metric],
    scores: np.ndarray,
    latency: np.ndarray,
    metric_values: dict[str, np.ndarray],
    settings: DecisionSettings | None = None,
) -> Decision:
    """The rule on complete (items, K) arrays, fed in their row order."""
    evidence = Evidence(config_ids, objective, sla, metrics, settings)
    evidence.add(scores, latency, metric_values)
    return decide(evidence)


def item_order(item_ids: list[str], seed: int = 0) -> list[str]:
    """The fixed pseudo-random order a finished run's items are fed to the evidence in: sorted ids, then a
    seeded shuffle, so the decision does not depend on the order parts were written in."""
    ordered = sorted(set(item_ids))
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def item_ids(items: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """The distinct item ids of a run's rows, read in a streaming pass (not the whole column at once)."""
    return items.lazy().select(pl.col("item_id").unique()).collect(engine="streaming")["item_id"].to_list()


def item_arrays(
    items: pl.DataFrame | pl.LazyFrame,
    config_ids: list[str],
    columns: list[str],
    order: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Per column, an (items, K) float array: rows in `order` (default: `item_order`), NaN where a
    configuration has no row for an item.

    `items` may be lazy (a run's items.parquet): the columns are read in one streaming pass that keeps only
    a batch of cell positions and values at a time, never the run's rows at once. A caller bounds the
    arrays themselves by reading a block of items or of configurations at a time (`chunks`)."""
    items = items.lazy()
    if order is None:
        order = item_order(item_ids(items))
    rows = pl.LazyFrame({"item_id": pl.Series(order, dtype=pl.String), "_row": np.arange(len(order))})
    cols = pl.LazyFrame(
        {"config_id": pl.Series(config_ids, dtype=pl.String), "_col": np.arange(len(config_ids))}
    )
    ids = pl.col("config_id").is_in(pl.Series(config_ids, dtype=pl.String).implode())
    ids &= pl.col("item_id").is_in(pl.Series(order, dtype=pl.String).implode())  # filtered first: 2-3x faster
    cells = items.filter(ids).join(rows, on="item_id").join(cols, on="config_id")
    flat = (pl.col("_row") * len(config_ids) + pl.col("_col")).alias("_cell")
    out = {name: np.full(len(order) * len(config_ids), np.nan) for name in columns}
    found = cells.select(flat, *[pl.col(name).cast(pl.Float64).fill_null(math.nan) for name in out])
    for batch in found.collect_batches(chunk_size=BATCH_ROWS):
        at = batch["_cell"].to_numpy()
        for name, values in out.items():
            values[at] = batch[name].to_numpy()
    return {name: values.reshape(len(order), len(config_ids)) for name, values in out.items()}


def chunks(values: list, n_rows: int, columns: int = 1) -> Iterator[list]:
    """`values` (configurations, or items) in consecutive blocks such that an array of `n_rows` rows per
    value, `columns` of them, holds at most ARRAY_CELLS_AT_ONCE cells (at least one value a block)."""
    size = max(1, ARRAY_CELLS_AT_ONCE // max(1, n_rows * columns))
    for start in range(0, len(values), size):
        yield values[start : start + size]


def decide_items(
    items: pl.DataFrame | pl.LazyFrame,
    config_ids: list[str],
    objective: Metric,
    sla: SLASpec,
    metrics: dict[str, Metric],
    settings: DecisionSettings | None = None,
    latency: str = "latency_total_ms",
) -> tuple[Decision, Evidence]:
    """The rule over a run's item rows (item_id, config_id, the objective, `latency`, the SLA's metrics).

    The items are fed in `item_order`, a block at a time (`chunks`), and the p95s read a block of
    configurations at a time: the driver holds at most ARRAY_CELLS_AT_ONCE cells of (items, K) arrays
    whatever the run's size. The tests advance item by item, so the blocks change no result."""
    items = items.lazy()
    columns = list(dict.fromkeys([objective.name, latency, *metrics]))
    order = item_order(item_ids(items))

    def read_latency(block: list[int]) -> np.ndarray:
        return item_arrays(items, [config_ids[c] for c in block], [latency], order)[latency]

    evidence = Evidence(config_ids, objective, sla, metrics, settings, read_latency=read_latency)
    for block in chunks(order, len(config_ids), len(columns)):
        arrays = item_arrays(items, config_ids, columns, block)
        evidence.add(arrays[objective.name], arrays[latency], {m: arrays[m] for m in metrics})
        del arrays
    return decide(evidence), evidence
