"""The decision-guarantee benchmark (issue 16, item 6): how often a certified pick misses, what an undecided
run's provisional pick costs, how many items --until-decided needs, and the same for the rules it replaced.

Truth: one exhaustive run, replayed offline from its items (`--run`; a run stopped early is read from its
parts, complete items only, with uncalibrated latency). Each configuration's true objective and true SLA
verdict are the full run's point estimates. A pick's regret is the best truly SLA-meeting objective minus
the pick's own; a pick that truly misses the SLA is a failure whatever its regret, and so is a regret over
epsilon. Draws: `--draws` random subsamples of each `--sizes` (a fresh one each, in random order), every
rule of `benchmarks.decision_rules` on each. --until-decided: `--until` fresh random orders of the whole
pool, looks of `--look` items, stopping at certification or at `--cap` items (default: the pool).

    python benchmarks/decisions.py --run runs/dec16/digits-truth --label digits --sizes 50 100 200
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

if __package__ in (None, ""):  # run as a script: import `benchmarks` from the repository, not this folder
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks import decision_rules as rules
from benchmarks.decision_report import summarize, write_outputs
from raypipe.decide.decision import DecisionSettings, item_arrays
from raypipe.decide.results import assemble_items, complete_items
from raypipe.engine.rundir import ITEMS, MANIFEST, Request, RunDir
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.space import expand_configurations
from raypipe.spec.task import Metric
from raypipe.spec.validation import task_of

OUT = Path(__file__).resolve().parent / "results" / "decisions"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="the truth: an exhaustive run directory")
    p.add_argument(
        "--resummarize", action="store_true", help="rebuild the tables from --out's raw CSV files, no --run"
    )
    p.add_argument("--label", required=True, help="names the output files (digits, idcard)")
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200], help="subsample sizes")
    p.add_argument("--draws", type=int, default=200, help="subsamples per size")
    p.add_argument("--until", type=int, default=200, help="--until-decided simulations (random orders)")
    p.add_argument("--look", type=int, default=10, help="items per look of --until-decided")
    p.add_argument("--cap", type=int, default=None, help="--until-decided's --max-items (default: the pool)")
    p.add_argument("--asha-iterations", type=int, default=8, help="ASHA iterations over a subsample")
    p.add_argument("--epsilon", type=float, default=None, help="default: the run's spec")
    p.add_argument("--delta", type=float, default=None, help="default: the run's spec")
    p.add_argument(
        "--sla-min",
        nargs="*",
        default=None,
        metavar="METRIC=VALUE",
        help="replace the spec's SLA minimum bounds for the replay (none given: no minimum bound)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    return p.parse_args(argv)


def run_items(run_dir: RunDir, request: Request) -> tuple[pl.DataFrame, bool]:
    """The run's item rows, and whether the run finished (else its parts, complete items only)."""
    if run_dir.exists(ITEMS):
        return run_dir.read_parquet(ITEMS), True
    configs = expand_configurations(request.spec)
    parts = run_dir.read_parts()
    if parts is None:
        raise SystemExit(f"{run_dir}: no items.parquet and no parts yet")
    done = complete_items(parts, len(configs))
    parts = parts.filter(pl.col("item_id").is_in(sorted(done)))
    items = assemble_items(parts, configs, pl.DataFrame({"item_id": sorted(done)})).collect()
    names = list(configs[0].stage_names)  # uncalibrated: CPU time stands for service time
    total = pl.sum_horizontal([pl.col(f"cpu_{s}_ms").fill_null(0.0) for s in names])
    return items.with_columns(total.alias("latency_total_ms")), False


def with_sla_min(spec: PipelineSpec, entries: list[str] | None) -> PipelineSpec:
    """The spec with its SLA's minimum bounds replaced by `entries` (METRIC=VALUE); None keeps them."""
    if entries is None:
        return spec
    minimum = {m: float(v) for m, _, v in (e.partition("=") for e in entries)}
    return spec.model_copy(update={"sla": spec.sla.model_copy(update={"min": minimum})})


def load_pool(location: str, sla_min: list[str] | None = None) -> tuple[rules.Pool, dict[str, Any]]:
    """The truth run as a pool of items (every configuration has a row for each), and what describes it;
    `sla_min` replaces the SLA's minimum bounds (the replay judges the SLA offline)."""
    run_dir = RunDir(location)
    request = Request.load(location)
    spec = with_sla_min(request.spec, sla_min)
    task = task_of(spec)
    items, finished = run_items(run_dir, request)
    manifest = run_dir.read_json(MANIFEST) if run_dir.exists(MANIFEST) else {}
    name = (manifest.get("objective") or {}).get("metric") or (
        spec.objective.metric if spec.objective else task.default_objective(True)
    )
    objective: Metric = task.metric(name)
    metrics = {m: task.metric(m) for m, _, _ in spec.sla.bounds()}
    config_ids = [c.config_id for c in expand_configurations(spec)]
    counts = items.group_by("item_id").agg(pl.col("config_id").n_unique().alias("n"))
    complete = sorted(counts.filter(pl.col("n") == len(config_ids))["item_id"].to_list())
    columns = list(dict.fromkeys([objective.name, "latency_total_ms", *metrics]))
    arrays = item_arrays(items, config_ids, columns, order=complete)
    pool = rules.Pool(
        config_ids, objective, spec.sla, metrics,
        arrays[objective.name], arrays["latency_total_ms"], {m: arrays[m] for m in metrics},
    )  # fmt: skip
    labels = {c.config_id: "/".join(c.labels) for c in expand_configurations(spec)}
    info = {
        "run": str(location),
        "finished": finished,
        "items": pool.size,
        "configurations": len(config_ids),
        "objective": objective.name,
        "sla": spec.sla.model_dump(mode="json"),
        "git_revision": manifest.get("git_revision"),
        "run_decision": manifest.get("decision"),
        "labels": labels,
        "spec_decision": spec.decision.model_dump(mode="json"),
    }
    return pool, info


class Judge:
    """A pick's true regret and SLA verdict, on the full pool's point estimates."""

    def __init__(self, pool: rules.Pool, epsilon: float):
        self.pool, self.epsilon = pool, epsilon
        self.truth = rules.point_estimates(pool)
        feasible = self.truth.objective[self.truth.feasible]
        self.best = float(feasible.max()) if len(feasible) else math.nan
        self.index = {c: i for i, c in enumerate(pool.config_ids)}

    def __call__(self, outcome: rules.Outcome) -> dict[str, Any]:
        row = {"rule": outcome.rule, "status": outcome.status, "pick": outcome.pick, "items": outcome.items}
        row["evaluations"] = outcome.evaluations
        if outcome.pick is None:
            return row | {"regret": None, "truly_meets_sla": None, "failure": None}
        c = self.index[outcome.pick]
        regret = self.best - float(self.truth.objective[c])
        meets = bool(self.truth.feasible[c])
        return row | {
            "regret": regret,
            "truly_meets_sla": meets,
            "failure": (not meets) or regret > self.epsilon,
        }

    def table(self, labels: dict[str, str]) -> pl.DataFrame:
        t = self.truth
        return pl.DataFrame(
            {
                "config_id": self.pool.config_ids,
                "choices": [labels[c] for c in self.pool.config_ids],
                "objective": t.objective.tolist(),
                "p95_ms": t.p95.tolist(),
                "meets_sla": t.feasible.tolist(),
                "regret": (self.best - t.objective).tolist(),
            }
        ).sort("objective", descending=True)


def fixed_size_draws(
    pool: rules.Pool, judge: Judge, args: argparse.Namespace, settings: DecisionSettings
) -> list[dict[str, Any]]:
    """Every rule on `draws` fresh random subsamples of each size."""
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in args.sizes:
        chunk = max(1, math.ceil(n / args.asha_iterations))
        for draw in range(args.draws):
            sample = pool.take(rng.choice(pool.size, size=min(n, pool.size), replace=False))
            for outcome in (
                rules.decision_rule(sample, settings),
                rules.previous_rule(sample),
                rules.argmax_rule(sample),
                rules.asha_rule(sample, chunk),
            ):
                rows.append({"n": n, "draw": draw} | judge(outcome))
    return rows


def until_decided_runs(
    pool: rules.Pool, judge: Judge, args: argparse.Namespace, settings: DecisionSettings
) -> list[dict[str, Any]]:
    """--until-decided on fresh random orders of the pool, with masking (what the option does) and without
    (a fixed-size run of n items certifies exactly when this one has by n, since the tests are
    anytime-valid: its stopping times give P(certified) of every fixed size)."""
    rng = np.random.default_rng(args.seed + 1)
    rows = []
    for sim in range(args.until):
        order = pool.take(rng.permutation(pool.size))
        for mask in (True, False):
            outcome = rules.until_decided(order, settings, args.look, args.cap, mask=mask)
            rows.append({"n": args.cap or pool.size, "draw": sim} | judge(outcome))
    return rows


def resummarize(args: argparse.Namespace) -> int:
    """The tables again from the committed raw files: label.json's context, draws, runs and truth."""
    out = Path(args.out)
    found = json.loads((out / f"{args.label}.json").read_text())
    draws = pl.read_csv(out / f"{args.label}-draws.csv")
    runs = out / f"{args.label}-until.csv"
    until = pl.read_csv(runs) if runs.exists() else pl.DataFrame()
    sizes = sorted(set(draws["n"].to_list()))
    again = summarize(draws, until, found["context"], sizes) | {"seconds": found.get("seconds")}
    truth = pl.read_csv(out / f"{args.label}-truth.csv")
    print(write_outputs(again, truth, draws, until, out, args.label))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.resummarize:
        return resummarize(args)
    if not args.run:
        raise SystemExit("--run RUN_DIR is required (or --resummarize)")
    started = time.time()
    pool, info = load_pool(args.run, args.sla_min)
    decision = info["spec_decision"]
    settings = DecisionSettings(args.epsilon or decision["epsilon"], args.delta or decision["delta"])
    judge = Judge(pool, settings.epsilon)
    draws = pl.DataFrame(fixed_size_draws(pool, judge, args, settings), infer_schema_length=None)
    until = pl.DataFrame(until_decided_runs(pool, judge, args, settings), infer_schema_length=None)
    command = " ".join(["python benchmarks/decisions.py", *(sys.argv[1:] if argv is None else argv)])
    context = info | {
        "command": command,
        "epsilon": settings.epsilon,
        "delta": settings.delta,
        "seed": args.seed,
        "draws": args.draws,
        "until_runs": args.until,
        "look": args.look,
        "cap": args.cap or pool.size,
        "asha": f"{args.asha_iterations} iterations per subsample, grace 1, reduction factor 4",
        "true_best_objective": judge.best,
    }
    found = summarize(draws, until, context, args.sizes)
    found["seconds"] = round(time.time() - started, 1)
    text = write_outputs(found, judge.table(info["labels"]), draws, until, Path(args.out), args.label)
    print(text)
    print(json.dumps({"seconds": found["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
