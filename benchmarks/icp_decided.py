"""The full icp.yaml space run until decided (issue 19, item 3): what it spent, what it dropped and when, what
it decided, and its cost against racing's own exhaustive estimate, from a finished run directory.

The run itself is the user's command, timed by GNU time (its "Maximum resident set size" is the driver's
peak; the actors are other processes):

    /usr/bin/time -v raypipe run configs/icp.yaml --until-decided --max-items 48 --out RUN_DIR \
        > terminal.txt 2> time.txt
    python benchmarks/icp_decided.py RUN_DIR --time time.txt [--out benchmarks/results/icp]

Writes icp-until-decided.json (the raw numbers) and icp-until-decided.md (the tables BENCHMARKS.md
section 2 quotes) under --out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import polars as pl


def time_report(path: Path | None) -> dict[str, float]:
    """Wall seconds, CPU seconds and the driver's peak RSS (MiB) from `/usr/bin/time -v` output."""
    if path is None or not path.exists():
        return {}
    text = path.read_text(errors="replace")
    found: dict[str, float] = {}
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", text)
    if wall:
        hours, minutes, seconds = wall.groups()
        found["wall_seconds"] = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if peak:
        found["driver_peak_mib"] = int(peak.group(1)) / 1024
    return found


def summarize(run_dir: Path, time_file: Path | None) -> dict[str, Any]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    configs = pl.read_parquet(run_dir / "configs.parquet")
    looks = pl.read_parquet(run_dir / "search.parquet") if (run_dir / "search.parquet").exists() else None
    stages = [stage["name"] for stage in manifest["spec"]["stages"]]
    search, decision = manifest["search"], manifest["decision"]
    dropped = configs.filter(pl.col("dropped_after_items").is_not_null())
    by_look = (
        dropped.group_by("dropped_after_items")
        .agg(pl.len().alias("dropped"), pl.col("ocr").value_counts().alias("by_ocr"))
        .sort("dropped_after_items")
    )
    pick = configs.filter(pl.col("config_id") == decision.get("config_id"))
    return {
        "items_available": decision.get("items_available"),
        "items_used": decision.get("n_items"),
        "configurations": manifest["n_configs"],
        "streaming_seconds": manifest["wall_seconds"],
        **time_report(time_file),
        "stopped": search.get("stopped"),
        "decision": decision.get("headline"),
        "status": decision.get("status"),
        "pick": None if pick.is_empty() else {s: pick[s][0] for s in stages},
        "pick_objective": None if pick.is_empty() else pick["objective"][0],
        "pick_p95_ms": None if pick.is_empty() else pick["latency_p95_ms"][0],
        "certified": len(decision.get("certified") or []),
        "survivors": len(search.get("survivors") or []),
        "cpu_seconds_spent": search.get("cpu_seconds_spent"),
        "exhaustive_cpu_seconds_estimate": search.get("exhaustive_cpu_seconds_estimate"),
        "engine_fraction": search.get("engine_fraction"),
        "stage_cpu_seconds": {s: manifest["work"][s]["cpu_seconds"] for s in stages},
        "stage_calls": {s: manifest["work"][s]["calls"] for s in stages},
        "ocr_engines": ocr_engines(run_dir),
        "drops": [
            {
                "after_items": row["dropped_after_items"],
                "dropped": row["dropped"],
                "by_ocr": {v["ocr"]: v["count"] for v in row["by_ocr"]},
            }
            for row in by_look.iter_rows(named=True)
        ],
        "looks": [] if looks is None else looks.drop("dropped").to_dicts(),
    }


def ocr_engines(run_dir: Path) -> list[dict[str, Any]]:
    """Per OCR engine: its calls, their CPU seconds and median, and on how many items it ran. A call is one
    (item, engine, CPU time) in items.parquet: the rows of every configuration sharing that call (a shared
    prefix, or an identical image from another orientation choice) repeat its time."""
    items = pl.scan_parquet(run_dir / "items.parquet").filter(pl.col("cpu_ocr_ms") > 0)
    calls = items.unique(["item_id", "ocr", "cpu_ocr_ms"]).group_by("ocr")
    table = calls.agg(
        pl.len().alias("calls"),
        (pl.col("cpu_ocr_ms").sum() / 1000).alias("cpu_seconds"),
        pl.col("cpu_ocr_ms").median().alias("median_ms"),
        pl.col("item_id").n_unique().alias("items"),
    )
    return table.sort("cpu_seconds", descending=True).collect().to_dicts()


HEADLINE = (
    "configurations",
    "items_used",
    "items_available",
    "wall_seconds",
    "streaming_seconds",
    "driver_peak_mib",
    "stopped",
    "status",
    "decision",
    "pick",
    "pick_objective",
    "pick_p95_ms",
    "certified",
    "survivors",
    "cpu_seconds_spent",
    "exhaustive_cpu_seconds_estimate",
    "engine_fraction",
)


def markdown(found: dict[str, Any]) -> str:
    lines = [
        "| measure | value |",
        "| --- | --- |",
        *(f"| {key} | {found.get(key)} |" for key in HEADLINE),
        "",
        "| stage | calls | CPU s |",
        "| --- | --- | --- |",
        *(
            f"| {stage} | {found['stage_calls'][stage]:,} | {seconds:,.0f} |"
            for stage, seconds in found["stage_cpu_seconds"].items()
        ),
        "",
        "| OCR engine | calls | CPU s | median ms | items |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {e['ocr']} | {e['calls']:,} | {e['cpu_seconds']:,.0f} | {e['median_ms']:,.0f} | "
            f"{e['items']} |"
            for e in found["ocr_engines"]
        ),
        "",
        "| look | items | live | status | leader | leader objective | leader p95 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {k['look']} | {k['items']} | {k['live']} | {k['status']} | {k['leader']} | "
            f"{k['leader_objective']} | {k['leader_p95_ms']:.0f} |"
            for k in found["looks"]
        ),
        "",
        "| dropped after items | configurations | by OCR engine |",
        "| --- | --- | --- |",
        *(
            f"| {d['after_items']} | {d['dropped']} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(d["by_ocr"].items()))
            + " |"
            for d in found["drops"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--time", type=Path, default=None, help="the run's `/usr/bin/time -v` output")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/icp"))
    args = parser.parse_args(argv)
    found = summarize(args.run_dir, args.time)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "icp-until-decided.json").write_text(json.dumps(found, indent=1, default=str))
    (args.out / "icp-until-decided.md").write_text(markdown(found))
    print(markdown(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
