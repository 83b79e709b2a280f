"""Human-facing output: the ranked table and the slice table in the terminal, and the Pareto plot."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from raypipe.spec.task import Metric


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _score(r: dict, name: str) -> str:
    value = r.get(name)
    return "-" if value is None else f"{value:.3f}"


def _interval(r: dict, name: str, low: str, high: str) -> str:
    if r.get(name) is None:
        return "-"
    if r.get(low) is None:
        return f"{r[name]:.3f}"
    return f"{r[name]:.3f} [{r[low]:.2f}, {r[high]:.2f}]"


def ranked_table(
    configs: pl.DataFrame,
    stage_names: list[str],
    objective: Metric,
    headline: list[Metric],
    top: int | None = None,
) -> Table:
    """Configuration, objective with its 95 % interval, headline metrics, service-time p50/p95, busy p95,
    errors, SLA and Pareto; `=` marks the group statistically tied with the best, fastest first."""
    table = Table(title=f"raypipe: configurations in decision order, by {objective.name}")
    table.caption = (
        f"{objective.name}: {objective.description}; 95% interval. '>>': the pick (certified or "
        "provisional); 'ok': certified within epsilon of the best; '?': a candidate the data do not exclude "
        "yet; blank: excluded with confidence; 'x': dropped by the search (unranked). SLA: on bounds "
        "(meets / misses / ? undecided), point estimates in brackets. p50/p95: service time per item alone "
        "(CPU time calibrated by calls timed alone; failed items count what they spent); busy p95: wall "
        "time in this run, under load"
    )
    for header in ("#", "", "config_id", *stage_names, f"{objective.name} [95% CI]"):
        table.add_column(header, justify="right" if header == "#" else "left")
    for metric in headline:
        table.add_column(metric.name, justify="right")
    for header in ("p50 ms", "p95 ms", "busy p95", "errors", "SLA", "Pareto"):
        table.add_column(header, justify="right")
    rows = configs.head(top) if top else configs
    if rows.height < configs.height:
        hidden = configs.height - rows.height
        table.caption += (
            f"\n{rows.height} of {configs.height} shown ({hidden} more: `raypipe report RUN_DIR`)"
        )
    for i, r in enumerate(rows.iter_rows(named=True), start=1):
        table.add_row(
            str(r["rank"]) if r.get("rank") is not None else ("-" if "rank" in r else str(i)),
            _mark(r),
            r["config_id"][:8],
            *[str(r[n]) for n in stage_names],
            _interval(r, "objective", "objective_ci_low", "objective_ci_high"),
            *[_score(r, m.name) for m in headline],
            _ms(r["latency_p50_ms"]),
            _ms(r["latency_p95_ms"]),
            _ms(r.get("busy_p95_ms")),
            str(r["n_errors"]),
            _sla(r),
            "*" if r["pareto"] else "",
        )
    return table


MARKS = {
    "pick": "[bold green]>>[/]",
    "certified": "[green]ok[/]",
    "candidate": "?",
    "excluded": "",
    "dropped": "x",
}
SLA_SHOWN = {"meets": "[green]meets[/]", "misses": "[red]misses[/]", "undecided": "[yellow]?[/]"}


def _mark(r: dict) -> str:
    """The decision of a row (older runs: '=' for the tied group, 'x' for dropped)."""
    if r.get("decision") is not None:
        return MARKS[r["decision"]]
    return "=" if r.get("tied") else ("x" if r.get("dropped_after_items") is not None else "")


def _sla(r: dict) -> str:
    """The SLA on bounds (meets / misses / ? undecided), the point estimates' verdict after a slash."""
    point = "[green]pass[/]" if r["sla_pass"] else "[red]fail[/]"
    if r.get("sla_status") is None:
        return point
    return f"{SLA_SHOWN[r['sla_status']]} ({'pass' if r['sla_pass'] else 'fail'})"


def decision_line(decision: dict | None) -> str:
    """The decision of a run as one line for the terminal (an older run has none)."""
    if not decision:
        return "decision: this run predates the decision rule (`raypipe recommend RUN_DIR` decides it)"
    colour = {"certified": "green", "undecided": "yellow"}.get(decision["status"], "red")
    return f"[bold {colour}]{decision['status']}[/]: {decision.get('headline', '')}"


def slice_summary_table(summary: pl.DataFrame, configs: pl.DataFrame, stage_names: list[str]) -> Table:
    """Per slice cell: items, the winner with its objective and interval, how many are tied, or why none."""
    label = {r["config_id"]: "/".join(str(r[s]) for s in stage_names) for r in configs.iter_rows(named=True)}
    table = Table(title="raypipe: per slice, the decision on the slice's own items (SLA judged there)")
    for header in ("slice", "cell", "items", "winner", "objective [95% CI]", "p95 ms", "group"):
        table.add_column(header)
    for r in summary.iter_rows(named=True):
        winner = r["winner"]
        table.add_row(
            r["dimension"],
            r["cell"],
            str(r["cell_items"]),
            f"{winner[:8]} {label.get(winner, '')}" if winner else f"[yellow]{_no_winner(r, label)}[/]",
            _interval(r, "winner_objective", "ci_low", "ci_high") if winner else "",
            _ms(r["latency_p95_ms"]) if winner else "",
            str(r["n_tied"] + 1) if winner or r.get("provisional") else "",
        )
    return table


def _no_winner(r: dict, label: dict) -> str:
    """Why a cell names no winner: too few items, or undecided with its provisional pick."""
    provisional = r.get("provisional")
    if provisional:
        return f"undecided; provisional {provisional[:8]} {label.get(provisional, '')}"
    return r["note"] or ""


def print_ranked(
    configs: pl.DataFrame,
    stage_names: list[str],
    objective: Metric,
    headline: list[Metric],
    console: Console | None = None,
    top: int | None = None,
) -> None:
    (console or Console()).print(ranked_table(configs, stage_names, objective, headline, top))


def pareto_plot(
    configs: pl.DataFrame, path: Path, objective: Metric, sla_p95_ms: float | None = None
) -> Path:
    """The objective against p95 service time, one point per configuration, the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    rest = configs.filter(~pl.col("pareto"))
    front = configs.filter(pl.col("pareto")).sort("latency_p95_ms")
    ax.scatter(rest["latency_p95_ms"], rest["objective"], c="#999999", label="dominated")
    ax.plot(front["latency_p95_ms"], front["objective"], "o-", c="#d62728", label="Pareto front")
    for r in front.iter_rows(named=True):
        ax.annotate(r["config_id"][:6], (r["latency_p95_ms"], r["objective"]), fontsize=7)
    if sla_p95_ms:
        ax.axvline(sla_p95_ms, ls="--", c="#1f77b4", label=f"SLA p95 {sla_p95_ms:g} ms")
    ax.set_xlabel("end-to-end p95 service time per item (ms)")
    ax.set_ylabel(objective.name)
    ax.set_title(f"{configs.height} configurations")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
