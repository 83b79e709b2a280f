"""Does a configuration's latency belong to the configuration? Two configurations, each run alone and inside
larger runs on the same machine in one session; their service-time p95 should agree across runs, where the
wall time under load (what raypipe reported before, now `busy_p95_ms`) moves with the run around them.

    python benchmarks/latency.py [--n 24] [--out benchmarks/results/latency]

Writes latency.md (the table for BENCHMARKS.md) and latency.parquet. Ray starts once and is not timed; no
run uses the stage cache, so every call is measured in its own run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import polars as pl
import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import Request
from raypipe.evaluate.driver import evaluate
from raypipe.ray import cluster
from raypipe.spec.registry import resolve_task
from raypipe.spec.validation import parse_spec

REPO = Path(__file__).resolve().parent.parent
TESSERACT = {
    "orient": "none",
    "enhance": "none",
    "channel": "original",
    "ocr": "tesseract",
    "extract": "label_value",
}
RAPIDOCR = {"orient": "none", "enhance": "clahe", "channel": "gray", "ocr": "rapidocr", "extract": "layout"}
WATCHED = {"tesseract path": TESSERACT, "rapidocr path": RAPIDOCR}


def quick_spec(source: str) -> dict:
    raw = yaml.safe_load((REPO / "configs" / "icp-quick.yaml").read_text())
    raw["dataset"] = {"source": source}
    return raw


def restricted(raw: dict, keep: dict[str, list[str]]) -> dict:
    """The spec with each stage cut down to the given choice labels."""
    out = {**raw, "stages": []}
    for stage in raw["stages"]:
        choices = [
            c
            for c in stage["choices"]
            if (c if isinstance(c, str) else c.get("label") or c["name"]) in keep[stage["name"]]
        ]
        out["stages"].append({**stage, "choices": choices})
    return out


def runs(source: str, clean_source: str) -> dict[str, dict]:
    base = quick_spec(source)
    keep = {"orient": ["none", "osd"], "enhance": ["none", "clahe"], "channel": ["original", "gray"]}
    eight = restricted(base, {**keep, "ocr": ["tesseract"], "extract": ["label_value"]})
    eight["dataset"] = {"source": clean_source}
    eight["name"] = "icp-eight"
    return {
        "tesseract path alone": restricted(base, {k: [v] for k, v in TESSERACT.items()}),
        "rapidocr path alone": restricted(base, {k: [v] for k, v in RAPIDOCR.items()}),
        "quick spec (48 configurations)": base,
        "8 Tesseract configurations, 16 clean cards": eight,
    }


def measure(name: str, raw: dict, out: Path) -> list[dict]:
    run_dir = out / name.split(" (")[0].replace(" ", "-").replace(",", "")
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun of the benchmark measures afresh
    result = evaluate(Request(spec=parse_spec(raw), out=str(run_dir)))
    configs = result.configs
    rows = []
    for label, choices in WATCHED.items():
        match = configs.filter(pl.all_horizontal([pl.col(s) == c for s, c in choices.items()]))
        if match.is_empty():
            continue
        row = match.row(0, named=True)
        rows.append(
            {
                "configuration": label,
                "run": name,
                "configs_in_run": configs.height,
                "items": row["n_items"],
                "service_p50_ms": row["latency_p50_ms"],
                "service_p95_ms": row["latency_p95_ms"],
                "busy_p95_ms": row["busy_p95_ms"],
            }
        )
    return rows


def table(frame: pl.DataFrame) -> str:
    lines = [
        "| configuration | run | configs | items | service p50 ms | service p95 ms | busy p95 ms (old) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in frame.iter_rows(named=True):
        lines.append(
            f"| {r['configuration']} | {r['run']} | {r['configs_in_run']} | {r['items']} "
            f"| {r['service_p50_ms']:,.0f} | {r['service_p95_ms']:,.0f} | {r['busy_p95_ms']:,.0f} |"
        )
    lines += [
        "",
        "| configuration | service p95 spread (max/min) | busy p95 spread (max/min) | within 15 %? |",
        "| --- | --- | --- | --- |",
    ]
    for (label,), group in frame.group_by("configuration", maintain_order=True):
        service = group["service_p95_ms"].max() / group["service_p95_ms"].min()
        busy = group["busy_p95_ms"].max() / group["busy_p95_ms"].min()
        lines.append(f"| {label} | {service:.2f} | {busy:.2f} | {'met' if service <= 1.15 else 'not met'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="mixed cards (the quick spec's dataset size)")
    parser.add_argument("--clean-n", type=int, default=16, help="clean cards of the 8-configuration run")
    parser.add_argument("--out", default="benchmarks/results/latency")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = resolve_task("idcard")
    source, clean = str(out / "mixed.parquet"), str(out / "clean.parquet")
    write_table(task.generate("mixed", args.n, 0), source)
    write_table(task.generate("clean", args.clean_n, 3), clean)
    cluster.connect(None)
    rows = []
    for name, raw in runs(source, clean).items():
        print(f"running: {name}", flush=True)
        rows += measure(name, raw, out)
    frame = pl.DataFrame(rows)
    frame.write_parquet(out / "latency.parquet")
    (out / "latency.md").write_text(table(frame))
    print(table(frame))


if __name__ == "__main__":
    main()
