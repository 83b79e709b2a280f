"""The report's charts as Vega-Lite specifications, built with Altair: objective against p95, the
configuration x slice heatmap, per-stage latency of a chosen configuration, and a race's live set."""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import polars as pl

WIDTH = 640


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts (NaN and infinities become null)."""
    rows = frame.to_dicts()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
    return rows


def with_data(chart: alt.TopLevelMixin, **datasets: pl.DataFrame) -> dict[str, Any]:
    """The chart as a Vega-Lite dict, its data added by name afterwards: Altair neither validates nor walks
    the rows (which costs seconds on a large run)."""
    spec = chart.configure_view(stroke=None).to_dict(validate=False)
    spec["datasets"] = {name: records(frame) for name, frame in datasets.items()}
    return spec


def scatter(points: pl.DataFrame, objective: str, sla_p95_ms: float | None, sla_min: float | None) -> dict:
    """One point per configuration (`label`, `objective`, `ci_low`, `ci_high`, `p95`, `status`, `pareto`),
    its interval as a vertical rule, the Pareto front joined, the SLA bounds as dashed lines."""
    data = alt.Data(name="points")
    x = alt.X("p95:Q", title="end-to-end p95 service time per item (ms)", scale=alt.Scale(zero=False))
    y = alt.Y("objective:Q", title=objective, scale=alt.Scale(zero=False))
    tooltip = [
        alt.Tooltip("label:N", title="configuration"),
        alt.Tooltip("objective:Q", format=".3f"),
        alt.Tooltip("ci_low:Q", title="interval low", format=".3f"),
        alt.Tooltip("ci_high:Q", title="interval high", format=".3f"),
        alt.Tooltip("p95:Q", title="p95 ms", format=".1f"),
        alt.Tooltip("status:N", title="decision"),
        alt.Tooltip("sla:N", title="SLA"),
    ]
    zoom = alt.selection_interval(bind="scales")
    base = alt.Chart(data)
    intervals = base.mark_rule(opacity=0.45).encode(x=x, y="ci_low:Q", y2="ci_high:Q", color="status:N")
    dots = (
        base.mark_point(filled=True, size=70)
        .encode(x=x, y=y, color=alt.Color("status:N", title="decision"), shape="sla:N", tooltip=tooltip)
        .add_params(zoom)
        .properties(name="points")
    )
    front = (
        base.transform_filter("datum.pareto")
        .mark_line(color="#d62728", strokeDash=[2, 2])
        .encode(x=x, y=y, order="p95:Q")
    )
    layers: list[alt.Chart] = [intervals, front, dots]
    if sla_p95_ms:
        rule = alt.Chart(alt.Data(values=[{"p95": sla_p95_ms}])).mark_rule(color="#1f77b4", strokeDash=[6, 4])
        layers.append(rule.encode(x="p95:Q"))
    if sla_min is not None:
        rule = alt.Chart(alt.Data(values=[{"objective": sla_min}]))
        layers.append(rule.mark_rule(color="#1f77b4", strokeDash=[6, 4]).encode(y="objective:Q"))
    return with_data(alt.layer(*layers).properties(width=WIDTH, height=360), points=points)


def heatmap(cells: pl.DataFrame, objective: str, n_configs: int) -> dict:
    """Configuration (`label`) x slice cell (`slice`): colour the objective, text the n, a star the winner."""
    data = alt.Data(name="cells")
    x = alt.X("slice:N", title="slice cell", axis=alt.Axis(labelAngle=-40, labelLimit=160))
    y = alt.Y("label:N", title=None, sort=alt.EncodingSortField("rank", order="ascending"))
    tooltip = [
        alt.Tooltip("label:N", title="configuration"),
        alt.Tooltip("slice:N"),
        alt.Tooltip("n:Q"),
        alt.Tooltip("objective:Q", format=".3f"),
        alt.Tooltip("ci_low:Q", format=".3f"),
        alt.Tooltip("ci_high:Q", format=".3f"),
        alt.Tooltip("winner:N", title="cell winner"),
        alt.Tooltip("note:N"),
    ]
    base = alt.Chart(data).encode(x=x, y=y)
    rects = (
        base.mark_rect()
        .encode(
            color=alt.Color("objective:Q", title=objective, scale=alt.Scale(scheme="viridis")),
            tooltip=tooltip,
        )
        .properties(name="cells")
    )
    counts = base.mark_text(fontSize=8, color="white").encode(text="n:Q")
    stars = (
        base.transform_filter("datum.is_winner")
        .mark_text(dx=9, fontSize=11, color="#ffcc00")
        .encode(text=alt.value("★"))
    )
    height = max(120, 14 * n_configs)
    return with_data(
        alt.layer(rects, counts, stars).properties(width=alt.Step(34), height=height), cells=cells
    )


def stage_latency(rows: pl.DataFrame, options: list[str], first: str) -> dict:
    """Per stage of the configuration chosen in the select box: p50 and p95 of service and busy time."""
    pick = alt.param(
        name="config", value=first, bind=alt.binding_select(options=options, name="configuration ")
    )
    data = alt.Data(name="stages")
    bars = (
        alt.Chart(data)
        .add_params(pick)
        .transform_filter("datum.label == config")
        .mark_bar()
        .encode(
            x=alt.X("stage:N", sort=None, title="stage"),
            xOffset="measure:N",
            y=alt.Y("ms:Q", title="ms per item"),
            color=alt.Color("measure:N", title="time"),
            tooltip=["stage:N", "measure:N", alt.Tooltip("ms:Q", format=".2f")],
        )
        .properties(width=WIDTH, height=260, name="stage_bars")
    )
    return with_data(bars, stages=rows)


def live_set(configs: pl.DataFrame, looks: pl.DataFrame | None, n_items: int) -> dict:
    """A race: each configuration's bar runs to the items it was raced on (dropped ones end early, with the
    reason on hover), over the number of configurations still live at each look."""
    bars = (
        alt.Chart(alt.Data(name="raced"))
        .mark_bar(height=9)
        .encode(
            x=alt.X("raced:Q", title="items", scale=alt.Scale(domain=[0, n_items])),
            y=alt.Y("label:N", title=None, sort=alt.EncodingSortField("raced", order="descending")),
            color=alt.Color("state:N", title=None),
            tooltip=["label:N", "state:N", "raced:Q", "reason:N"],
        )
        .properties(width=WIDTH, height=max(100, 13 * configs.height), name="race_bars")
    )
    if looks is None or looks.is_empty():
        return with_data(bars, raced=configs)
    line = (
        alt.Chart(alt.Data(name="looks"))
        .mark_line(point=True, interpolate="step-after")
        .encode(
            x=alt.X("items:Q", scale=alt.Scale(domain=[0, n_items])),
            y=alt.Y("live:Q", title="live configurations"),
            tooltip=["look:Q", "items:Q", "live:Q", "dropped:N"],
        )
        .properties(width=WIDTH, height=140)
    )
    return with_data(alt.vconcat(line, bars), raced=configs, looks=looks)
