"""`raypipe recommend`: read a run, reweight it to the user's mix, print the recommendation and changes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from raypipe.decide.decision import DecisionSettings
from raypipe.decide.recommend import (
    Recommendation,
    attributes_of,
    mix_weights,
    own_mix,
    own_shares,
    parse_mix,
    recommend,
    resolve_bins,
)
from raypipe.decide.slices import bin_column
from raypipe.errors import RaypipeError
from raypipe.report.reading import RunView
from raypipe.spec.schema import SLASpec


def sla_with(base: SLASpec, overrides: dict[str, Any]) -> SLASpec:
    """The run's SLA with `p95_latency_ms=`, `min.METRIC=` and `max.METRIC=` overrides applied."""
    data = base.model_dump()
    for key, value in overrides.items():
        side, _, metric = key.partition(".")
        if key == "p95_latency_ms":
            data["p95_latency_ms"] = float(value)
        elif side in ("min", "max") and metric:
            data[side][metric] = float(value)
        else:
            raise RaypipeError(
                f"--sla '{key}': write p95_latency_ms=MS, min.METRIC=BOUND or max.METRIC=BOUND"
            )
    return SLASpec.model_validate(data)


def recommend_for(view: RunView, entries: list[str], sla: SLASpec) -> tuple[Recommendation, Recommendation]:
    """(the recommendation for the mix, the one for the run's own mix)."""
    attribute, given = parse_mix(entries)
    settings = DecisionSettings(view.spec.decision.epsilon, view.spec.decision.delta)
    args = (view.items, view.configs, view.task, view.objective, sla)
    if attribute is None:
        own = recommend(*args, None, {}, view.stage_names, settings)
        return own, own
    known_attributes = [c.removeprefix("bin_") for c in view.items.columns if c.startswith("bin_")]
    for name in attributes_of(attribute):
        if bin_column(name) not in view.items.columns:
            raise RaypipeError(
                f"--mix: this run has no slice attribute '{name}' (attributes: {', '.join(known_attributes)})"
            )
    known_bins = sorted(own_shares(view.items, attribute))
    edges = view.manifest.get("slices", {}).get("bin_edges", {}).get(attribute)
    mix = mix_weights(view.items, attribute, resolve_bins(given, known_bins, edges))
    wanted = recommend(*args, attribute, mix, view.stage_names, settings)
    own = recommend(*args, attribute, own_mix(view.items, attribute), view.stage_names, settings)
    return wanted, own


def advise(
    location: str, entries: list[str], sla_overrides: dict[str, Any], top: int, console: Console
) -> None:
    view = RunView(location)
    sla = sla_with(view.spec.sla, sla_overrides)
    wanted, own = recommend_for(view, entries, sla)
    name = view.objective.name
    if wanted.attribute:
        shares = ", ".join(f"{b} {w:.2f}" for b, w in sorted(wanted.mix.items(), key=lambda kv: -kv[1]))
        console.print(f"mix of {wanted.attribute}: {shares}")
    else:
        console.print("mix: the run's own data")
    if wanted.recommended is None:
        console.print(f"[red]{wanted.note}[/]")
    else:
        console.print(wanted.note)
        console.print(_headline(wanted, view, name))
        if wanted.attribute:
            console.print(_changes(wanted, own, view, name))
    console.print(_ranking_table(wanted, view, name, top))


def _describe(rec: Recommendation, config_id: str, view: RunView) -> str:
    row = rec.ranking.filter(rec.ranking["config_id"] == config_id).row(0, named=True)
    labels = "/".join(str(row[s]) for s in view.stage_names)
    return (
        f"{config_id[:8]} {labels}: {row['expected']:.3f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}], "
        f"p95 {row['p95_ms']:,.0f} ms"
    )


def _headline(rec: Recommendation, view: RunView, name: str) -> str:
    certified = rec.decision is not None and rec.decision.status == "certified"
    what = "recommended, certified" if certified else "provisional pick, undecided"
    kind = "also certified" if certified else "other candidates"
    tied = f"; {kind}: {len(rec.tied)} ({', '.join(c[:8] for c in rec.tied[:6])})" if rec.tied else ""
    return f"[bold]{what}[/] (expected {name}): {_describe(rec, rec.recommended, view)}{tied}"


def _changes(wanted: Recommendation, own: Recommendation, view: RunView, name: str) -> str:
    if own.recommended is None:
        return "against the run's own mix: no configuration met the SLA there"
    if own.recommended == wanted.recommended:
        before = own.ranking.filter(own.ranking["config_id"] == own.recommended)["expected"][0]
        after = wanted.ranking.filter(wanted.ranking["config_id"] == wanted.recommended)["expected"][0]
        moves = f"{before:.3f} -> {after:.3f}"
        return f"against the run's own mix: the same choice; its expected {name} moves {moves}"
    return (
        f"against the run's own mix: the recommendation changes from {_describe(own, own.recommended, view)} "
        f"(under this mix: {_value(wanted, own.recommended)})"
    )


def _value(rec: Recommendation, config_id: str) -> str:
    found = rec.ranking.filter(rec.ranking["config_id"] == config_id)
    return "not rankable" if found.is_empty() else f"{found['expected'][0]:.3f}"


def _ranking_table(rec: Recommendation, view: RunView, name: str, top: int) -> Table:
    table = Table(
        title=f"expected {name} under this mix (decision order: pick, certified, candidates, excluded)"
    )
    for header in ("#", "decision", "config_id", *view.stage_names, f"{name} [95% CI]", "p95 ms", "SLA"):
        table.add_column(header)
    for i, r in enumerate(rec.ranking.head(top).iter_rows(named=True), start=1):
        table.add_row(
            str(i),
            r.get("decision") or ("=" if r["tied"] else ""),
            r["config_id"][:8],
            *[str(r[s]) for s in view.stage_names],
            f"{r['expected']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            f"{r['p95_ms']:,.0f}",
            "pass" if r["sla_pass"] else "fail",
        )
    return table
