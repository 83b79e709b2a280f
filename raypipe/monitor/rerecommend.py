"""Re-recommend under a batch's estimated slice mix, carrying the mix's uncertainty into the advice.

The run's per-slice results are reweighted to the estimated mix (`raypipe.decide.recommend`) for the ranking
shown. The advice itself is one function, `switch_advice`: another configuration is advised only when
the switch holds across the mix's uncertainty, judged on bounds. Every mix in the box of the per-bin 95 %
intervals (the simplex part of it) is considered: the candidate's gain over the deployed configuration
must have a lower confidence bound above 0 at the least favourable of those mixes (a linear programme),
or the deployed configuration must miss the p95 SLA with confidence under every sampled mix of the box
while the candidate meets it with confidence under each. On top, the decision rule (`raypipe.decide.decision`)
under the estimated mix must certify its pick with the deployed configuration outside the certified group
(`certified_switch`). Otherwise the deployed configuration stays, and the report says what the point
estimate alone would have said.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize

from raypipe.decide.decision import DecisionSettings
from raypipe.decide.recommend import Recommendation, recommend
from raypipe.decide.slices import bin_column
from raypipe.decide.stats import z_for
from raypipe.monitor.mix import MixEstimate
from raypipe.monitor.reference import StoredReference

RANKING_ROWS = 5
ADVICE_ALPHA = 0.05  # one-sided, for the gain's and the p95's bounds
MIX_SAMPLES = 64  # mixes drawn from the box for the p95 (not linear in the mix)


def rerecommend(profile: StoredReference, deployed: str, mix: MixEstimate | None) -> dict[str, Any]:
    """What to deploy under the estimated `mix` of the profile's slice attribute (None: the run's own)."""
    attribute = profile.attribute if mix is not None else None
    point = _known_mix(profile, mix.as_dict()) if mix is not None else None
    rec = recommend(
        profile.items,
        profile.configs,
        profile.task,
        profile.objective,
        profile.spec.sla,
        attribute if point else None,
        point or {},
        profile.stage_names,
        DecisionSettings(profile.spec.decision.epsilon, profile.spec.decision.delta),
    )
    out = describe(rec, profile, deployed)
    if rec.decision is not None:
        out["decision"] = rec.decision.to_json() | {"headline": rec.decision.headline()}
    if not out["changed"] or not point or mix is None:
        return out
    advice = certified_switch(rec, deployed, switch_advice(profile, deployed, rec.recommended, mix))
    if advice["holds"]:
        return out | {"advice": advice}
    held = (
        f"the deployed configuration {deployed[:8]} stays: under the point estimate of the mix "
        f"{rec.recommended[:8]} would be better, but not across the mix's uncertainty ({advice['why']})"
    )
    return out | {
        "changed": False,
        "point_estimate_advice": out["message"],
        "message": held,
        "advice": advice,
    }


def certified_switch(rec: Recommendation, deployed: str, advice: dict[str, Any]) -> dict[str, Any]:
    """The switch holds only where the decision rule (decide.decision) under the estimated mix certifies a
    pick and the deployed configuration is not among the certified ones, as well as across the mix's box."""
    decision = rec.decision
    if not advice["holds"] or decision is None:
        return advice
    if decision.status != "certified":
        return advice | {"holds": False, "why": f"the decision under this mix is {decision.status}"}
    if deployed in decision.certified:
        return advice | {"holds": False, "why": "the deployed configuration is certified under this mix too"}
    return advice


def _known_mix(profile: StoredReference, mix: dict[str, float]) -> dict[str, float] | None:
    known = set(profile.items[bin_column(profile.attribute)].drop_nulls().unique().to_list())
    kept = {b: w for b, w in mix.items() if b in known and w > 0}
    total = sum(kept.values())
    return {b: w / total for b, w in kept.items()} if total > 0 else None


def switch_advice(
    profile: StoredReference, deployed: str, candidate_id: str, mix: MixEstimate
) -> dict[str, Any]:
    """Does switching from `deployed` to `candidate` hold across the mix's 95 % box? Bounds, not points:
    {holds, gain_low (the gain's lower bound at the least favourable mix), sla (how the p95s compare across
    the sampled mixes), why}."""
    column, name = bin_column(mix.attribute), profile.objective.name
    labels = list(mix.labels)
    low = np.array([mix.interval(k)[0] for k in range(len(labels))])
    high = np.array([mix.interval(k)[1] for k in range(len(labels))])
    diff, var = _paired_by_bin(profile, deployed, candidate_id, column, name, labels)
    gain_low = _least_gain(diff, var, low, high)
    mixes = _sampled_mixes(mix.shares, low, high)
    sla = _sla(profile)
    deployed_misses = all(_p95_bounds(profile, deployed, column, labels, w)[0] > sla for w in mixes)
    candidate_sla = _sla_verdict([_p95_bounds(profile, candidate_id, column, labels, w) for w in mixes], sla)
    # An SLA that too few items can bound is undecided, not missed: the gain alone may advise the switch,
    # and the advice says the p95 is unproven; replacing a deployed configuration needs its miss proven.
    better = gain_low > 0 and candidate_sla != "misses"
    holds = better or (deployed_misses and candidate_sla == "meets")
    if holds:
        why = "better with confidence at every mix of the box" if better else "the deployed misses the SLA"
        why += "" if candidate_sla == "meets" else "; its p95 SLA is undecided (too few items to bound it)"
    elif candidate_sla == "misses":
        why = f"{candidate_id[:8]} misses the p95 SLA with confidence under some mix of the box"
    else:
        why = f"the gain's lower bound is {gain_low:+.3f} at the least favourable mix of the box"
    return {
        "holds": holds,
        "candidate": candidate_id,
        "gain_low": gain_low,
        "deployed_misses_sla": deployed_misses,
        "candidate_sla": candidate_sla,
        "mix_box": {b: [float(lo), float(hi)] for b, lo, hi in zip(labels, low, high, strict=True)},
        "why": why,
    }


def _paired_by_bin(
    profile: StoredReference, deployed: str, candidate: str, column: str, metric: str, labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per bin: the mean oriented paired difference (candidate - deployed, on the same reference items) and
    its variance of the mean; a bin without paired items gets no gain and a wide variance."""
    pair = profile.items.filter(pl.col("config_id").is_in([deployed, candidate])).select(
        "item_id", "config_id", column, pl.col(metric).cast(pl.Float64)
    )
    wide = pair.pivot(on="config_id", index=["item_id", column], values=metric).drop_nulls()
    sign = 1.0 if profile.objective.higher_is_better else -1.0
    diff, var = np.zeros(len(labels)), np.full(len(labels), 1.0)
    for k, label in enumerate(labels):
        cell = wide.filter(pl.col(column) == label)
        if cell.height >= 2:
            d = ((cell[candidate] - cell[deployed]) * sign).to_numpy()
            diff[k], var[k] = float(d.mean()), max(float(d.var(ddof=1)), 1e-6) / len(d)
    return diff, var


def _least_gain(diff: np.ndarray, var: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The smallest lower confidence bound of sum(w * diff) over mixes w in [low, high] with sum 1: the
    linear programme's minimum, less z times the largest standard error any mix of the box can have."""
    found = optimize.linprog(
        diff, A_eq=np.ones((1, len(diff))), b_eq=[1.0], bounds=list(zip(low, high, strict=True))
    )
    least = float(found.fun) if found.success else float(diff.min())
    return least - z_for(ADVICE_ALPHA, two_sided=False) * math.sqrt(float(high**2 @ var))


def _sampled_mixes(shares: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[np.ndarray]:
    """The point estimate and MIX_SAMPLES mixes drawn uniformly in the box, scaled to sum 1 (seeded)."""
    rng = np.random.default_rng(0)
    drawn = low + rng.random((MIX_SAMPLES, len(shares))) * (high - low)
    drawn = drawn / np.maximum(drawn.sum(axis=1, keepdims=True), 1e-12)
    return [shares, *drawn]


def _sla_verdict(bounds: list[tuple[float, float]], sla: float) -> str:
    """meets (every upper bound within), misses (some lower bound above) or undecided."""
    if any(low > sla for low, _ in bounds):
        return "misses"
    return "meets" if all(high <= sla for _, high in bounds) else "undecided"


def _sla(profile: StoredReference) -> float:
    bound = profile.spec.sla.p95_latency_ms
    return math.inf if bound is None else float(bound)


def _p95_bounds(
    profile: StoredReference, config_id: str, column: str, labels: list[str], mix: np.ndarray
) -> tuple[float, float]:
    """Distribution-free bounds of the p95 service time under `mix`: the weighted quantiles at 0.95 -+ z
    standard errors of a proportion over the mix's effective number of items (Kish)."""
    frame = profile.items.filter(pl.col("config_id") == config_id).select(column, "latency_total_ms")
    weights_of = dict(zip(labels, mix, strict=True))
    counts = frame.group_by(column).len()
    per_item = {r[column]: weights_of.get(r[column], 0.0) / r["len"] for r in counts.iter_rows(named=True)}
    weights = np.array([per_item.get(b, 0.0) for b in frame[column].to_list()])
    values = frame["latency_total_ms"].to_numpy().astype(float)
    if weights.sum() <= 0:
        return 0.0, math.inf
    n_eff = weights.sum() ** 2 / float((weights**2).sum())
    spread = z_for(ADVICE_ALPHA, two_sided=False) * math.sqrt(0.95 * 0.05 / n_eff)
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    lower = values[order][min(np.searchsorted(cumulative, 0.95 - spread), len(values) - 1)]
    upper_at = 0.95 + spread
    upper = (
        math.inf
        if upper_at > 1
        else values[order][min(np.searchsorted(cumulative, upper_at), len(values) - 1)]
    )
    return float(lower), float(upper)


def _row(rec: Recommendation, config_id: str) -> dict[str, Any] | None:
    found = rec.ranking.filter(pl.col("config_id") == config_id)
    return None if found.is_empty() else found.row(0, named=True)


def _labels(profile: StoredReference, config_id: str) -> str:
    row = profile.configs.filter(pl.col("config_id") == config_id).row(0, named=True)
    return "/".join(str(row[s]) for s in profile.stage_names)


def describe(rec: Recommendation, profile: StoredReference, deployed: str) -> dict[str, Any]:
    """The point-estimate decision as report.json holds it, with a sentence for the terminal."""
    mine = _row(rec, deployed)
    out: dict[str, Any] = {
        "deployed": deployed,
        "recommended": rec.recommended,
        "tied": rec.tied,
        "changed": False,
        "deployed_expected": None if mine is None else mine["expected"],
        "deployed_p95_ms": None if mine is None else mine["p95_ms"],
        "deployed_sla_pass": None if mine is None else mine["sla_pass"],
        "ranking": rec.ranking.head(RANKING_ROWS).to_dicts(),
    }
    if rec.recommended is None:
        return out | {"message": f"no configuration meets the SLA under the estimated mix ({rec.note})"}
    if deployed in {rec.recommended, *rec.tied} and mine is not None and mine["sla_pass"]:
        return out | {"message": _still(profile, deployed, mine)}
    return out | _switch(rec, profile, deployed, mine)


def _still(profile: StoredReference, deployed: str, mine: dict[str, Any]) -> str:
    return (
        f"the deployed configuration {deployed[:8]} ({_labels(profile, deployed)}) is still the choice: "
        f"expected {profile.objective.name} {mine['expected']:.3f} [{mine['ci_low']:.2f}, "
        f"{mine['ci_high']:.2f}], p95 {mine['p95_ms']:.1f} ms under the estimated mix"
    )


def _switch(
    rec: Recommendation, profile: StoredReference, deployed: str, mine: dict | None
) -> dict[str, Any]:
    name, chosen = profile.objective.name, _row(rec, rec.recommended)
    gain = None if mine is None else profile.objective.oriented(chosen["expected"] - mine["expected"])
    why = "misses the SLA" if mine is not None and not mine["sla_pass"] else "is worse with confidence"
    before = "" if mine is None else f" against {mine['expected']:.3f} ({gain:+.3f})"
    group = rec.ranking.filter(pl.col("tied"))
    best = group.sort("expected", descending=profile.objective.higher_is_better).row(0, named=True)
    tied = ""
    if best["config_id"] != rec.recommended:
        labels = _labels(profile, best["config_id"])
        tied = f", the fastest of the {group.height} tied with the best ({labels}, {best['expected']:.3f})"
    message = (
        f"switch to {rec.recommended[:8]} ({_labels(profile, rec.recommended)}): expected {name} "
        f"{chosen['expected']:.3f} [{chosen['ci_low']:.2f}, {chosen['ci_high']:.2f}]{before}, p95 "
        f"{chosen['p95_ms']:.1f} ms{tied}; the deployed {deployed[:8]} {why} under the estimated mix, and "
        "the switch holds across the mix's 95 % intervals"
    )
    return {
        "changed": True,
        "gain": gain,
        "recommended_expected": chosen["expected"],
        "recommended_p95_ms": chosen["p95_ms"],
        "message": message,
    }
