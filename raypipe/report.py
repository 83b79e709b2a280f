"""Human-facing output: the ranked table in the terminal, and the Pareto plot."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def ranked_table(configs: pl.DataFrame, stage_names: list[str], top: int | None = None) -> Table:
    """Configuration, accuracy with its 95% CI, exact ID match, p50/p95 latency, SLA and Pareto marks."""
    table = Table(title="raypipe: configurations ranked (SLA-passing first, then accuracy)", show_lines=False)
    table.caption = "acc: mean course-assertion score (5 checks), 95% Wilson CI; latency: end-to-end per item"
    table.add_column("#", justify="right")
    table.add_column("config_id", style="dim")
    for name in stage_names:
        table.add_column(name)
    for header in (
        "assertion acc [95% CI]",
        "exact ID",
        "exact name",
        "p50 ms",
        "p95 ms",
        "errors",
        "SLA",
        "Pareto",
    ):
        table.add_column(header, justify="right")
    rows = configs.head(top) if top else configs
    if rows.height < configs.height:
        more = f"{configs.height - rows.height} more: `raypipe report RUN_DIR`"
        table.caption += f"\n{rows.height} of {configs.height} shown ({more})"
    for i, r in enumerate(rows.iter_rows(named=True), start=1):
        acc = f"{r['assertion_accuracy']:.3f} [{r['assertion_ci_low']:.2f}, {r['assertion_ci_high']:.2f}]"
        table.add_row(
            str(i),
            r["config_id"][:8],
            *[str(r[n]) for n in stage_names],
            acc,
            f"{r['exact_id_number']:.2f}",
            f"{r['exact_name']:.2f}",
            _ms(r["latency_p50_ms"]),
            _ms(r["latency_p95_ms"]),
            str(r["n_errors"]),
            "[green]pass[/]" if r["sla_pass"] else "[red]fail[/]",
            "*" if r["pareto"] else "",
        )
    return table


def print_ranked(
    configs: pl.DataFrame, stage_names: list[str], console: Console | None = None, top: int | None = None
):
    (console or Console()).print(ranked_table(configs, stage_names, top))


def pareto_plot(configs: pl.DataFrame, path: Path, sla_p95_ms: float | None = None) -> Path:
    """Accuracy against p95 latency, one point per configuration, the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    rest = configs.filter(~pl.col("pareto"))
    front = configs.filter(pl.col("pareto")).sort("latency_p95_ms")
    ax.scatter(rest["latency_p95_ms"], rest["assertion_accuracy"], c="#999999", label="dominated")
    ax.plot(front["latency_p95_ms"], front["assertion_accuracy"], "o-", c="#d62728", label="Pareto front")
    for r in front.iter_rows(named=True):
        ax.annotate(r["config_id"][:6], (r["latency_p95_ms"], r["assertion_accuracy"]), fontsize=7)
    if sla_p95_ms:
        ax.axvline(sla_p95_ms, ls="--", c="#1f77b4", label=f"SLA p95 {sla_p95_ms:g} ms")
    ax.set_xlabel("end-to-end p95 latency per item (ms)")
    ax.set_ylabel("course-assertion accuracy")
    ax.set_title(f"{configs.height} configurations")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
