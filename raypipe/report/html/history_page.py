"""The monitoring history's report: one reference's checks over time, from its history.parquet rows (one
per checked batch, as `raypipe.monitor.history.history_row` writes them): the label-free estimates with
their intervals, the estimated mix, and a sortable table of the checks linking each check's own report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from raypipe.report.html.charts import WIDTH, with_data

ESTIMATES = ("mix_reweighted", "score_calibrated")  # the label-free methods a check records


def _label(batch: str | None, at: int) -> str:
    return f"{at}. {Path(batch or '').stem[:24] or 'batch'}"


def estimate_points(history: pl.DataFrame) -> pl.DataFrame:
    """One row per check and label-free method that has a value: `check`, `label`, `method`, `value`,
    `low`, `high`, `verdict`."""
    rows = []
    for at, row in enumerate(history.iter_rows(named=True), start=1):
        for method in ESTIMATES:
            if row.get(method) is None:
                continue
            rows.append(
                {
                    "check": at,
                    "label": _label(row.get("batch"), at),
                    "method": method.replace("_", "-"),
                    "value": row[method],
                    "low": row.get(f"{method}_low"),
                    "high": row.get(f"{method}_high"),
                    "verdict": "drift" if row.get("drifted") else "no drift",
                }
            )
    schema = {"check": pl.Int64, "label": pl.String, "method": pl.String, "value": pl.Float64,
              "low": pl.Float64, "high": pl.Float64, "verdict": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def mix_points(history: pl.DataFrame) -> pl.DataFrame:
    """One row per check and mix bin: `check`, `label`, `bin`, `estimated`, `ci_low`, `ci_high`."""
    rows = []
    for at, row in enumerate(history.iter_rows(named=True), start=1):
        for found in json.loads(row.get("mix") or "null") or []:
            rows.append({"check": at, "label": _label(row.get("batch"), at), "bin": str(found["bin"]),
                         **{k: found.get(k) for k in ("estimated", "ci_low", "ci_high")}})  # fmt: skip
    schema = {"check": pl.Int64, "label": pl.String, "bin": pl.String, "estimated": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def estimates_chart(points: pl.DataFrame, objective: str) -> dict | None:
    """Each check's label-free estimates as points (a method per colour, drifted checks as crosses) with
    their 95 % intervals as rules."""
    if points.is_empty():
        return None
    x = alt.X("check:O", title="check (oldest first)")
    base = alt.Chart(alt.Data(name="estimates"))
    intervals = base.mark_rule(opacity=0.6).encode(x=x, y="low:Q", y2="high:Q", color="method:N")
    dots = (
        base.mark_point(filled=True, size=80)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=f"estimated {objective}", scale=alt.Scale(zero=False)),
            color=alt.Color("method:N", title="label-free estimate"),
            shape=alt.Shape(
                "verdict:N", scale=alt.Scale(domain=["no drift", "drift"], range=["circle", "cross"])
            ),
            tooltip=["label:N", "method:N", alt.Tooltip("value:Q", format=".3f"),
                     alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f"), "verdict:N"],
        )
        .properties(name="estimates")
    )  # fmt: skip
    return with_data(alt.layer(intervals, dots).properties(width=WIDTH, height=260), estimates=points)


def mix_chart(points: pl.DataFrame) -> dict | None:
    """The estimated share of each mix bin over the checks, with its 95 % interval as a band."""
    if points.is_empty():
        return None
    x = alt.X("check:O", title="check (oldest first)")
    base = alt.Chart(alt.Data(name="mix")).encode(x=x, color=alt.Color("bin:N", title="slice"))
    band = base.mark_area(opacity=0.15).encode(y="ci_low:Q", y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("estimated:Q", title="estimated share of the batch"),
        tooltip=["label:N", "bin:N", alt.Tooltip("estimated:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")],
    )  # fmt: skip
    return with_data(alt.layer(band, line).properties(width=WIDTH, height=200), mix=points)


def _link(check_dir: str | None, page_dir: str | None) -> str | None:
    """The check's report.html as a link from the history page: relative where both are local files."""
    if not check_dir:
        return None
    if "://" in check_dir or page_dir is None:
        return check_dir.rstrip("/") + "/report.html"
    target = os.path.join(check_dir, "report.html")
    return os.path.relpath(target, page_dir) if os.path.exists(target) else None


def context(history: pl.DataFrame, objective: str, reference: str, page_dir: str | None) -> dict[str, Any]:
    """Everything the history template shows."""
    rows = []
    for at, row in enumerate(history.iter_rows(named=True), start=1):
        method = next((m for m in ESTIMATES if row.get(m) is not None), None)
        bounds = (
            None if method is None else (row[method], row.get(f"{method}_low"), row.get(f"{method}_high"))
        )
        rows.append(
            {
                "at": at,
                "checked": str(row.get("checked") or "")[:19],
                "batch": Path(row.get("batch") or "").name,
                "n_items": row.get("n_items"),
                "drifted": bool(row.get("drifted")),
                "fired": row.get("fired") or "",
                "stepped_aside": row.get("stepped_aside") or "",
                "min_p": row.get("min_p_corrected"),
                "method": method,
                "estimate": bounds,
                "advice": row.get("advice") or "",
                "switch": bool(row.get("switch")),
                "link": _link(row.get("report"), page_dir),
            }
        )  # fmt: skip
    drifted = sum(r["drifted"] for r in rows)
    return {
        "title": f"raypipe monitor history: {drifted} of {len(rows)} checks drifted",
        "reference": reference,
        "objective": objective,
        "rows": rows,
        "specs": {
            "estimates": estimates_chart(estimate_points(history), objective),
            "mix": mix_chart(mix_points(history)),
        },
    }
