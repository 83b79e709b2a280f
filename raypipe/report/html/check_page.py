"""The monitor check report's content, from the check directory's files alone: report.json, the batch's
features.parquet and, where the profile can still be read, the reference's features beside them."""

from __future__ import annotations

import posixpath
from typing import Any

import altair as alt
import polars as pl

from raypipe.engine.rundir import RunDir
from raypipe.report.html.charts import WIDTH, records

REPORT_JSON, FEATURES = "report.json", "features.parquet"
REFERENCE_JSONS = ("reference.json", "profile.json")  # the second: references written before issue 18
SKIP = {"item_id", "error", "source"}


def _profile(report: dict[str, Any]) -> RunDir | None:
    location = report.get("reference") or report.get("profile")  # "profile": checks before issue 18
    if not location:
        return None
    try:
        store = RunDir(location)
        return store if store.exists(FEATURES) else None
    except Exception:  # noqa: BLE001 - a profile that moved leaves the batch side only
        return None


def _kinds(profile: RunDir | None, batch: pl.DataFrame) -> dict[str, str]:
    found = next((n for n in REFERENCE_JSONS if profile and profile.exists(n)), None)
    declared = profile.read_json(found).get("features", {}) if profile and found else {}
    if isinstance(declared, dict) and declared:
        return {k: v for k, v in declared.items() if k in batch.columns}
    return {
        c: "continuous" if batch[c].dtype.is_numeric() else "categorical"
        for c in batch.columns
        if c not in SKIP and not c.startswith("bin_")
    }


def distributions(reference: pl.DataFrame | None, batch: pl.DataFrame, kinds: dict[str, str]) -> dict | None:
    """Reference against batch for each feature: overlaid density histograms, or bars of category shares."""
    frames = [batch.with_columns(pl.lit("batch").alias("sample"))]
    if reference is not None:
        frames.append(reference.with_columns(pl.lit("reference").alias("sample")))
    charts = []
    for name, kind in kinds.items():
        values = [
            f.select(pl.col(name).alias("value"), "sample").drop_nulls("value")
            for f in frames
            if name in f.columns
        ]
        if not values:
            continue
        long = pl.concat(
            [
                v.with_columns(pl.col("value").cast(pl.String if kind != "continuous" else pl.Float64))
                for v in values
            ]
        )
        data = alt.Data(values=records(long))
        color = alt.Color(
            "sample:N", scale=alt.Scale(domain=["reference", "batch"], range=["#1f77b4", "#ff7f0e"])
        )
        if kind == "continuous":
            chart = (
                alt.Chart(data)
                .transform_bin("bin", "value", bin=alt.Bin(maxbins=20))
                .transform_aggregate(count="count()", groupby=["bin", "sample"])
                .transform_joinaggregate(total="sum(count)", groupby=["sample"])
                .transform_calculate(share="datum.count / datum.total")
                .mark_bar(opacity=0.55)
                .encode(x=alt.X("bin:Q", title=name), y=alt.Y("share:Q", stack=None), color=color)
            )
        else:
            chart = (
                alt.Chart(data)
                .transform_aggregate(count="count()", groupby=["value", "sample"])
                .transform_joinaggregate(total="sum(count)", groupby=["sample"])
                .transform_calculate(share="datum.count / datum.total")
                .mark_bar()
                .encode(x=alt.X("value:N", title=name), xOffset="sample:N", y="share:Q", color=color)
            )
        charts.append(chart.properties(width=260, height=140, title=name))
    if not charts:
        return None
    rows = [alt.hconcat(*charts[i : i + 2]) for i in range(0, len(charts), 2)]
    return alt.vconcat(*rows).to_dict(validate=False)


def mix_chart(mix: dict[str, Any] | None) -> dict | None:
    if not mix or not mix.get("bins"):
        return None
    data = alt.Data(values=mix["bins"])
    base = alt.Chart(data).encode(y=alt.Y("bin:N", title=mix.get("attribute")))
    estimated = base.mark_bar(opacity=0.6).encode(
        x=alt.X("estimated:Q", title="share of the batch"),
        tooltip=["bin:N", "estimated:Q", "ci_low:Q", "ci_high:Q"],
    )
    interval = base.mark_rule(strokeWidth=2).encode(x="ci_low:Q", x2="ci_high:Q")
    reference = base.mark_tick(color="#1f77b4", thickness=3).encode(x="reference:Q", tooltip=["reference:Q"])
    return (
        alt.layer(estimated, interval, reference)
        .properties(width=WIDTH, height=24 * len(mix["bins"]))
        .to_dict(validate=False)
    )


def context(store: RunDir) -> dict[str, Any]:
    """Everything the check template shows."""
    report = store.read_json(REPORT_JSON)
    notes = []
    batch = store.read_parquet(FEATURES) if store.exists(FEATURES) else None
    profile = _profile(report)
    reference = profile.read_parquet(FEATURES) if profile else None
    if reference is None:
        notes.append(f"the profile {report.get('profile')} cannot be read here: batch distributions only")
    if batch is not None and "error" in batch.columns:
        batch = batch.filter(pl.col("error").is_null())
    if reference is not None and "error" in reference.columns:
        reference = reference.filter(pl.col("error").is_null())
    kinds = _kinds(profile, batch) if batch is not None else {}
    if batch is None:
        notes.append("this check directory has no features.parquet: no distributions")
    tests = sorted(report.get("tests", []), key=lambda t: t.get("p_corrected", 1.0))
    specs = {
        "features": distributions(reference, batch, kinds) if batch is not None else None,
        "mix": mix_chart(report.get("mix")),
    }
    return {
        "title": f"raypipe monitor check: {'drift' if report.get('drifted') else 'no drift'}",
        "report": report,
        "tests": tests,
        "specs": specs,
        "notes": notes,
        "n_features": len(kinds),
        "run_report": posixpath.join("run", "report.html") if store.exists("run/report.html") else None,
    }
