"""Where a table-1 run's CPU goes beyond its stage calls, and how long the cores sit idle: raypipe exhaustive
on benchmarks/bench.yaml (32 cards x 24 configurations), streaming part, in one embedded Ray of 2 CPUs.

    python benchmarks/overhead_profile.py [--n 32] [--calibrate] [--out benchmarks/results/overhead-profile]

The CPU of every process in the driver's tree (the embedded Ray's processes are its descendants) is read
every 0.1 s by `benchmarks.measure.TreeSampler` (its own time, and its reaped children's: Tesseract runs as
a child process of the stage actor that calls it), grouped by what the process is (the driver, stage actors,
Ray Data's task workers, Ray's own processes, workers booting). The stage calls' own CPU comes from the
run's manifest (`work`: what each call measured). The machine's busy and idle CPU-seconds over the run come
from `benchmarks.measure`. Run it on a quiet machine. Writes overhead-profile.json and .md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def kind(pid: int, names: set[str], driver: int) -> str:
    if pid == driver:
        return "driver (the search, Ray Data's executor)"
    joined = " ".join(sorted(names))
    if "tesseract" in {Path(n).name for n in names}:
        return ""  # a stage actor's child: in its actor's reaped children's time (all are reaped)
    if "StageActor" in joined:
        return "stage actors (their calls, and the rest)"
    if "_start_items" in joined or "MapBatches" in joined or "split_blocks" in joined:
        return "Ray Data task workers"
    if "RunControl" in joined:
        return "RunControl"
    if any(x in joined for x in ("raylet", "gcs_server", "Agent", "log_monitor", "monitor.py", "plasma")):
        return "Ray's own processes"
    if "ray::IDLE" in joined or "default_worker" in joined:
        return "workers booting or idle"
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/overhead-profile")
    args = parser.parse_args(argv)

    from benchmarks.compare import DEFAULT_CONFIG, prepare_dataset, raypipe_request
    from benchmarks.measure import TreeSampler, machine_busy_seconds, machine_idle_seconds
    from raypipe.evaluate.driver import evaluate
    from raypipe.ray import cluster
    from raypipe.spec.registry import resolve_task
    from raypipe.spec.validation import load_spec

    spec = load_spec(DEFAULT_CONFIG)
    work = Path(tempfile.mkdtemp(prefix="raypipe-overhead-"))
    dataset = prepare_dataset(resolve_task(spec.task), "mixed", args.n, 0, work)
    cluster.connect(None, 2)
    busy, idle = machine_busy_seconds(), machine_idle_seconds()
    # the embedded Ray's processes are the driver's descendants; 0.1 s: an actor's CPU is its last reading
    with TreeSampler(interval=0.1, keep_names=True) as sampler:
        before = dict(sampler.last_cpu)
        started = time.perf_counter()
        # table 1's raypipe exhaustive (no stage cache); uncalibrated by default, so that what is sampled
        # is the streaming part and the short finalizing after it
        result = evaluate(raypipe_request(spec, dataset, work / "run", calibrate=args.calibrate))
        wall = time.perf_counter() - started
    busy, idle = machine_busy_seconds() - busy, machine_idle_seconds() - idle

    by_kind: dict[str, float] = collections.Counter()
    for pid, (cpu, _) in sampler.last_cpu.items():
        spent = cpu - before.get(pid, (0.0, 0))[0]
        heads = {line.split(" ")[0] for line in sampler.names.get(pid, set())}  # titles, not arguments
        name = kind(pid, heads, os.getpid())
        if spent > 0.005 and name:
            by_kind[name] += spent
    work_done = result.manifest["work"]
    calls_cpu = sum(w["cpu_seconds"] for w in work_done.values())
    calls = sum(w["calls"] for w in work_done.values())
    streaming = float(result.manifest["wall_seconds"])
    found = {
        "items": args.n,
        "configurations": len(result.configs),
        "calibrated": args.calibrate,
        "evaluate_wall_s": wall,
        "streaming_wall_s": streaming,
        "machine_busy_cpu_s": busy,
        "machine_idle_core_s": idle,
        "stage_calls": calls,
        "stage_calls_cpu_s": calls_cpu,
        "cpu_by_process_kind": dict(by_kind),
        "work": work_done,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead-profile.json").write_text(json.dumps(found, indent=1))
    actors = by_kind.get("stage actors (their calls, and the rest)", 0.0)
    lines = [
        f"raypipe exhaustive, {args.n} cards x {len(result.configs)} configurations (benchmarks/bench.yaml), "
        f"{'calibrated' if args.calibrate else 'uncalibrated'}, one embedded Ray of 2 CPUs.",
        "",
        "| what | seconds |",
        "| --- | --- |",
        f"| evaluate, wall | {wall:.1f} |",
        f"| of it streaming, wall | {streaming:.1f} |",
        f"| machine busy, CPU-s | {busy:.1f} |",
        f"| machine idle, core-s (2 cores) | {idle:.1f} |",
        f"| stage calls ({calls}), their own CPU-s | {calls_cpu:.1f} |",
        f"| stage actors beyond their calls, CPU-s | {actors - calls_cpu:.1f} |",
    ]
    for name, spent in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| CPU-s in {name} | {spent:.1f} |")
    (out / "overhead-profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
