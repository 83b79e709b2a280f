"""How long an embedded Ray's start takes (`ray.init` as `raypipe.ray.cluster` calls it), with Ray's default
retry of the raylet's connection to its object store (every 1 s) and with raypipe's (every 0.1 s), each
start in a fresh process, the two modes alternating.

    python benchmarks/ray_start.py [--reps 10] [--out benchmarks/results/fixed-cost]

Writes ray-start.json (every start) and ray-start.md (median, range, and how many starts took over 3 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

CONNECT = ("raylet_client_connect_timeout_milliseconds", "raylet_client_num_connect_attempts")
ONE_START = """
import json, sys, time
import ray
from raypipe.ray import cluster
drop = json.loads(sys.argv[1])  # the settings left at Ray's default
config = {k: v for k, v in cluster.LOCAL_SYSTEM_CONFIG.items() if k not in drop}
started = time.perf_counter()
ray.init(address="local", include_dashboard=False, log_to_driver=False, _system_config=config)
init_s = time.perf_counter() - started
ray.shutdown()
print(json.dumps({"init_s": init_s}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    args = parser.parse_args(argv)
    from benchmarks.measure import median_range

    modes = ["ray default", "raypipe"]
    rows = []
    for rep in range(args.reps):
        for mode in modes if rep % 2 == 0 else modes[::-1]:
            done = subprocess.run(
                [sys.executable, "-c", ONE_START, json.dumps(CONNECT if mode == "ray default" else [])],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            init_s = json.loads(done.stdout.strip().splitlines()[-1])["init_s"]
            rows.append({"mode": mode, "rep": rep, "init_s": init_s})
            print(f"{mode} rep {rep}: {init_s:.2f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray-start.json").write_text(json.dumps({"rows": rows}, indent=1))
    lines = [
        "| raylet's connection retry | starts | ray.init s, median [min, max] | mean s | starts over 3 s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode in modes:
        times = [r["init_s"] for r in rows if r["mode"] == mode]
        slow = sum(t > 3.0 for t in times)
        lines.append(
            f"| {mode} | {len(times)} | {median_range(times, 2)} | {statistics.mean(times):.2f} | {slow} |"
        )
    (out / "ray-start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
