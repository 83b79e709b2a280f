"""Table 1: raypipe against the course's sequential loop and Pool script and against Ray Tune, in one session,
on the same data and configurations; writes compare.parquet, compare.json and compare.md under --out.

    python benchmarks/compare.py [--config benchmarks/bench.yaml] [--n 32] [--out benchmarks/results]
                                 [--quick] [--all]

`--all` then runs the racing targets (benchmarks/racing.py) in the same session: the whole measurement in
one command. The baselines run first, before Ray starts (the Pool forks a process without Ray in it). Ray
then starts once and is not timed; each raypipe variant is timed around `evaluate(...)`, which includes
loading the data, the preflight checks, starting its actors, calibrating latency and writing its result
files; each Tune variant around `Tuner.fit()`. Nothing uses the stage cache, so nothing is free.
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
from typing import Any

import polars as pl
import psutil

if __package__ in (None, ""):  # run as a script: import `benchmarks` from the repository, not this folder
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks import baselines, summary
from benchmarks.measure import Measured, measure
from benchmarks.tune import ASHA, GRID, run_tune
from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import CALIBRATION, ITEMS, Request, SearchRequest
from raypipe.evaluate.driver import RunResult, choose_objective, evaluate
from raypipe.ray.cluster import WORKER_ENV, init_local
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.space import expand_configurations
from raypipe.spec.task import Metric, Task
from raypipe.spec.validation import load_spec, task_of

DEFAULT_CONFIG = Path(__file__).resolve().parent / "bench.yaml"
QUICK_ITEMS = 3
RACING = {"alpha": 0.05, "tolerance": 0.01, "keep": "best", "look_every": 10, "seed": 0}
ASHA_CHUNK, QUICK_ASHA_CHUNK = 4, 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline spec (YAML)")
    parser.add_argument("--n", type=int, default=None, help="synthetic cards (default 32; 3 with --quick)")
    parser.add_argument("--profile", default="mixed", help="synthetic data profile")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--out", default="benchmarks/results", help="where the tables and runs go")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 items, 2 configurations")
    parser.add_argument("--asha-chunk", type=int, default=None, help="items per ASHA iteration (4; 1 quick)")
    parser.add_argument("--all", action="store_true", help="then the racing targets (benchmarks/racing.py)")
    args = parser.parse_args(argv)
    args.n = args.n or (QUICK_ITEMS if args.quick else 32)
    args.asha_chunk = args.asha_chunk or (QUICK_ASHA_CHUNK if args.quick else ASHA_CHUNK)
    return args


def quick_spec(spec: PipelineSpec) -> PipelineSpec:
    """Two configurations: the first choice of every stage, and the first two of the last stage with more."""
    wide = [k for k, s in enumerate(spec.stages) if len(s.choices) > 1]
    stages = [
        s.model_copy(update={"choices": s.choices[: 2 if wide and k == wide[-1] else 1]})
        for k, s in enumerate(spec.stages)
    ]
    return spec.model_copy(update={"stages": stages})


def prepare_dataset(task: Task, profile: str, n: int, seed: int, out: Path) -> Path:
    """The benchmark's items: the synthetic (profile, n, seed) set, made once under out/data."""
    path = out / "data" / f"{profile}-{n}-seed{seed}.parquet"
    if not path.exists():
        write_table(task.generate(profile, n, seed), str(path))
    return path


def start_ray(cores: int) -> bool:
    """A fresh embedded Ray (never one found on the machine) with its own temp dir, started as raypipe starts
    its own (`cluster.init_local`); False if already up."""
    import ray

    if ray.is_initialized():
        return False
    init_local(cores, tempfile.mkdtemp(prefix="rp-bench-", dir="/tmp"))
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return True


def stop_ray(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


def method_run(
    method: str,
    measured: Measured,
    call_seconds: float,
    calls: pl.DataFrame,
    rows: pl.DataFrame,
    extra: dict[str, Any] | None = None,
) -> summary.MethodRun:
    return summary.MethodRun(
        method,
        measured.wall_seconds,
        measured.cpu_seconds,
        measured.others_cpu_seconds,
        measured.peak_rss_bytes,
        measured.load_before,
        call_seconds,
        calls,
        rows,
        extra or {},
    )


def raypipe_request(
    spec: PipelineSpec,
    dataset: Path,
    run_dir: Path,
    search: str = "exhaustive",
    params: dict | None = None,
    share: bool = True,
    **options: Any,
) -> Request:
    """The request every raypipe variant makes: no stage cache, so every call is made in its own run."""
    return Request(
        spec=spec,
        out=str(run_dir),
        dataset=str(dataset),
        cache_dir=None,
        share_prefixes=share,
        reuse_identical=share,
        search=SearchRequest(name=search, params=params or {}),
        **options,
    )


def timed_raypipe(
    method: str, request: Request, stage_names: list[str]
) -> tuple[summary.MethodRun, RunResult]:
    """Run one raypipe request under `measure` into a fresh run directory."""
    shutil.rmtree(request.out, ignore_errors=True)  # our own output of an earlier benchmark
    print(f"[bench] {method} ...", flush=True)
    measured = measure(lambda: evaluate(request))
    result: RunResult = measured.value
    items = result.run_dir.read_parquet(ITEMS)
    calibration = result.run_dir.read_parquet(CALIBRATION)
    manifest = result.manifest
    extra = {
        "streaming_seconds": manifest["wall_seconds"],
        "calibration_call_seconds": float(calibration["wall_ms"].sum() or 0.0) / 1000.0,
        "manifest_calls": sum(int(w["calls"]) for w in manifest["work"].values()),
        "work_cpu_seconds": manifest["cpu_seconds"],
        "search": manifest["search"],
    }
    calls = summary.raypipe_calls(items, stage_names)
    run = method_run(method, measured, manifest["engine_seconds"], calls, items, extra)
    run.ranked = result.configs  # rank 1 is what the user is told (summary.pick)
    return run, result


def run_raypipe_variants(
    spec: PipelineSpec, dataset: Path, out: Path
) -> tuple[list[summary.MethodRun], dict]:
    """Sharing off, exhaustive, racing, and exhaustive again (last, so the repeat also sees session drift)."""
    names = [s.name for s in spec.stages]
    variants = [
        (summary.UNSHARED, {"share": False}),
        (summary.EXHAUSTIVE, {}),
        (summary.RACING, {"search": "racing", "params": RACING}),
        (summary.REPEAT, {}),
    ]
    runs, finished = [], {}
    for method, options in variants:
        run, finished[method] = timed_raypipe(
            method, raypipe_request(spec, dataset, out / "runs" / method, **options), names
        )
        runs.append(run)
    return runs, finished


def run_tune_variants(
    spec: PipelineSpec, items: list, out: Path, objective: Metric, chunk: int
) -> list[summary.MethodRun]:
    names = [s.name for s in spec.stages]
    sla_metrics = [m for m, _, _ in spec.sla.bounds()]
    runs = []
    for method, kind in ((summary.TUNE_GRID, GRID), (summary.TUNE_ASHA, ASHA)):
        where = out / "runs" / method
        shutil.rmtree(where, ignore_errors=True)
        print(f"[bench] {method} ...", flush=True)
        measured = measure(lambda w=where, k=kind: run_tune(k, spec, items, w, objective, sla_metrics, chunk))
        found = measured.value
        rows = found.pop("rows")
        extra = {k: v for k, v in found.items()}
        runs.append(
            method_run(
                method,
                measured,
                float(rows["call_ms"].sum()) / 1000.0,
                summary.peer_calls(rows, names),
                rows,
                extra,
            )
        )
    return runs


def run_baselines(spec: PipelineSpec, items: list, out: Path) -> list[summary.MethodRun]:
    """The two course peers, after one untimed warm-up call of every choice; rows go to out/runs/<method>/."""
    names = [s.name for s in spec.stages]
    baselines.warm_up(spec, items[0])
    runs = []
    for method, run in ((summary.SEQUENTIAL, baselines.run_sequential), (summary.POOL, baselines.run_pool)):
        print(f"[bench] {method} ...", flush=True)
        measured = measure(lambda r=run: r(spec, items))
        rows: pl.DataFrame = measured.value
        (out / "runs" / method).mkdir(parents=True, exist_ok=True)
        rows.write_parquet(out / "runs" / method / "rows.parquet")
        runs.append(
            method_run(
                method, measured, float(rows["call_ms"].sum()) / 1000.0, summary.peer_calls(rows, names), rows
            )
        )
    return runs


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


def measure_methods(args: argparse.Namespace, spec: PipelineSpec, dataset: Path, objective: Metric) -> dict:
    """The baselines before Ray, then raypipe's variants and Tune's on one Ray started here."""
    task, out = task_of(spec), Path(args.out)
    items = baselines.dataset_items(task, task.load(str(dataset)))
    runs = run_baselines(spec, items, out)
    ray_start = time.perf_counter()
    started = start_ray(os.cpu_count() or 1)
    ray_start = time.perf_counter() - ray_start
    try:
        ray_runs, finished = run_raypipe_variants(spec, dataset, out)
        runs += ray_runs + run_tune_variants(spec, items, out, objective, args.asha_chunk)
    finally:
        stop_ray(started)
    return {
        "runs": runs,
        "n_items": len(items),
        "git revision": finished[summary.EXHAUSTIVE].manifest.get("git_revision"),
        "Ray start-up (not in any wall time)": f"{ray_start:.1f} s" if started else "Ray was already up",
    }


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every method of table 1; returns the table and what the report needs."""
    spec = load_spec(args.config)
    spec = quick_spec(spec) if args.quick else spec
    task, names = task_of(spec), [s.name for s in spec.stages]
    dataset = prepare_dataset(task, args.profile, args.n, args.seed, Path(args.out))
    objective = choose_objective(spec, task, task.load(str(dataset)))
    measured = measure_methods(args, spec, dataset, objective)
    runs, n_items = measured.pop("runs"), measured.pop("n_items")
    sequential = next(r.rows for r in runs if r.method == summary.SEQUENTIAL)
    prices, stage_prices = summary.choice_prices(sequential, names), summary.stage_prices(sequential, names)
    judge = summary.Judge(objective, spec.sla, n_items, RACING["tolerance"], names)
    by = {r.method: summary.config_summary(r.rows, objective, spec.sla) for r in runs}
    context = {
        "machine": machine(),
        "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *args.argv]),
        "spec": f"{args.config} ({len(expand_configurations(spec))} configurations)",
        "dataset": f"{dataset} ({n_items} items)",
        "objective": objective.name,
        "sla": spec.sla.model_dump(mode="json"),
        "racing": RACING,
        "asha": f"{args.asha_chunk} items per iteration, reduction factor 4, grace period 1",
        **measured,
    }
    return {
        "table": summary.comparison_table(runs, os.cpu_count() or 1, prices, stage_prices, judge),
        "prices": prices,
        "repeat": summary.repeat_spread(
            by[summary.EXHAUSTIVE], by[summary.REPEAT], n_items, objective, ranked_of(runs)
        ),
        "extra": {r.method: r.extra for r in runs},
        "calls": {r.method: r.calls.to_dicts() for r in runs},
        "context": context,
    }


def ranked_of(runs: list[summary.MethodRun]) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """configs.parquet of the exhaustive run and of its repeat: the spread table compares their rank 1."""
    by = {r.method: r.ranked for r in runs}
    return by.get(summary.EXHAUSTIVE), by.get(summary.REPEAT)


def write_outputs(found: dict[str, Any], out: Path) -> str:
    found["table"].write_parquet(out / "compare.parquet")
    found["prices"].write_parquet(out / "prices.parquet")
    details = {k: v for k, v in found.items() if k not in ("table", "prices")}
    details["table"] = found["table"].to_dicts()
    (out / "compare.json").write_text(json.dumps(details, indent=2, default=str))
    text = summary.table1_markdown(found)
    (out / "compare.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    # Every method runs Tesseract single-threaded, as raypipe's actors do (set before any engine starts).
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(write_outputs(benchmark(args), out))
    if args.all:
        from benchmarks import racing

        return racing.main(
            ["--config", args.config, "--out", str(out / "racing"), *(["--quick"] if args.quick else [])]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
