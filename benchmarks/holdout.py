"""Does the decision hold on data raypipe never tuned on? The quick spec on the standard generator's cards and
on the differently rendered holdout set (other fonts and layouts, labels after values, photographed cards),
side by side: each set's pick, and where the other set's pick lands.

    python benchmarks/holdout.py [--n 24] [--out benchmarks/results/holdout]

Writes holdout.md. Uses the stage cache (the same calls cost nothing twice; latencies come with the hardware
they were measured on).
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

from raypipe.engine.cache import default_cache_dir
from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import Request
from raypipe.evaluate.driver import evaluate
from raypipe.spec.registry import resolve_task
from raypipe.spec.validation import parse_spec

REPO = Path(__file__).resolve().parent.parent
SETS = {"standard generator, mixed": "standard", "holdout renderer, mixed": "holdout"}


def run_on(renderer: str, n: int, out: Path) -> pl.DataFrame:
    source = out / f"{renderer}-mixed-{n}.parquet"
    write_table(resolve_task("idcard").generate("mixed", n, 0, renderer=renderer), str(source))
    raw = yaml.safe_load((REPO / "configs" / "icp-quick.yaml").read_text())
    raw["dataset"] = {"source": str(source)}
    run_dir = out / f"run-{renderer}"
    shutil.rmtree(run_dir, ignore_errors=True)
    request = Request(spec=parse_spec(raw), out=str(run_dir), cache_dir=str(default_cache_dir()))
    return evaluate(request).configs


def describe(configs: pl.DataFrame, config_id: str) -> str:
    row = configs.filter(pl.col("config_id") == config_id).row(0, named=True)
    stages = "/".join(str(row[s]) for s in ("orient", "enhance", "channel", "ocr", "extract"))
    mark = "tied with the best" if row["tied"] else f"rank {row['rank']}, not tied"
    return (
        f"{stages}: {row['objective']:.3f} [{row['objective_ci_low']:.2f}, {row['objective_ci_high']:.2f}], "
        f"p95 {row['latency_p95_ms']:,.0f} ms, {mark}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--out", default="benchmarks/results/holdout")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {label: run_on(renderer, args.n, out) for label, renderer in SETS.items()}
    picks = {label: configs["config_id"][0] for label, configs in results.items()}
    lines = ["| data | its pick | the other set's pick, on this data |", "| --- | --- | --- |"]
    labels = list(results)
    for label, other in zip(labels, reversed(labels), strict=True):
        mine, theirs = describe(results[label], picks[label]), describe(results[label], picks[other])
        lines.append(f"| {label} | {mine} | {theirs} |")
    tied = {label: int(configs["tied"].sum()) for label, configs in results.items()}
    lines += ["", "Configurations in the tied group: " + ", ".join(f"{k}: {v}" for k, v in tied.items())]
    (out / "holdout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
