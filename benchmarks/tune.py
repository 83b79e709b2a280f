"""Ray Tune as raypipe's peer, the way a Ray user would first write it: one trial per configuration.

Each trial is a function trainable that builds the stage objects of its one configuration (the same
classes, `benchmarks.baselines.run_configuration`) and runs them over the items, so every trial recomputes
every prefix it shares with other trials. It reports the running objective after each chunk of items
(Tune's "training iteration") and writes its rows to `rows_dir` before each report, so a trial that ASHA
stops keeps what it did.

- grid: `tune.grid_search` over the configuration indices, one report at the end (no scheduler).
- asha: the same grid under `ASHAScheduler` on the same objective, rungs at chunks of items.

Trials take one CPU each, so two share the two cores. The pick is taken like raypipe's: the best
configuration that ran on every item and meets the SLA on its own numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.baselines import Item, build_implementations, rows_frame, run_configuration
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.space import expand_configurations
from raypipe.spec.task import Metric
from raypipe.spec.validation import task_of

GRID, ASHA = "grid", "asha"


def running_metrics(rows: list[dict[str, Any]], objective: str, sla_metrics: list[str]) -> dict[str, float]:
    """What a trial reports after a chunk: its running objective, p95 and SLA metric means so far."""
    frame = rows_frame(rows)
    report = {
        "objective": float(frame[objective].cast(pl.Float64).mean() or 0.0),
        "p95_ms": float(frame["latency_total_ms"].quantile(0.95, "linear") or 0.0),
        "items": frame.height,
    }
    report.update({f"sla_{m}": float(frame[m].cast(pl.Float64).mean() or 0.0) for m in sla_metrics})
    return report


def trial(
    config: dict[str, Any],
    spec: PipelineSpec,
    items: list[Item],
    rows_dir: str,
    chunk: int,
    objective: str,
    sla_metrics: list[str],
) -> None:
    """One Tune trial: configuration `config["index"]` over the items, reporting after each chunk."""
    from ray import tune

    task = task_of(spec)
    configuration = expand_configurations(spec)[config["index"]]
    impls = build_implementations(spec, task, [configuration])
    rows: list[dict[str, Any]] = []
    for start in range(0, len(items), chunk):
        block = [run_configuration(task, impls, configuration, item) for item in items[start : start + chunk]]
        rows += block
        path = Path(rows_dir) / f"{configuration.config_id}-{start:06d}.parquet"
        rows_frame(block).write_parquet(path)
        tune.report(running_metrics(rows, objective, sla_metrics))


def scheduler(method: str, n_chunks: int, reduction_factor: float) -> Any:
    """None for the grid; ASHA with Tune's defaults but for max_t (the number of chunks)."""
    if method == GRID:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(max_t=n_chunks, grace_period=1, reduction_factor=reduction_factor)


def build_tuner(
    method: str,
    spec: PipelineSpec,
    items: list[Item],
    out: Path,
    objective: Metric,
    sla_metrics: list[str],
    chunk: int,
    reduction_factor: float,
) -> Any:
    """A Tuner over every configuration index: one CPU per trial, rows written under out/rows."""
    from ray import tune

    params = {"spec": spec, "items": items, "rows_dir": str((out / "rows").resolve()), "chunk": chunk}
    params |= {"objective": objective.name, "sla_metrics": sla_metrics}
    trainable = tune.with_resources(tune.with_parameters(trial, **params), {"cpu": 1})
    n_configs = len(expand_configurations(spec))
    return tune.Tuner(
        trainable,
        param_space={"index": tune.grid_search(list(range(n_configs)))},
        tune_config=tune.TuneConfig(
            metric="objective",
            mode="max" if objective.higher_is_better else "min",
            scheduler=scheduler(method, math.ceil(len(items) / chunk), reduction_factor),
        ),
        run_config=tune.RunConfig(name=method, storage_path=str((out / "tune").resolve()), verbose=0),
    )


def run_tune(
    method: str,
    spec: PipelineSpec,
    items: list[Item],
    out: Path,
    objective: Metric,
    sla_metrics: list[str],
    chunk: int | None = None,
    reduction_factor: float = 4,
) -> dict[str, Any]:
    """Run the Tune peer on the Ray this process is connected to; returns its rows and what Tune chose."""
    chunk = len(items) if method == GRID or chunk is None else chunk
    (out / "rows").mkdir(parents=True, exist_ok=True)
    grid = build_tuner(method, spec, items, out, objective, sla_metrics, chunk, reduction_factor).fit()
    if grid.errors:
        raise RuntimeError(f"Tune {method}: {len(grid.errors)} trials failed: {grid.errors[0]}")
    best = grid.get_best_result(scope="last")  # what `get_best_result` gives a user who stops there
    parts = [pl.read_parquet(p) for p in sorted((out / "rows").glob("*.parquet"))]
    return {
        "rows": pl.concat(parts, how="diagonal_relaxed"),
        "tune_best_index": best.config["index"],
        "tune_best_objective": best.metrics["objective"],
        "tune_best_items": best.metrics["items"],
        "chunk": chunk,
        "trials": len(grid),
        "iterations": sum(int(r.metrics["training_iteration"]) for r in grid),
    }
