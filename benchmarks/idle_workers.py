"""A driver's next runs with the embedded Ray's idle workers kept for a minute (raypipe's
`LOCAL_SYSTEM_CONFIG`) against Ray's default (an idle worker past the CPU count ends after one second).

    python benchmarks/idle_workers.py [--processes 4] [--runs 6] [--out benchmarks/results/fixed-cost]

Each process starts its own embedded Ray (2 CPUs) in one mode, makes one untimed run, then `--runs` timed
in-process runs of 40 digits x 4 configurations, uncalibrated (the test suite's usual run); the modes
alternate process by process. Per run: the wall time and the machine's busy CPU-seconds
(`benchmarks.measure.machine_busy_seconds`, all cores: run it on a quiet machine). Writes
idle-workers.json and idle-workers.md under --out.
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

MODES = ("ray default", "kept 60 s")
DIGITS = {"preprocess": ["none", "deskew"], "classify": ["linear", "onnx"]}


def child(mode: str, runs: int) -> list[dict[str, float]]:
    """One process, one embedded Ray in `mode`: a warm-up run, then `runs` timed runs."""
    from benchmarks.measure import machine_busy_seconds
    from raypipe.engine.datasets import write_table
    from raypipe.engine.rundir import Request
    from raypipe.evaluate.driver import evaluate
    from raypipe.ray import cluster
    from raypipe.spec.registry import resolve_task
    from raypipe.spec.validation import parse_spec

    if mode == MODES[0]:
        cluster.LOCAL_SYSTEM_CONFIG = {}
    work = Path(tempfile.mkdtemp(prefix="raypipe-idle-"))
    source = str(work / "digits-40.parquet")
    write_table(resolve_task("digits").generate("mixed", 40, seed=1), source)
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
    parser.add_argument("--processes", type=int, default=4, help="processes per mode, alternating")
    parser.add_argument("--runs", type=int, default=6, help="timed runs per process")
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.runs)))
        return 0
    rows = []
    for p in range(args.processes):
        for mode in MODES if p % 2 == 0 else MODES[::-1]:
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--runs", str(args.runs)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            found = json.loads(done.stdout.strip().splitlines()[-1])
            rows += [{"mode": mode, "process": p, "run": n, **r} for n, r in enumerate(found)]
            walls = ", ".join(f"{r['wall_s']:.1f}" for r in found)
            print(f"{mode:12s} process {p}: wall {walls} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "idle-workers.json").write_text(json.dumps({"rows": rows}, indent=1))
    lines = [
        "| idle workers | runs | wall s, median [min, max] | machine CPU-s, median [min, max] "
        "| wall, kept / default |",
        "| --- | --- | --- | --- | --- |",
    ]
    medians = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        wall, cpu = [r["wall_s"] for r in mine], [r["cpu_s"] for r in mine]
        medians[mode] = statistics.median(wall)
        ratio = f"{medians[mode] / medians[MODES[0]]:.2f}" if mode == MODES[1] else ""
        lines.append(
            f"| {mode} | {len(mine)} | {statistics.median(wall):.2f} [{min(wall):.2f}, {max(wall):.2f}] | "
            f"{statistics.median(cpu):.2f} [{min(cpu):.2f}, {max(cpu):.2f}] | {ratio} |"
        )
    (out / "idle-workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
