"""How long an embedded Ray's start and stop take, as Ray does them by default and as raypipe does them
(`raypipe.ray.cluster`), each start in a fresh process, the modes alternating:

- the start: `ray.init`, with Ray's default retry of the raylet's connection to its object store (every
  1 s, 10 tries) or raypipe's (every 0.1 s, 100 tries); raypipe's without the dashboard's head process and
  the autoscaler's monitor (`cluster.lean_head`) or, as mode "raypipe, whole head", with them;
- the stop: `ray.shutdown`, or raypipe's `cluster._shutdown` (the autoscaler's monitor killed first).

Also the CPU time of the processes the start left behind, as far as the driver reaps them at the stop
(`RUSAGE_CHILDREN`: Ray's head processes, and what each of them reaped).

    python benchmarks/ray_start.py [--reps 10] [--out benchmarks/results/fixed-cost]

Writes ray-start.json (every start) and ray-start.md (medians, ranges, and how many starts took over 3 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

CONNECT = ("raylet_client_connect_timeout_milliseconds", "raylet_client_num_connect_attempts")
MODES = ("ray default", "raypipe, whole head", "raypipe")
ONE_START = """
import contextlib, json, resource, sys, time
import ray
from raypipe.ray import cluster
mode = sys.argv[1]
raypipe = mode != "ray default"
drop = [] if raypipe else json.loads(sys.argv[2])  # the settings left at Ray's default
config = {k: v for k, v in cluster.LOCAL_SYSTEM_CONFIG.items() if k not in drop}
cluster._set_worker_env()  # as raypipe starts Ray: usage statistics off, which `lean_head` needs
started = time.perf_counter()
with cluster.lean_head() if mode == "raypipe" else contextlib.nullcontext():
    ray.init(address="local", include_dashboard=False, log_to_driver=False, _system_config=config)
init_s = time.perf_counter() - started
ray.get(ray.remote(lambda: 1).remote())
started = time.perf_counter()
cluster._shutdown() if raypipe else ray.shutdown()
stop_s = time.perf_counter() - started
reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"init_s": init_s, "stop_s": stop_s, "reaped_cpu_s": reaped.ru_utime + reaped.ru_stime}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    args = parser.parse_args(argv)
    from benchmarks.measure import in_fresh_process, median_range

    rows = []
    for rep in range(args.reps):
        for mode in MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]:  # each mode first in turn
            found = in_fresh_process(ONE_START, mode, json.dumps(CONNECT), cwd=REPO)
            rows.append({"mode": mode, "rep": rep, **found})
            print(
                f"{mode} rep {rep}: start {found['init_s']:.2f} s, stop {found['stop_s']:.2f} s, "
                f"reaped {found['reaped_cpu_s']:.2f} CPU-s",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray-start.json").write_text(json.dumps({"rows": rows}, indent=1))
    lines = [
        "| start and stop | runs | ray.init s, median [min, max] | mean s | starts over 3 s "
        "| stop s, median [min, max] | reaped CPU-s, median [min, max] |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        starts, stops = [r["init_s"] for r in mine], [r["stop_s"] for r in mine]
        reaped = [r["reaped_cpu_s"] for r in mine]
        lines.append(
            f"| {mode} | {len(mine)} | {median_range(starts, 2)} | {statistics.mean(starts):.2f} | "
            f"{sum(t > 3.0 for t in starts)} | {median_range(stops, 2)} | {median_range(reaped, 2)} |"
        )
    (out / "ray-start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
