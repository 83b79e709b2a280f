"""The checks of one reference over time: batches found in time order, history.parquet beside the reference,
and its table and plot.

history.parquet holds one row per checked batch: when, which batch (path, size, modification time), the
verdict, the tests that fired or stepped aside, the label-free estimates with their intervals, the
estimated mix and the advice. `raypipe monitor check` appends to it; `raypipe monitor history` reads it.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from raypipe.engine.rundir import RunDir
from raypipe.errors import DatasetError
from raypipe.monitor.check import CheckReport

HISTORY, PLOT = "history.parquet", "history.png"
CHECKS = "checks"  # where checks go under the reference when --out is not given
GLOB_CHARACTERS = "*?["


def batch_sources(batch: str) -> list[str]:
    """The batches `--batch` names, oldest first (modification time, then name): a glob's files, a folder's
    top-level Parquet files, or one batch (a file, a URI, a folder in the task's own layout)."""
    if "://" in batch or ":" in batch.split("/", 1)[0]:
        return [batch]
    if any(c in batch for c in GLOB_CHARACTERS):
        found = [p for p in glob.glob(batch) if os.path.isfile(p) or os.path.isdir(p)]
        if not found:
            raise DatasetError(f"--batch {batch}: the pattern matches no file")
        return _oldest_first(found)
    path = Path(batch)
    files = sorted(path.glob("*.parquet")) if path.is_dir() and not (path / "data").is_dir() else []
    return _oldest_first([str(f) for f in files]) if len(files) > 1 else [os.path.abspath(batch)]


def _oldest_first(paths: list[str]) -> list[str]:
    return sorted((os.path.abspath(p) for p in paths), key=lambda p: (os.path.getmtime(p), p))


def batch_stamp(source: str) -> dict[str, Any]:
    """What identifies a local batch file in the history: its path, size and modification time."""
    if not os.path.exists(source):
        return {"batch": source, "batch_bytes": None, "batch_mtime": None}
    info = os.stat(source)
    return {"batch": source, "batch_bytes": int(info.st_size), "batch_mtime": float(info.st_mtime)}


def read_history(reference: str) -> pl.DataFrame | None:
    store = RunDir(reference)
    return store.read_parquet(HISTORY) if store.exists(HISTORY) else None


def already_checked(reference: str, sources: list[str]) -> set[str]:
    """The sources the history holds with the same size and modification time (checked before)."""
    history = read_history(reference)
    if history is None:
        return set()
    seen = {(r["batch"], r["batch_bytes"], r["batch_mtime"]) for r in history.iter_rows(named=True)}
    return {s for s in sources if tuple(batch_stamp(s).values()) in seen}


def history_row(report: CheckReport, out: str) -> dict[str, Any]:
    """One row of history.parquet from a check's report."""
    found = report.as_json()
    row: dict[str, Any] = {
        "checked": found.get("created"),
        **batch_stamp(found.get("batch", "")),
        "report": out,
        "n_items": report.n_items,
        "drifted": report.drifted,
        "fired": ", ".join(t.name for t in report.tests if t.drifted),
        "stepped_aside": ", ".join(t.name for t in report.tests if t.stepped_aside),
        "min_p_corrected": min((t.p_corrected for t in report.tests), default=1.0),
        "mix": json.dumps(None if report.mix is None else report.mix.rows()),
        "advice": report.recommendation.get("message"),
        "switch": bool(report.recommendation.get("changed")),
    }
    for e in report.estimates:
        key = e.method.replace("-", "_")
        row |= {key: e.value, f"{key}_low": e.ci_low, f"{key}_high": e.ci_high}
    return row


def append_history(reference: str, row: dict[str, Any]) -> pl.DataFrame:
    """history.parquet with `row` added (written atomically beside the reference)."""
    store, new = RunDir(reference), pl.DataFrame([row])
    previous = read_history(reference)
    history = new if previous is None else pl.concat([previous, new], how="diagonal_relaxed")
    store.write_parquet(HISTORY, history)
    return history


def plot_history(history: pl.DataFrame, objective: str, path: str | None = None) -> Any:
    """The label-free estimates with their 95 % intervals over the checks, drifted checks in red; and the
    estimated mix's shares below. Written to `path` (PNG) when given; returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    x = list(range(1, history.height + 1))
    for method in ("mix_reweighted", "score_calibrated"):
        if method in history.columns:
            value, low, high = (history[c].to_numpy() for c in (method, f"{method}_low", f"{method}_high"))
            top.errorbar(x, value, yerr=[value - low, high - value], capsize=3, marker="o", label=method)
    for at, drifted in zip(x, history["drifted"].to_list(), strict=True):
        if drifted:
            top.axvspan(at - 0.4, at + 0.4, color="#d62728", alpha=0.15, lw=0)
    top.set_ylabel(f"estimated {objective}")
    top.set_title("checks over time (red: drift)")
    top.legend(fontsize=8)
    _plot_mix(bottom, history, x)
    bottom.set_xticks(x, [Path(b).stem[:16] for b in history["batch"].to_list()], rotation=30, fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _plot_mix(ax: Any, history: pl.DataFrame, x: list[int]) -> None:
    rows = [json.loads(m) for m in history["mix"].to_list()]
    labels = sorted({r["bin"] for found in rows if found for r in found})
    for label in labels:
        shares = [
            next((r["estimated"] for r in found if r["bin"] == label), None) if found else None
            for found in rows
        ]
        ax.plot(x, [float("nan") if s is None else s for s in shares], marker=".", label=label)
    ax.set_ylabel("estimated share")
    if labels:
        ax.legend(fontsize=7, ncol=4)
