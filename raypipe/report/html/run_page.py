"""The run report's content, section by section, from a finished run directory; a section the run cannot
fill (an older run, a missing file) becomes a note instead."""

from __future__ import annotations

import os
from typing import Any

import polars as pl
import pyarrow as pa

from raypipe.engine.rundir import SEARCH
from raypipe.report.html import charts
from raypipe.report.html.items import build_browser
from raypipe.report.reading import RunView
from raypipe.spec import columns


def label(row: dict[str, Any], stages: list[str]) -> str:
    return f"{row['config_id'][:8]} " + "/".join(str(row.get(s)) for s in stages)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


def decision(view: RunView) -> dict[str, Any]:
    """The manifest's decision; for runs from before decisions were recorded, rank 1 with a note."""
    found = dict(view.manifest.get("decision") or {})
    if not found:
        first = view.configs.row(0, named=True) if view.configs.height else {}
        return {
            "status": "not recorded",
            "config_id": first.get("config_id"),
            "note": "this run predates recorded decisions (certified / undecided): rank 1 is shown",
        }
    return found


def table(view: RunView) -> dict[str, Any]:
    """The ranked table's columns and rows, each cell a (text, sort key) pair."""
    configs, stages = view.configs, view.stage_names
    headline = [m.name for m in view.headline()]
    columns = ["#", "configuration", *stages, "decision", f"{view.objective.name} [95% CI]", *headline]
    columns += ["p50 ms", "p95 ms [CI]", "busy p95 ms", "errors", "SLA", "Pareto", "wrong items"]
    rows = []
    for r in configs.iter_rows(named=True):
        status = r.get("decision") or ("dropped" if r.get("dropped_after_items") is not None else "")
        sla = r.get("sla_status") or ("meets" if r.get("sla_pass") else "misses")
        p95_ci = ""
        if _num(r.get("p95_ci_low")) is not None and _num(r.get("p95_ci_high")) is not None:
            p95_ci = f" [{r['p95_ci_low']:.1f}, {r['p95_ci_high']:.1f}]"
        cells = [
            ("-" if r.get("rank") is None else str(r["rank"]), r.get("rank")),
            (r["config_id"][:8], r["config_id"]),
            *[(str(r.get(s)), str(r.get(s))) for s in stages],
            (status, status),
            (_interval(r, "objective"), _num(r.get("objective"))),
            *[(_fmt(r.get(m)), _num(r.get(m))) for m in headline],
            (_fmt(r.get("latency_p50_ms"), 1), _num(r.get("latency_p50_ms"))),
            (_fmt(r.get("latency_p95_ms"), 1) + p95_ci, _num(r.get("latency_p95_ms"))),
            (_fmt(r.get("busy_p95_ms"), 1), _num(r.get("busy_p95_ms"))),
            (str(r.get("n_errors", "")), r.get("n_errors")),
            (sla, sla),
            ("*" if r.get("pareto") else "", 1 if r.get("pareto") else 0),
        ]
        reason = r.get("decision_reason") or r.get("drop_reason") or r.get("sla_miss") or ""
        rows.append({"config_id": r["config_id"], "cells": cells, "reason": reason, "sla": sla})
    return {"columns": columns, "rows": rows, "stages": stages, "stage_offset": 2}


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if _num(value) is None else f"{value:.{digits}f}"


def _interval(r: dict[str, Any], name: str) -> str:
    low, high = _num(r.get(f"{name}_ci_low")), _num(r.get(f"{name}_ci_high"))
    if low is None or high is None:
        return _fmt(r.get(name))
    return f"{_fmt(r.get(name))} [{low:.3f}, {high:.3f}]"


def scatter_points(view: RunView) -> pl.DataFrame:
    rows = []
    for r in view.configs.iter_rows(named=True):
        rows.append(
            {
                "label": label(r, view.stage_names),
                "objective": _num(r.get("objective")),
                "ci_low": _num(r.get("objective_ci_low")),
                "ci_high": _num(r.get("objective_ci_high")),
                "p95": _num(r.get("latency_p95_ms")),
                "status": r.get("decision") or ("pareto" if r.get("pareto") else "other"),
                "pareto": bool(r.get("pareto")),
                "sla": r.get("sla_status") or ("meets" if r.get("sla_pass") else "misses"),
            }
        )
    return pl.DataFrame(rows)


def heatmap_cells(view: RunView) -> pl.DataFrame | None:
    slices = view.slices if view.run_dir.exists("slices.parquet") else pl.DataFrame()
    if slices.is_empty():
        return None
    ranks = {
        r["config_id"]: (r.get("rank"), label(r, view.stage_names))
        for r in view.configs.iter_rows(named=True)
    }
    cells = slices.with_columns(
        pl.concat_str([pl.col("dimension"), pl.lit("="), pl.col("cell").cast(pl.String)]).alias("slice"),
        pl.col("config_id").replace_strict({k: v[1] for k, v in ranks.items()}, default=None).alias("label"),
        pl.col("config_id").replace_strict({k: v[0] for k, v in ranks.items()}, default=None).alias("rank"),
    )
    if "is_winner" not in cells.columns:
        cells = cells.with_columns(
            (pl.col("winner") == pl.col("config_id")).fill_null(False).alias("is_winner")
        )
    keep = ["slice", "label", "rank", "n", "objective", "ci_low", "ci_high", "winner", "note", "is_winner"]
    return cells.select([c for c in keep if c in cells.columns])


def stage_rows(view: RunView) -> pl.DataFrame | None:
    """Long rows (label, stage, measure, ms): service p50/p95 and busy p50/p95 per stage, from the items."""
    items, stages = view.items, view.stage_names
    wanted = [columns.stage_ms("latency", s) for s in stages] + [columns.stage_ms("busy", s) for s in stages]
    if not all(c in items.columns for c in wanted):
        return None
    aggs = []
    for s in stages:
        for kind, column in (
            ("service", columns.stage_ms("latency", s)),
            ("busy", columns.stage_ms("busy", s)),
        ):
            for q in (0.5, 0.95):
                aggs.append(pl.col(column).quantile(q).alias(f"{s}|{kind} p{round(q * 100)}"))
    wide = items.group_by("config_id").agg(aggs)
    labels = {r["config_id"]: label(r, stages) for r in view.configs.iter_rows(named=True)}
    long = wide.unpivot(index="config_id", variable_name="key", value_name="ms")
    return long.select(
        pl.col("config_id").replace_strict(labels, default=None).alias("label"),
        pl.col("key").str.split_exact("|", 1).struct.rename_fields(["stage", "measure"]).struct.unnest(),
        "ms",
    ).drop_nulls("label")


def race(view: RunView) -> dict | None:
    configs = view.configs
    if "dropped_after_items" not in configs.columns or configs["dropped_after_items"].is_null().all():
        return None
    n_items = int(view.manifest.get("n_items") or configs["n_items"].max() or 0)
    reason = pl.coalesce(
        *[pl.col(c) for c in ("drop_reason", "decision_reason") if c in configs.columns], pl.lit("")
    )
    bars = configs.select(
        pl.struct(["config_id", *view.stage_names])
        .map_elements(lambda r: label(r, view.stage_names), pl.String)
        .alias("label"),
        pl.col("dropped_after_items").fill_null(pl.col("n_items")).alias("raced"),
        pl.when(pl.col("dropped_after_items").is_null())
        .then(pl.lit("kept"))
        .otherwise(pl.lit("dropped"))
        .alias("state"),
        reason.alias("reason"),
    )
    looks = view.run_dir.read_parquet(SEARCH) if view.run_dir.exists(SEARCH) else None
    return charts.live_set(bars, looks, n_items)


def dataset_table(view: RunView, dataset: str | None) -> pa.Table | None:
    """The run's dataset (for images and truth), or None where it cannot be read any more."""
    request = view.run_dir.read_json("run.json") if view.run_dir.exists("run.json") else {}
    source = dataset or request.get("dataset") or view.spec.dataset.source
    if not source:
        return None
    try:
        return view.task.load(source if "://" in source else os.path.expanduser(source))
    except Exception:  # noqa: BLE001 - any failure to read the data means placeholders, not a broken report
        return None


def context(view: RunView, dataset: str | None = None) -> dict[str, Any]:
    """Everything the run template shows."""
    notes: list[str] = []
    sla = view.spec.sla
    points = scatter_points(view)
    sla_min = sla.min.get(view.objective.name)
    cells = heatmap_cells(view)
    if cells is None:
        notes.append("no slice results in this run: no configuration x slice heatmap")
    latency = stage_rows(view)
    if latency is None:
        notes.append("this run's items have no per-stage service and busy times: no per-stage latency chart")
    labels = [label(r, view.stage_names) for r in view.configs.iter_rows(named=True)]
    configs = [
        {"config_id": r["config_id"], "label": lbl}
        for r, lbl in zip(view.configs.iter_rows(named=True), labels, strict=True)
    ]
    table_data = dataset_table(view, dataset)
    browser = build_browser(view.task, view.items, view.objective, configs, table_data)
    specs = {
        "scatter": charts.scatter(points, view.objective.name, sla.p95_latency_ms, sla_min),
        "heatmap": None if cells is None else charts.heatmap(cells, view.objective.name, len(labels)),
        "latency": None if latency is None else charts.stage_latency(latency, labels, labels[0]),
        "race": race(view),
    }
    return {
        "title": f"raypipe: {view.spec.name}",
        "manifest": view.manifest,
        "spec": view.spec,
        "objective": view.objective,
        "decision": decision(view),
        "table": table(view),
        "specs": specs,
        "marks": {"points": points.height, "cells": 0 if cells is None else cells.height},
        "browser": browser.payload,
        "notes": notes + browser.notes,
        "sla": sla,
    }
