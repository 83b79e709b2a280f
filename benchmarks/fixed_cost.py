"""A run's fixed cost: everything but its streaming part, on small specs, with the pools started as raypipe
starts them on a cluster of several nodes, and everywhere before issue 19 ("before": Ray Data's wait for each
pool, operator after operator, at full size) and as it starts them on one machine ("now": together, each
from one actor, growing while its queue is long), alternating in one session on one embedded Ray.

    python benchmarks/fixed_cost.py [--reps 3] [--out DIR] [--compare calibrator|plan]

Specs: 40 digits x 4 configurations (no calibration: the test suite's usual run) and 6 ID cards x 2
configurations (Tesseract with and without the orientation CNN), with and without calibration. Reports per
run the wall time, the streaming part (the manifest's `wall_seconds`) and the rest (wall - streaming: data,
preflight, calibration, result files). The actors' start falls inside the streaming part, so the wall time
is the number that moved. The digits models are read from the user's cache in both modes (kept by the
first run: `raypipe.tasks.digits.models`). Writes fixed-cost.json and fixed-cost.md under --out.

`--compare plan` compares the calibration's plan (`latency.calibration_plan`: every choice of every stage
timed once an item, each prefix of choices once) with timing a cover of whole configurations ("whole", as
before it), on the two calibrated cases with the calibrator kept. Writes fixed-cost-plan.json and .md.

`--compare calibrator` compares instead the calibrator a driver keeps between its runs ("kept", raypipe's
default on one node without GPUs: `raypipe.ray.calibration`; a driver's next run, so each switch to "kept"
first makes one untimed run) with a fresh calibrator actor per run ("fresh",
as on a cluster of several nodes, and everywhere before), on the two calibrated cases, with the pools as
raypipe starts them on one node; it also reports the calibration's own seconds. Writes
fixed-cost-calibrator.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raypipe.engine import latency
from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import Request
from raypipe.evaluate.driver import evaluate
from raypipe.ray import calibration, cluster, pipeline
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
CALIBRATED_CASES = (
    ("digits 40 x 4, calibrated", "digits", DIGITS, 40, True),
    ("idcard 6 x 2, calibrated", "idcard", IDCARD, 6, True),
)
ALIVE_NODES = pipeline.alive_nodes
PLAN = latency.calibration_plan
CALIBRATE = calibration.calibrate
SPENT = {"calibration_s": 0.0}


def as_on_a_cluster() -> int:
    return 2  # raypipe's pools on a multi-node cluster: full size, waited for pool by pool


def use(mode: str) -> None:
    """ "now" is raypipe's default on one node (growing pools, started together); "before" is how it starts
    its pools on a cluster of several nodes, as it did everywhere before issue 19 (raypipe.ray.pipeline.
    pool_strategy)."""
    nodes = ALIVE_NODES if mode == "now" else as_on_a_cluster
    pipeline.alive_nodes = nodes


def use_calibrator(mode: str) -> None:
    """ "kept" is raypipe's default on one node; "fresh" starts a calibrator actor per run and ends it after,
    as raypipe does on a cluster of several nodes (the calibrator kept from a "kept" run is ended first)."""
    pipeline.alive_nodes = ALIVE_NODES
    calibration.alive_nodes = ALIVE_NODES if mode == "kept" else as_on_a_cluster
    if mode == "fresh":
        import ray

        for actor, control in calibration._KEPT.values():
            ray.kill(actor)
            ray.kill(control)
        calibration._KEPT.clear()


def whole_configurations(configs: list, candidates: list[int] | None = None) -> list[tuple[int, int]]:
    """Calibration before its plan: a greedy cover of configurations, each timed whole (every stage)."""
    pool = candidates if candidates is not None else list(range(len(configs)))
    needed = {(k, label) for i in pool for k, label in enumerate(configs[i].labels)}
    chosen = []
    while needed:
        best = max(pool, key=lambda i: (len(needed & set(enumerate(configs[i].labels))), -i))
        chosen.append((best, len(configs[best].labels)))
        needed -= set(enumerate(configs[best].labels))
    return chosen


def use_plan(mode: str) -> None:
    """ "plan" is raypipe's calibration (`latency.calibration_plan`: each choice once an item, each prefix
    once); "whole" times a cover of whole configurations, as before it. The calibrator is kept in both."""
    use_calibrator("kept")
    latency.calibration_plan = PLAN if mode == "plan" else whole_configurations


def timed_calibrate(*args, **kwargs):
    started = time.perf_counter()
    try:
        return CALIBRATE(*args, **kwargs)
    finally:
        SPENT["calibration_s"] += time.perf_counter() - started


def spec(task: str, stages: dict, source: str) -> dict:
    return {
        "name": "fixed-cost",
        "task": task,
        "stages": [{"name": k, "choices": v} for k, v in stages.items()],
        "dataset": {"source": source},
        "sla": {"p95_latency_ms": 5000},
    }


def six_card_spec(prefix: str) -> tuple[Path, Path]:
    """A new temporary directory holding 6 mixed cards (seed 1) and the idcard case's spec over them, as YAML:
    the small spec the fresh-process benchmarks run. Returns (the directory, the spec's path)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    source = work / "idcard-6.parquet"
    write_table(resolve_task("idcard").generate("mixed", 6, seed=1), str(source))
    config = work / "small.yaml"
    config.write_text(yaml.safe_dump(spec("idcard", IDCARD, str(source))))
    return work, config


def one_run(task: str, stages: dict, source: str, out: Path, calibrate: bool) -> dict[str, float]:
    SPENT["calibration_s"] = 0.0
    started = time.perf_counter()
    result = evaluate(Request(spec=parse_spec(spec(task, stages, source)), out=str(out), calibrate=calibrate))
    wall = time.perf_counter() - started
    streaming = float(result.manifest["wall_seconds"])
    return {
        "wall_s": wall,
        "streaming_s": streaming,
        "rest_s": wall - streaming,
        "calibration_s": SPENT["calibration_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    parser.add_argument(
        "--compare",
        choices=("pools", "calibrator", "plan"),
        default="pools",
        help="what the two modes differ in",
    )
    args = parser.parse_args(argv)
    if args.compare == "plan":
        modes, switch, cases, stem = ("whole", "plan"), use_plan, CALIBRATED_CASES, "fixed-cost-plan"
    elif args.compare == "calibrator":
        modes, switch, cases, stem = (
            ("fresh", "kept"),
            use_calibrator,
            CALIBRATED_CASES,
            "fixed-cost-calibrator",
        )
    else:
        modes, switch, cases = ("before", "now"), use, CASES
        stem = "fixed-cost"
    from raypipe.evaluate import driver

    driver.time_pairs_alone = timed_calibrate
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
        for mode in modes if rep % 2 == 0 else modes[::-1]:
            switch(mode)
            if mode in ("kept", "plan", "whole"):  # a driver's next run: its calibrator exists (untimed)
                name, task, stages, _, calibrate = cases[0]
                one_run(task, stages, sources[task], work / f"{mode}-{rep}-warm", calibrate)
            for name, task, stages, _, calibrate in cases:
                found = one_run(task, stages, sources[task], work / f"{mode}-{rep}-{len(rows)}", calibrate)
                rows.append({"case": name, "mode": mode, "rep": rep, **found})
                print(f"{name:28s} {mode:6s} rep {rep}: wall {found['wall_s']:.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = {"ray_start_s": ray_start, "compare": args.compare, "rows": rows}
    (out / f"{stem}.json").write_text(json.dumps(found, indent=1))
    base, new = modes
    lines = [
        f"Ray start (embedded, 2 CPUs): {ray_start:.1f} s, not in any row.",
        "",
        f"| case | {args.compare} | runs | wall s (median) | streaming s | rest s | of it calibration s "
        f"| wall, {new} / {base} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = ("wall_s", "streaming_s", "rest_s", "calibration_s")
    for name, *_ in cases:
        medians = {}
        for mode in modes:
            mine = [r for r in rows if r["case"] == name and r["mode"] == mode]
            medians[mode] = {k: statistics.median(r[k] for r in mine) for k in keys}
        for mode in modes:
            m = medians[mode]
            ratio = f"{medians[new]['wall_s'] / medians[base]['wall_s']:.2f}" if mode == new else ""
            lines.append(
                f"| {name} | {mode} | {args.reps} | {m['wall_s']:.1f} | {m['streaming_s']:.1f} | "
                f"{m['rest_s']:.1f} | {m['calibration_s']:.1f} | {ratio} |"
            )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
