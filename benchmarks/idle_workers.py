"""A driver's next small runs, two ways (`--compare`):

- `idle`: the embedded Ray's idle workers kept for a minute (raypipe's `LOCAL_SYSTEM_CONFIG`) against Ray's
  default (an idle worker past the CPU count ends after one second);
- `pools`: pools sized to the run's full batches, one actor for every stage when each pool is one, and the
  driver's RunControl kept between runs (`engine.plan.size_pools` and `fuse`, `ray.pipeline.run_control`),
  against pools of their planned size and a RunControl started for each run.

    python benchmarks/idle_workers.py [--compare idle] [--processes 4] [--runs 6]
                                      [--out benchmarks/results/fixed-cost]

Each process starts its own embedded Ray (2 CPUs) in one mode, makes one untimed run, then `--runs` timed
in-process runs of `--items` digits (40) x 4 configurations, uncalibrated (the test suite's usual run);
the modes alternate process by process. Per run: the wall time and the machine's busy CPU-seconds
(`benchmarks.measure.machine_busy_seconds`, all cores: run it on a quiet machine). Writes
idle-workers.json and .md (`idle`), or small-pools.json and .md (`pools`), under --out (with `-N` after
the name for `--items N` other than 40).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COMPARISONS = {  # --compare: (the baseline mode, raypipe's mode), the results' file name
    "idle": (("ray default", "kept 60 s"), "idle-workers"),
    "pools": (("planned pools", "sized to the run"), "small-pools"),
}
DIGITS = {"preprocess": ["none", "deskew"], "classify": ["linear", "onnx"]}


def baseline(mode: str) -> None:
    """Put back what a baseline `mode` measures against (in this process only)."""
    from raypipe.evaluate import driver
    from raypipe.ray import cluster, pipeline

    if mode == "ray default":
        idle = "idle_worker_killing_time_threshold_ms"
        cluster.LOCAL_SYSTEM_CONFIG = {k: v for k, v in cluster.LOCAL_SYSTEM_CONFIG.items() if k != idle}
    elif mode == "planned pools":
        plan_operators = driver.plan_operators

        def planned(spec, task, cpus, gpus, max_actors=None, n_items=None):  # sized without the items
            return plan_operators(spec, task, cpus, gpus, max_actors)

        driver.plan_operators = planned
        pipeline.run_control = lambda: pipeline.RunControl.options(  # a new one for every execution
            scheduling_strategy=pipeline.on_driver_node()
        ).remote()


def child(mode: str, runs: int, items: int) -> list[dict[str, float]]:
    """One process, one embedded Ray in `mode`: a warm-up run, then `runs` timed runs."""
    from benchmarks.measure import machine_busy_seconds
    from raypipe.engine.datasets import write_table
    from raypipe.engine.rundir import Request
    from raypipe.evaluate.driver import evaluate
    from raypipe.ray import cluster
    from raypipe.spec.registry import resolve_task
    from raypipe.spec.validation import parse_spec

    baseline(mode)
    work = Path(tempfile.mkdtemp(prefix="raypipe-idle-"))
    source = str(work / f"digits-{items}.parquet")
    write_table(resolve_task("digits").generate("mixed", items, seed=1), source)
    raw = {
        "name": "idle-workers",
        "task": "digits",
        "stages": [{"name": k, "choices": v} for k, v in DIGITS.items()],
        "dataset": {"source": source},
    }
    cluster.connect(None, 2)
    rows = []
    for n in range(runs + 1):
        cpu, started = machine_busy_seconds(), time.perf_counter()
        evaluate(Request(spec=parse_spec(raw), out=str(work / f"run-{n}"), calibrate=False))
        if n:  # the first run is the warm-up: the driver's imports, Ray Data's own actors, the digits models
            rows.append({"wall_s": time.perf_counter() - started, "cpu_s": machine_busy_seconds() - cpu})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="idle")
    parser.add_argument("--processes", type=int, default=4, help="processes per mode, alternating")
    parser.add_argument("--runs", type=int, default=6, help="timed runs per process")
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    parser.add_argument("--items", type=int, default=40, help="digits per run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modes, name = COMPARISONS[args.compare]
    from benchmarks.measure import median_range

    if args.child:
        print(json.dumps(child(args.child, args.runs, args.items)))
        return 0
    rows = []
    for p in range(args.processes):
        for mode in modes if p % 2 == 0 else modes[::-1]:
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--runs", str(args.runs),
                 "--items", str(args.items)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            found = json.loads(done.stdout.strip().splitlines()[-1])
            rows += [{"mode": mode, "process": p, "run": n, **r} for n, r in enumerate(found)]
            walls = ", ".join(f"{r['wall_s']:.1f}" for r in found)
            print(f"{mode:12s} process {p}: wall {walls} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name += "" if args.items == 40 else f"-{args.items}"
    (out / f"{name}.json").write_text(json.dumps({"rows": rows}, indent=1))
    lines = [
        f"| {args.compare} | runs | wall s, median [min, max] | machine CPU-s, median [min, max] "
        f"| wall, {modes[1]} / {modes[0]} |",
        "| --- | --- | --- | --- | --- |",
    ]
    medians = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        wall, cpu = [r["wall_s"] for r in mine], [r["cpu_s"] for r in mine]
        medians[mode] = statistics.median(wall)
        ratio = f"{medians[mode] / medians[modes[0]]:.2f}" if mode == modes[1] else ""
        lines.append(f"| {mode} | {len(mine)} | {median_range(wall, 2)} | {median_range(cpu, 2)} | {ratio} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
