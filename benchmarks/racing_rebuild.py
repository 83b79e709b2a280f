"""Rebuild racing.md from the run directories benchmarks/racing.py left, when the script did not finish.

    python benchmarks/racing_rebuild.py [--out benchmarks/results/racing] [--orders 20]

racing.py keeps its tables in memory until every run, the icp.yaml race included, has finished. If it is
stopped during the icp.yaml race, the bench-space runs (exhaustive, racing keep=best, keep=pareto) are
complete on disk. This script replays the exhaustive run (no engine calls) and reads the live runs'
manifests. A live run's wall time is then the span from its run.json to its last result file, not the
benchmark's own timer around `evaluate`. The process-tree CPU is not available: the stage calls' CPU
(manifest `cpu_seconds`) stands in for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import polars as pl

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks import racing, summary
from raypipe.engine.rundir import ITEMS
from raypipe.spec.validation import load_spec, task_of


def span_seconds(run_dir: Path) -> float:
    """From run.json (written when the run starts) to the newest file in the run directory."""
    start = (run_dir / "run.json").stat().st_mtime
    return max(p.stat().st_mtime for p in run_dir.iterdir() if p.is_file()) - start


def load_run(run_dir: Path) -> SimpleNamespace:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return SimpleNamespace(manifest=manifest, configs=pl.read_parquet(run_dir / "configs.parquet"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/racing")
    parser.add_argument("--config", default="benchmarks/bench.yaml")
    parser.add_argument("--orders", type=int, default=20)
    args = parser.parse_args(argv)
    out = Path(args.out)
    spec = load_spec(args.config)
    task, names = task_of(spec), [s.name for s in spec.stages]
    exhaustive_dir = out / "exhaustive"
    items = pl.read_parquet(exhaustive_dir / ITEMS)
    reference = load_run(exhaustive_dir)
    found: dict = {"replay": racing.replays(str(exhaustive_dir), args.orders), "live": []}
    ex_wall, ex_cpu = span_seconds(exhaustive_dir), reference.manifest["cpu_seconds"]
    for name in ("racing keep=best", "racing keep=pareto"):
        where = out / name.replace(" ", "-").replace("=", "-")
        run = load_run(where)
        quality = racing.live_quality(run, items, task, spec)
        search = run.manifest["search"]
        wall = span_seconds(where)
        found["live"].append(
            {
                "run": name,
                "wall_seconds": wall,
                "wall_vs_exhaustive": wall / ex_wall,
                "streaming_vs_exhaustive": run.manifest["wall_seconds"] / reference.manifest["wall_seconds"],
                "work_cpu_vs_exhaustive": run.manifest["cpu_seconds"] / ex_cpu,
                "engine_fraction_own_estimate": search.get("engine_fraction"),
                "stage_calls": sum(int(w["calls"]) for w in run.manifest["work"].values()),
                "survivors": quality["survivors"],
                "pick": summary.choices_of(items, quality["pick"], names),
                "within_tolerance": quality["within_tolerance"],
                "pareto_share": quality["pareto_share"],
                "looks": search.get("looks"),
            }
        )
    found["exhaustive"] = {
        "wall_seconds": ex_wall,
        "streaming_seconds": reference.manifest["wall_seconds"],
        "work_cpu_seconds": ex_cpu,
        "stage_calls": sum(int(w["calls"]) for w in reference.manifest["work"].values()),
        "run_dir": str(exhaustive_dir),
    }
    found["context"] = {
        "command": "python benchmarks/racing_rebuild.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "spec": args.config,
        "items": items["item_id"].n_unique(),
        "orders": args.orders,
        "wall times": "run.json to the last result file of each run directory",
    }
    found["icp"] = None
    found["targets"] = racing.targets(found)
    (out / "racing.json").write_text(json.dumps(found, indent=2, default=str))
    text = racing.markdown(found)
    (out / "racing.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
