"""Measure raypipe against the course's sequential loop and multiprocessing.Pool script, in one session, on
the same data and the same configurations; writes compare.parquet and compare.md under --out.

    python benchmarks/compare.py [--config benchmarks/bench.yaml] [--n 32] [--profile mixed] [--seed 0]
                                 [--first-round-items 4] [--out benchmarks/results] [--quick]
                                 [--halving-only]

The baselines run first, before Ray starts (the Pool forks a process without Ray in it). Ray then starts
once and is not timed; each raypipe variant is timed around `evaluate(...)`, which includes loading the
data, the preflight checks, starting its actors and writing its result files. No raypipe variant uses
the stage cache, so nothing is free.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil

from raypipe import data
from raypipe.evaluation import RunResult, evaluate
from raypipe.runner import WORKER_ENV, RunOptions
from raypipe.space import expand_configurations
from raypipe.spec import PipelineSpec, load_spec

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import baselines, summary
from benchmarks.measure import Measured, measure

DEFAULT_CONFIG = Path(__file__).resolve().parent / "bench.yaml"
QUICK_ITEMS = 3
QUICK_FIRST_ROUND = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline spec (YAML)")
    parser.add_argument("--n", type=int, default=None, help="synthetic cards (default 32; 3 with --quick)")
    parser.add_argument("--profile", default="mixed", help="synthetic data profile")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--dataset", default=None, help="use this Parquet dataset instead of generating")
    parser.add_argument("--first-round-items", type=int, default=None, help="halving's first round (4)")
    parser.add_argument("--out", default="benchmarks/results", help="where the table and runs go")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 items, 2 configurations")
    parser.add_argument(
        "--halving-only",
        action="store_true",
        help="raypipe exhaustive and halving only (no peers): halving on more items than the peers afford",
    )
    args = parser.parse_args(argv)
    args.n = args.n or (QUICK_ITEMS if args.quick else 32)
    args.first_round_items = args.first_round_items or (QUICK_FIRST_ROUND if args.quick else 4)
    return args


def quick_spec(spec: PipelineSpec) -> PipelineSpec:
    """Two configurations: the first choice of every stage, and the first two of the last stage with more."""
    wide = [k for k, s in enumerate(spec.stages) if len(s.choices) > 1]
    stages = [
        s.model_copy(update={"choices": s.choices[: 2 if wide and k == wide[-1] else 1]})
        for k, s in enumerate(spec.stages)
    ]
    return spec.model_copy(update={"stages": stages})


def prepare_dataset(args: argparse.Namespace, out: Path) -> Path:
    """The benchmark's items: --dataset as given, else the synthetic (profile, n, seed) set, made once."""
    if args.dataset:
        return Path(args.dataset)
    path = out / "data" / f"{args.profile}-{args.n}-seed{args.seed}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data.write_dataset(data.generate_dataset(args.profile, args.n, args.seed), path)
    return path


def start_ray(cores: int) -> bool:
    """A fresh embedded Ray (never one found on the machine) with its own temp dir; False if already up."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})
    ray.init(
        address="local",
        num_cpus=cores,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": dict(WORKER_ENV)},
        _temp_dir=tempfile.mkdtemp(prefix="rp-bench-", dir="/tmp"),
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return True


def baseline_run(method: str, measured: Measured) -> summary.MethodRun:
    rows: pl.DataFrame = measured.value
    return summary.MethodRun(
        method,
        measured.wall_seconds,
        rows["engine_ms"].sum() / 1000.0,
        int(rows["calls"].sum()),
        measured.peak_rss_bytes,
        measured.load_before,
        rows.select("config_id", "item_id", "prediction"),
        measured.cpu_seconds,
        measured.others_cpu_seconds,
    )


def raypipe_run(method: str, measured: Measured) -> summary.MethodRun:
    result: RunResult = measured.value
    items = pl.read_parquet(result.run_dir / "items.parquet", columns=["config_id", "item_id", "prediction"])
    return summary.MethodRun(
        method,
        measured.wall_seconds,
        result.manifest["engine_seconds"],
        sum(int(w["calls"]) for w in result.manifest["work"].values()),
        measured.peak_rss_bytes,
        measured.load_before,
        items,
        measured.cpu_seconds,
        measured.others_cpu_seconds,
    )


def stage_mean_ms(sequential_rows: pl.DataFrame, stages: list[str]) -> dict[str, float]:
    """The sequential loop's mean milliseconds per call of each stage: one process, no waiting on siblings."""
    means = sequential_rows.select(
        [pl.col("stage_ms").list.get(k).mean().alias(name) for k, name in enumerate(stages)]
    ).row(0, named=True)
    return {name: value or 0.0 for name, value in means.items()}


def run_raypipe_variants(
    spec: PipelineSpec, dataset: Path, out: Path, first_round_items: int, halving_only: bool = False
) -> tuple[list[summary.MethodRun], dict[str, RunResult]]:
    """The raypipe variants through `evaluate`, each into its own run directory under out/runs."""
    variants = {
        summary.UNSHARED: (RunOptions(share_prefixes=False, reuse_identical=False, cache=None), "exhaustive"),
        summary.EXHAUSTIVE: (RunOptions(cache=None), "exhaustive"),
        summary.HALVING: (RunOptions(cache=None), "halving"),
    }
    if halving_only:
        del variants[summary.UNSHARED]
    runs, finished = [], {}
    for method, (options, search) in variants.items():
        run_dir = out / "runs" / method
        shutil.rmtree(run_dir, ignore_errors=True)  # our own output of an earlier benchmark
        print(f"[bench] {method} ...", flush=True)
        kwargs = {"options": options, "search": search, "first_round_items": first_round_items}
        measured = measure(lambda d=run_dir, k=kwargs: evaluate(spec, dataset=str(dataset), out=str(d), **k))
        runs.append(raypipe_run(method, measured))
        finished[method] = measured.value
    return runs, finished


def run_baselines(
    spec: PipelineSpec, dataset: Path, out: Path
) -> tuple[list[summary.MethodRun], pl.DataFrame]:
    """The two peers, after one untimed warm-up call of every choice; their rows go to out/runs/<method>/.
    Returns them and the sequential loop's rows."""
    items = baselines.dataset_items(data.load_dataset(dataset))
    baselines.warm_up(spec, items[0])
    runs, measured = [], {}
    for method, run in ((summary.SEQUENTIAL, baselines.run_sequential), (summary.POOL, baselines.run_pool)):
        print(f"[bench] {method} ...", flush=True)
        measured[method] = measure(lambda r=run: r(spec, items))
        runs.append(baseline_run(method, measured[method]))
        (out / "runs" / method).mkdir(parents=True, exist_ok=True)
        measured[method].value.write_parquet(out / "runs" / method / "rows.parquet")
    return runs, measured[summary.SEQUENTIAL].value


def machine() -> str:
    memory = psutil.virtual_memory().total / 2**30
    model = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        model = names[0] if names else model
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def benchmark(args: argparse.Namespace) -> tuple[pl.DataFrame, dict, dict[str, object]]:
    """Run the five methods; returns the table, the halving comparison and what describes the run."""
    spec = load_spec(args.config)
    spec = quick_spec(spec) if args.quick else spec
    out = Path(args.out)
    dataset = prepare_dataset(args, out)
    cores = os.cpu_count() or 1
    runs, sequential_rows = ([], None) if args.halving_only else run_baselines(spec, dataset, out)
    ray_start = time.perf_counter()
    started_ray = start_ray(cores)
    ray_start = time.perf_counter() - ray_start
    try:
        ray_runs, finished = run_raypipe_variants(
            spec, dataset, out, args.first_round_items, args.halving_only
        )
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    exhaustive, halving = finished[summary.EXHAUSTIVE], finished[summary.HALVING]
    mean_ms, strict, repeat = None, None, None
    if sequential_rows is not None:
        mean_ms = stage_mean_ms(sequential_rows, [stage.name for stage in spec.stages])
        strict = summary.priced_seconds(exhaustive.manifest["work"], mean_ms) / cores
        repeat = finished[summary.UNSHARED].configs
    table = summary.comparison_table(runs + ray_runs, cores, strict)
    quality = summary.halving_quality(exhaustive, halving, repeat, mean_ms)
    context: dict[str, object] = {
        "machine": machine(),
        "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *(args.argv or [])]),
        "spec": f"{args.config} ({len(expand_configurations(spec))} configurations)",
        "dataset": f"{dataset} ({exhaustive.manifest['n_items']} items)",
        "halving first round": f"{args.first_round_items} items",
        "git revision": exhaustive.manifest.get("git_revision"),
        "Ray start-up (not in any wall time)": f"{ray_start:.1f} s" if started_ray else "Ray was already up",
    }
    return table, quality, context


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    table, quality, context = benchmark(args)
    out = Path(args.out)
    table.write_parquet(out / "compare.parquet")
    (out / "halving.json").write_text(json.dumps(quality, indent=2))
    report = summary.markdown_report(table, quality, context)
    (out / "compare.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
