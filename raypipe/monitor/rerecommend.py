"""Re-recommend under a batch's estimated slice mix: the run's per-slice results reweighted (recommend).

Another configuration replaces the deployed one only when it is better with confidence: the deployed one is
outside the group the mix-weighted paired test cannot tell from the best, or it misses the SLA under the
new mix. Otherwise the deployed configuration is still the choice.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from raypipe.monitor.profile import MonitorProfile
from raypipe.recommend import Recommendation, recommend
from raypipe.slices import bin_column

RANKING_ROWS = 5


def rerecommend(profile: MonitorProfile, deployed: str, mix: dict[str, float] | None) -> dict[str, Any]:
    """What to deploy under `mix` (bin -> share of the profile's slice attribute); None: the run's own mix."""
    attribute = profile.attribute if mix else None
    items = profile.items
    if attribute is not None:
        known = set(items[bin_column(attribute)].drop_nulls().unique().to_list())
        mix = {b: w for b, w in mix.items() if b in known and w > 0}
        total = sum(mix.values())
        mix = {b: w / total for b, w in mix.items()} if total > 0 else None
        attribute = attribute if mix else None
    rec = recommend(
        items,
        profile.configs,
        profile.task,
        profile.objective,
        profile.spec.sla,
        attribute,
        mix or {},
        profile.stage_names,
    )
    return describe(rec, profile, deployed)


def _row(rec: Recommendation, config_id: str) -> dict[str, Any] | None:
    found = rec.ranking.filter(pl.col("config_id") == config_id)
    return None if found.is_empty() else found.row(0, named=True)


def _labels(profile: MonitorProfile, config_id: str) -> str:
    row = profile.configs.filter(pl.col("config_id") == config_id).row(0, named=True)
    return "/".join(str(row[s]) for s in profile.stage_names)


def describe(rec: Recommendation, profile: MonitorProfile, deployed: str) -> dict[str, Any]:
    """The decision as report.json holds it, with a sentence for the terminal."""
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


def _still(profile: MonitorProfile, deployed: str, mine: dict[str, Any]) -> str:
    return (
        f"the deployed configuration {deployed[:8]} ({_labels(profile, deployed)}) is still the choice: "
        f"expected {profile.objective.name} {mine['expected']:.3f} [{mine['ci_low']:.2f}, "
        f"{mine['ci_high']:.2f}], p95 {mine['p95_ms']:.1f} ms under the estimated mix"
    )


def _switch(rec: Recommendation, profile: MonitorProfile, deployed: str, mine: dict | None) -> dict[str, Any]:
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
        f"{chosen['p95_ms']:.1f} ms{tied}; the deployed {deployed[:8]} {why} under the estimated mix"
    )
    return {
        "changed": True,
        "gain": gain,
        "recommended_expected": chosen["expected"],
        "recommended_p95_ms": chosen["p95_ms"],
        "message": message,
    }
