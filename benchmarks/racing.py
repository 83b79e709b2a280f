"""Issue 13's racing targets side by side in one session; writes racing.json and racing.md under --out.

    python benchmarks/racing.py [--n 128] [--orders 20] [--icp-items 30] [--out benchmarks/results/racing]
                                [--quick]

1. raypipe exhaustive on the bench space (benchmarks/bench.yaml) over `--n` items, timed;
2. `raypipe search replay` on that run over `--orders` item orders, keep=best and keep=pareto, and at a few
   other settings (what a missed target would need);
3. live racing, keep=best and keep=pareto, on the same items, timed;
4. live racing on configs/icp.yaml (1,050 configurations) over its first `--icp-items` items (0: skip),
   uncalibrated (see `icp_run`), with racing's own estimate of what exhaustive would spend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

if __package__ in (None, ""):  # run as a script: import `benchmarks` from the repository, not this folder
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks import compare, summary
from raypipe.cli.search import replay_run
from raypipe.engine.rundir import ITEMS, Request, SearchRequest
from raypipe.evaluate.driver import RunResult, resolve_dataset
from raypipe.ray.cluster import WORKER_ENV
from raypipe.search.replay import exhaustive_truth, judge, record
from raypipe.spec.validation import load_spec, task_of

REPO = Path(__file__).resolve().parent.parent
ICP_CONFIG = REPO / "configs" / "icp.yaml"
BEST = compare.RACING
PARETO = {**compare.RACING, "keep": "pareto"}
# Replays at other settings: what a missed target would need (free: no engine runs).
SWEEP = [
    {"tolerance": 0.02},
    {"tolerance": 0.05},
    {"alpha": 0.10},
    {"look_every": 5},
    {"keep": "pareto", "alpha": 0.10},
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(compare.DEFAULT_CONFIG), help="the bench space (YAML)")
    parser.add_argument("--n", type=int, default=None, help="items on the bench space (128; 3 quick)")
    parser.add_argument("--orders", type=int, default=None, help="replayed item orders (20; 2 quick)")
    parser.add_argument("--icp-items", type=int, default=None, help="items racing on icp.yaml (30; 0 skips)")
    parser.add_argument("--out", default="benchmarks/results/racing", help="where the runs and tables go")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 items, 2 configurations, no icp")
    args = parser.parse_args(argv)
    args.n = args.n or (compare.QUICK_ITEMS if args.quick else 128)
    args.orders = args.orders or (2 if args.quick else 20)
    args.icp_items = (0 if args.quick else 30) if args.icp_items is None else args.icp_items
    return args


def replays(run_dir: str, orders: int) -> dict[str, Any]:
    """`raypipe search replay RUN --orders N` at the target settings and at the sweep's."""
    found = {
        "best": replay_run(run_dir, "racing", orders, BEST),
        "pareto": replay_run(run_dir, "racing", orders, PARETO),
    }
    for change in SWEEP:
        name = ", ".join(f"{k}={v}" for k, v in change.items())
        found[name] = replay_run(run_dir, "racing", orders, {**BEST, **change})
    return found


def replay_row(name: str, result: dict[str, Any]) -> dict[str, Any]:
    s, orders = result["summary"], result["orders"]
    last = [o["last_drop_after_items"] for o in orders if o["last_drop_after_items"] is not None]
    return {
        "replay": name,
        "engine_fraction_mean": s["engine_fraction_mean"],
        "engine_fraction_max": s["engine_fraction_max"],
        "picks_within_tolerance": f"{s['picks_within_tolerance']} of {s['orders']}",
        "pareto_share_mean": s["pareto_share_mean"],
        "pareto_share_min": s["pareto_share_min"],
        "mean_survivors": sum(o["survivors"] for o in orders) / len(orders),
        "median_last_drop": sorted(last)[len(last) // 2] if last else None,
    }


def live_quality(run: RunResult, exhaustive_items: pl.DataFrame, task: Any, spec: Any) -> dict[str, Any]:
    """A live race judged as replay judges it: its survivors by the exhaustive run's own numbers."""
    names = [s.name for s in spec.stages]
    objective = task.metric(run.manifest["objective"]["metric"])
    recorded = record(exhaustive_items, names, objective, spec.sla)
    truth = exhaustive_truth(recorded, objective, spec.sla)
    dropped = set(run.configs.filter(pl.col("dropped_after_items").is_not_null())["config_id"])
    survivors = np.array([c not in dropped for c in recorded.config_ids])
    return judge(survivors, truth, recorded, run.manifest["search"]["tolerance"])


def live_row(
    name: str,
    run: summary.MethodRun,
    result: RunResult,
    exhaustive: summary.MethodRun,
    quality: dict[str, Any],
) -> dict[str, Any]:
    search = result.manifest["search"]
    return {
        "run": name,
        "wall_seconds": run.wall_seconds,
        "wall_vs_exhaustive": run.wall_seconds / exhaustive.wall_seconds,
        "work_cpu_vs_exhaustive": run.extra["work_cpu_seconds"] / exhaustive.extra["work_cpu_seconds"],
        "tree_cpu_vs_exhaustive": run.cpu_seconds / exhaustive.cpu_seconds,
        "engine_fraction_own_estimate": search.get("engine_fraction"),
        "stage_calls": run.extra["manifest_calls"],
        "survivors": quality["survivors"],
        "pick": quality["pick_choices"],
        "within_tolerance": quality["within_tolerance"],
        "pareto_share": quality["pareto_share"],
        "looks": search.get("looks"),
    }


def icp_run(items: int, out: Path, config: Path = ICP_CONFIG) -> dict[str, Any] | None:
    """Racing on the full icp.yaml space over its first `items` items, or None when skipped.

    Uncalibrated: the calibration actor would load every choice in one process, and TensorFlow (the
    orientation CNN) loaded before torchvision (EasyOCR) crashes that process; for the same reason the
    driver imports torchvision first, before the preflight checks load TensorFlow."""
    if not items:
        return None
    import torchvision  # noqa: F401 - import order: see the docstring

    spec = load_spec(config)
    resolve_dataset(spec, task_of(spec), None, items)  # generate the spec's cards now, not inside the timing
    request = Request(
        spec=spec,
        out=str(out / "icp-racing"),
        limit=items,
        cache_dir=None,
        calibrate=False,
        search=SearchRequest(name="racing", params=BEST),
    )
    run, result = compare.timed_raypipe("icp racing", request, [s.name for s in spec.stages])
    search = result.manifest["search"]
    reasons = result.configs["drop_reason"].drop_nulls().str.extract(r"^(SLA|objective|tied|Pareto)", 1)
    return {
        "items": items,
        "configurations": result.manifest["n_configs"],
        "wall_seconds": run.wall_seconds,
        "tree_cpu_seconds": run.cpu_seconds,
        "stage_calls": run.extra["manifest_calls"],
        "cpu_seconds_spent": search["cpu_seconds_spent"],
        "exhaustive_cpu_seconds_estimate": search["exhaustive_cpu_seconds_estimate"],
        "engine_fraction": search["engine_fraction"],
        "pick": search["pick"],
        "pick_labels": pick_labels(result, search["pick"]),
        "survivors": len(search["survivors"]),
        "drops_by_rule": dict(reasons.value_counts().iter_rows()),
        "looks": search["looks"],
    }


def pick_labels(result: RunResult, config_id: str | None) -> str | None:
    """The pick's choices, stage by stage."""
    if config_id is None:
        return None
    names = [stage["name"] for stage in result.manifest["spec"]["stages"]]
    row = result.configs.filter(pl.col("config_id") == config_id).row(0, named=True)
    return " > ".join(f"{n}={row[n]}" for n in names)


def exhaustive_rate(exhaustive: summary.MethodRun) -> float:
    """CPU-seconds of stage calls an exhaustive run got through per second of wall time (its own pace)."""
    return exhaustive.extra["work_cpu_seconds"] / exhaustive.wall_seconds


def verdict_row(target: str, measured: str, met: bool | None, command: str) -> dict[str, Any]:
    verdict = "report only" if met is None else ("met" if met else "not met")
    return {"target": target, "measured": measured, "verdict": verdict, "command": command}


def targets(found: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 13's item 3 with what was measured and whether it is met."""
    best, pareto = found["replay"]["best"]["summary"], found["replay"]["pareto"]["summary"]
    wall = next(r["wall_vs_exhaustive"] for r in found["live"] if r["run"] == "racing keep=best")
    how = {"replay": "raypipe search replay RUN --orders N", "live": "raypipe run SPEC --search racing"}
    how |= found.get("commands", {})
    orders, share = best["orders"], pareto["pareto_share_mean"]
    need = math.ceil(0.95 * orders)  # 19 of 20
    return [
        verdict_row(
            f"replay keep=best: pick within tolerance in >= {need} of {orders} orders",
            f"{best['picks_within_tolerance']} of {orders}",
            best["picks_within_tolerance"] >= need,
            how["replay"],
        ),
        verdict_row(
            "replay keep=best: <= 30 % of the engine-seconds",
            _share(best),
            best["engine_fraction_mean"] <= 0.30,
            how["replay"],
        ),
        verdict_row("live racing wall time <= half of exhaustive's", f"{wall:.0%}", wall <= 0.5, how["live"]),
        verdict_row(
            "replay keep=pareto: >= 80 % of the exhaustive Pareto set",
            "-" if share is None else f"{share:.0%} on average (at least {pareto['pareto_share_min']:.0%})",
            share is not None and share >= 0.80,
            how["replay"] + " --search-param keep=pareto",
        ),
        verdict_row(
            "replay keep=pareto: <= 60 % of the engine-seconds",
            _share(pareto),
            pareto["engine_fraction_mean"] <= 0.60,
            how["replay"] + " --search-param keep=pareto",
        ),
        *([icp_target(found["icp"])] if found.get("icp") else []),
    ]


def commands(args: argparse.Namespace, dataset: Path, exhaustive_dir: str) -> dict[str, str]:
    """The CLI commands that give each measurement (paths as this run used them)."""
    return {
        "replay": f"raypipe search replay {shown(exhaustive_dir)} --orders {args.orders}",
        "live": f"raypipe run {shown(args.config)} --dataset {shown(dataset)} --no-cache --search racing "
        "(against the same without --search)",
    }


def shown(path: str | Path) -> str:
    """A path relative to the working directory when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _share(s: dict[str, Any]) -> str:
    return f"{s['engine_fraction_mean']:.0%} on average (at most {s['engine_fraction_max']:.0%})"


def icp_target(icp: dict[str, Any]) -> dict[str, Any]:
    measured = (
        f"{icp['cpu_seconds_spent']:,.0f} CPU-s of calls against an exhaustive estimate of "
        f"{icp['exhaustive_cpu_seconds_estimate']:,.0f} ({icp['engine_fraction']:.0%}); "
        f"pick {icp['pick_labels']}"
    )
    return {
        "target": f"icp.yaml ({icp['configurations']} configurations, {icp['items']} items): spend and pick",
        "measured": measured,
        "verdict": "report only",
        "command": f"raypipe run configs/icp.yaml --limit {icp['items']} --search racing "
        "--no-cache --no-calibrate",
    }


def bench_runs(spec: Any, task: Any, dataset: Path, out: Path, orders: int) -> dict[str, Any]:
    """The bench-space part: exhaustive (timed), its replays, then live racing keep=best and keep=pareto."""
    names = [s.name for s in spec.stages]
    request = compare.raypipe_request(spec, dataset, out / "exhaustive")
    exhaustive, done = compare.timed_raypipe("exhaustive", request, names)
    found: dict[str, Any] = {"replay": replays(str(done.run_dir), orders), "live": []}
    items = done.run_dir.read_parquet(ITEMS)
    for name, params in (("racing keep=best", BEST), ("racing keep=pareto", PARETO)):
        where = out / name.replace(" ", "-").replace("=", "-")
        request = compare.raypipe_request(spec, dataset, where, search="racing", params=params)
        live, result = compare.timed_raypipe(name, request, names)
        quality = live_quality(result, items, task, spec)
        quality["pick_choices"] = summary.choices_of(items, quality["pick"], names)
        found["live"].append(live_row(name, live, result, exhaustive, quality))
    found["exhaustive"] = {
        "wall_seconds": exhaustive.wall_seconds,
        "work_cpu_seconds": exhaustive.extra["work_cpu_seconds"],
        "tree_cpu_seconds": exhaustive.cpu_seconds,
        "stage_calls": exhaustive.extra["manifest_calls"],
        "cpu_seconds_of_calls_per_wall_second": exhaustive_rate(exhaustive),
        "run_dir": str(done.run_dir),
    }
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = load_spec(args.config)
    spec = compare.quick_spec(spec) if args.quick else spec
    task, out = task_of(spec), Path(args.out)
    dataset = compare.prepare_dataset(task, "mixed", args.n, 0, out)
    started = compare.start_ray(os.cpu_count() or 1)
    try:
        found = bench_runs(spec, task, dataset, out, args.orders)
        found["icp"] = icp_run(args.icp_items, out)
    finally:
        compare.stop_ray(started)
    if found["icp"]:
        rate = found["exhaustive"]["cpu_seconds_of_calls_per_wall_second"]
        hours = found["icp"]["exhaustive_cpu_seconds_estimate"] / rate / 3600
        found["icp"]["exhaustive_wall_hours_estimate"] = hours
    found["context"] = {
        "command": "python benchmarks/racing.py " + " ".join(args.argv),
        "spec": args.config,
        "items": args.n,
        "orders": args.orders,
        "machine": compare.machine(),
    }
    found["commands"] = commands(args, dataset, found["exhaustive"]["run_dir"])
    found["targets"] = targets(found)
    return found


def markdown(found: dict[str, Any]) -> str:
    lines = ["# Racing targets (issue 13, item 3)", ""]
    lines += [f"- {k}: {v}" for k, v in found["context"].items()]
    lines += ["", summary.markdown_table(pl.DataFrame(found["targets"])), ""]
    lines += ["## Exhaustive (the reference)", "", summary.vertical_table(found["exhaustive"]), ""]
    rows = [replay_row(name, result) for name, result in found["replay"].items()]
    lines += ["## Replays (`raypipe search replay`)", "", summary.markdown_table(pl.DataFrame(rows)), ""]
    lines += ["## Live racing on the same items", "", summary.markdown_table(pl.DataFrame(found["live"])), ""]
    if found.get("icp"):
        lines += ["## The full icp.yaml space", "", summary.vertical_table(found["icp"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = run(args)
    (out / "racing.json").write_text(json.dumps(found, indent=2, default=str))
    text = markdown(found)
    (out / "racing.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
