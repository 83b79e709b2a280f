"""A run's fixed cost: everything but its streaming part, on small specs, with the pools started as raypipe
starts them on a cluster of several nodes, and everywhere before issue 19 ("before": Ray Data's wait for each
pool, operator after operator, at full size) and as it starts them on one machine ("now": together, each
from one actor, growing while its queue is long), alternating in one session on one embedded Ray.

    python benchmarks/fixed_cost.py [--reps 3] [--out benchmarks/results/fixed-cost]

Specs: 40 digits x 4 configurations (no calibration: the test suite's usual run) and 6 ID cards x 2
configurations (Tesseract with and without the orientation CNN), with and without calibration. Reports per
run the wall time, the streaming part (the manifest's `wall_seconds`) and the rest (wall - streaming: data,
preflight, calibration, result files). The actors' start falls inside the streaming part, so the wall time
is the number that moved. The digits models are read from the user's cache in both modes (kept by the
first run: `raypipe.tasks.digits.models`). Writes fixed-cost.json and fixed-cost.md under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import Request
from raypipe.evaluate.driver import evaluate
from raypipe.ray import cluster, pipeline
from raypipe.spec.registry import resolve_task
from raypipe.spec.validation import parse_spec

DIGITS = {"preprocess": ["none", "deskew"], "classify": ["linear", "onnx"]}
IDCARD = {
    "orient": ["none", {"name": "cnn", "params": {"variant": "onnx-int8"}}],
    "ocr": [{"name": "tesseract", "params": {"lang": "chi_sim+eng", "psm": 11}}],
    "extract": ["layout"],
}
CASES = (  # name, task, stages, items, calibrate
    ("digits 40 x 4", "digits", DIGITS, 40, False),
    ("idcard 6 x 2", "idcard", IDCARD, 6, False),
    ("idcard 6 x 2, calibrated", "idcard", IDCARD, 6, True),
)
ALIVE_NODES = pipeline.alive_nodes


def as_on_a_cluster() -> int:
    return 2  # raypipe's pools on a multi-node cluster: full size, waited for pool by pool


def use(mode: str) -> None:
    """ "now" is raypipe's default on one node (growing pools, started together); "before" is how it starts
    its pools on a cluster of several nodes, as it did everywhere before issue 19 (raypipe.ray.pipeline.
    pool_strategy)."""
    nodes = ALIVE_NODES if mode == "now" else as_on_a_cluster
    pipeline.alive_nodes = nodes


def spec(task: str, stages: dict, source: str) -> dict:
    return {
        "name": "fixed-cost",
        "task": task,
        "stages": [{"name": k, "choices": v} for k, v in stages.items()],
        "dataset": {"source": source},
        "sla": {"p95_latency_ms": 5000},
    }


def one_run(task: str, stages: dict, source: str, out: Path, calibrate: bool) -> dict[str, float]:
    started = time.perf_counter()
    result = evaluate(Request(spec=parse_spec(spec(task, stages, source)), out=str(out), calibrate=calibrate))
    wall = time.perf_counter() - started
    streaming = float(result.manifest["wall_seconds"])
    return {"wall_s": wall, "streaming_s": streaming, "rest_s": wall - streaming}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="raypipe-fixed-"))
    sources = {}
    for task, n in (("digits", 40), ("idcard", 6)):
        sources[task] = str(work / f"{task}-{n}.parquet")
        write_table(resolve_task(task).generate("mixed", n, seed=1), sources[task])
    started = time.perf_counter()
    cluster.connect(None, 2)
    ray_start = time.perf_counter() - started
    use("now")
    one_run("digits", DIGITS, sources["digits"], work / "warm-up", False)  # keeps the digits models
    rows = []
    for rep in range(args.reps):
        for mode in ("before", "now") if rep % 2 == 0 else ("now", "before"):
            use(mode)
            for name, task, stages, _, calibrate in CASES:
                found = one_run(task, stages, sources[task], work / f"{mode}-{rep}-{len(rows)}", calibrate)
                rows.append({"case": name, "mode": mode, "rep": rep, **found})
                print(f"{name:28s} {mode:6s} rep {rep}: wall {found['wall_s']:.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = {"ray_start_s": ray_start, "rows": rows}
    (out / "fixed-cost.json").write_text(json.dumps(found, indent=1))
    lines = [
        f"Ray start (embedded, 2 CPUs): {ray_start:.1f} s, not in any row.",
        "",
        "| case | pools | runs | wall s (median) | streaming s | rest s | wall, now / before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, *_ in CASES:
        medians = {}
        for mode in ("before", "now"):
            mine = [r for r in rows if r["case"] == name and r["mode"] == mode]
            medians[mode] = {
                k: statistics.median(r[k] for r in mine) for k in ("wall_s", "streaming_s", "rest_s")
            }
        for mode in ("before", "now"):
            m = medians[mode]
            ratio = f"{medians['now']['wall_s'] / medians['before']['wall_s']:.2f}" if mode == "now" else ""
            lines.append(
                f"| {name} | {mode} | {args.reps} | {m['wall_s']:.1f} | {m['streaming_s']:.1f} | "
                f"{m['rest_s']:.1f} | {ratio} |"
            )
    (out / "fixed-cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
