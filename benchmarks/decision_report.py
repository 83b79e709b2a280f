"""The decision benchmark's tables: per rule and size, how often it answers and how often that answer is
wrong (with a Clopper-Pearson interval), what --until-decided needs, and the raw files behind them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import beta

from benchmarks.summary import markdown_table, vertical_table

RULE_NAMES = {
    "decision": "raypipe's decision (certified picks)",
    "previous": "previous rule (fastest of the sign-test group)",
    "argmax": "argmax of point estimates (SLA on point estimates)",
    "asha": "Ray Tune ASHA, simulated offline",
    "until-decided": "--until-decided (looks of 10, excluded configurations masked)",
    "until-decided (no masking)": "--until-decided without masking",
}
# the target's allowance: --until-decided's mean stopping time over the fixed size of the same certainty
TARGET_RATIO = 0.5


def clopper_pearson(failures: int, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """The exact two-sided interval of a binomial proportion; (None, None) without trials."""
    if n == 0:
        return None, None
    tail = (1 - level) / 2
    low = 0.0 if failures == 0 else float(beta.ppf(tail, failures, n - failures + 1))
    high = 1.0 if failures == n else float(beta.ppf(1 - tail, failures + 1, n - failures))
    return low, high


def _mean(values: pl.Series) -> float | None:
    values = values.drop_nulls()
    return float(values.mean()) if len(values) else None  # type: ignore[arg-type]


def rule_row(rows: pl.DataFrame) -> dict[str, Any]:
    """One (rule, size): answers (certified picks for raypipe's rule, any pick for the others), their
    failure rate with its interval, the regret of undecided provisional picks, items and calls."""
    answered = rows.filter(pl.col("status").is_in(["certified", "picked"]))
    undecided = rows.filter(pl.col("status") == "undecided")
    failures = int(answered["failure"].sum())
    low, high = clopper_pearson(failures, answered.height)
    return {
        "runs": rows.height,
        "answered": answered.height,
        "p_answered": answered.height / rows.height,
        "failures": failures,
        "p_failure_given_answer": failures / answered.height if answered.height else None,
        "ci_low": low,
        "ci_high": high,
        "mean_regret_answered": _mean(answered["regret"]),
        "undecided": undecided.height,
        "mean_regret_undecided": _mean(undecided["regret"]),
        "p_failure_undecided": _mean(undecided["failure"].cast(pl.Float64)),
        "undecided_pick_misses_sla": int((~undecided["truly_meets_sla"].fill_null(True)).sum()),
        "no_pick": rows.filter(pl.col("pick").is_null()).height,
        "mean_items": _mean(rows["items"].cast(pl.Float64)),
        "median_items": float(rows["items"].median()),  # type: ignore[arg-type]
        "mean_items_certified": _mean(answered["items"].cast(pl.Float64)),
        "mean_evaluations": _mean(rows["evaluations"].cast(pl.Float64)),
    }


def rule_table(rows: pl.DataFrame) -> pl.DataFrame:
    out = []
    for (rule, n), part in rows.group_by(["rule", "n"], maintain_order=True):
        out.append({"rule": rule, "n": n} | rule_row(part))
    return pl.DataFrame(out, infer_schema_length=None)


def certified_by(until: pl.DataFrame, grid: list[int]) -> list[dict[str, Any]]:
    """P(a fixed-size run of n items certifies), read from the unmasked --until-decided stopping times."""
    plain = until.filter(pl.col("rule") == "until-decided (no masking)")
    stops = np.where(plain["status"] == "certified", plain["items"].to_numpy(), np.inf)
    return [{"n": n, "p_certified": float((stops <= n).mean())} for n in grid]


def smallest_fixed_n(curve: list[dict[str, Any]], certainty: float) -> int | None:
    """The smallest fixed size that certifies with probability at least `certainty`."""
    matching = [c["n"] for c in curve if c["p_certified"] >= certainty - 1e-12]
    return min(matching) if matching else None


def target(until: pl.DataFrame, curve: list[dict[str, Any]]) -> dict[str, Any]:
    """--until-decided's mean stopping time against the smallest fixed size certifying as often; beside
    it, the fixed sizes that certify half and 90 % of the time."""
    masked = until.filter(pl.col("rule") == "until-decided")
    p_until = float((masked["status"] == "certified").mean())  # type: ignore[arg-type]
    fixed_n = smallest_fixed_n(curve, p_until) if p_until > 0 else None  # nothing certified: no target
    mean_items = float(masked["items"].mean())  # type: ignore[arg-type]
    ratio = mean_items / fixed_n if fixed_n else None
    return {
        "p_certified_until_decided": p_until,
        "mean_items_until_decided": mean_items,
        "median_items_until_decided": float(masked["items"].median()),  # type: ignore[arg-type]
        "smallest_fixed_n_as_certain": fixed_n,
        "ratio": ratio,
        "allowed_ratio": TARGET_RATIO,
        "met": None if ratio is None else bool(ratio <= TARGET_RATIO),
        "fixed_n_certifying_half_the_time": smallest_fixed_n(curve, 0.5),
        "fixed_n_certifying_90_percent": smallest_fixed_n(curve, 0.9),
    }


def summarize(
    draws: pl.DataFrame, until: pl.DataFrame, context: dict[str, Any], sizes: list[int]
) -> dict[str, Any]:
    found = {
        "context": context,
        "fixed": rule_table(draws).to_dicts(),
        "until": [],
        "curve": [],
        "target": {},
    }
    if until.height:  # --until 0 measures fixed sizes only
        cap = int(context["cap"])
        grid = sorted(set(range(context["look"], cap + 1, context["look"])) | {cap, *sizes})
        curve = certified_by(until, grid)
        found |= {"until": rule_table(until).to_dicts(), "curve": curve, "target": target(until, curve)}
    return found


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def headline(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The table BENCHMARKS.md shows: one row per rule and size."""
    out = []
    for r in rows:
        interval = "(none answered)" if r["ci_low"] is None else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        out.append(
            {
                "rule": r["rule"],
                "n": r["n"],
                "P(answer)": _cell(r["p_answered"]),
                "P(fail given answer) [95 % CI]": f"{_cell(r['p_failure_given_answer'])} {interval}",
                "failures / answers": f"{r['failures']} / {r['answered']}",
                "mean regret, answered": _cell(r["mean_regret_answered"]),
                "mean regret, undecided": _cell(r["mean_regret_undecided"]),
                "undecided: P(fail)": _cell(r["p_failure_undecided"]),
                "undecided picks truly missing the SLA": r["undecided_pick_misses_sla"],
                "items (mean / median)": f"{r['mean_items']:.1f} / {r['median_items']:.0f}",
                "calls per run (mean)": f"{r['mean_evaluations']:.0f}",
            }
        )
    return pl.DataFrame(out)


def markdown(found: dict[str, Any], truth: pl.DataFrame, label: str) -> str:
    context = {k: v for k, v in found["context"].items() if k not in ("labels", "run_decision")}
    lines = [f"# Decision guarantee: {label}", "", vertical_table(context), ""]
    lines += ["## Fixed-size subsamples", "", markdown_table(headline(found["fixed"])), ""]
    if found["until"]:
        lines += ["## --until-decided", "", markdown_table(headline(found["until"])), ""]
        lines += ["## Target: --until-decided against a fixed size", "", vertical_table(found["target"]), ""]
    lines += ["## The truth (full run, point estimates)", "", markdown_table(truth), ""]
    return "\n".join(lines)


def write_outputs(
    found: dict[str, Any],
    truth: pl.DataFrame,
    draws: pl.DataFrame,
    until: pl.DataFrame,
    out: Path,
    label: str,
) -> str:
    """label.json (every summary), label.md, label-truth.csv, label-draws.csv, label-until.csv."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{label}.json").write_text(json.dumps(found, indent=1, default=str))
    truth.write_csv(out / f"{label}-truth.csv", float_precision=4)
    draws.write_csv(out / f"{label}-draws.csv", float_precision=4)
    if until.height:
        until.write_csv(out / f"{label}-until.csv", float_precision=4)
    text = markdown(found, truth, label)
    (out / f"{label}.md").write_text(text)
    return text
