"""Service-time latency: what an item costs served alone through a configuration, whatever else the run holds.

Inside a run, actors share the cores, so a call's wall time depends on how many configurations run beside
it (the same Tesseract configuration measured a p95 of 598 ms in one run and 1,156 ms in another). Each
call's CPU time (the actor's process and its children) barely moves with contention, but it is not a
latency either: a multi-threaded or GPU engine takes less or more wall time than it burns CPU, and two
busy hyperthreads slow each other's instructions down.

So a run measures both, and then calibrates: a sample of (item, configuration) pairs that covers every
choice is run again, one call at a time, alone on the cluster. For each (stage, choice), the ratio of
those alone wall times to the CPU times the same calls took during the run is its factor, and every call's
service time is its CPU time times that factor. Failed calls count what they spent; a timed-out call
counts its whole timeout.
"""

from __future__ import annotations

import polars as pl

from raypipe.spec import columns
from raypipe.spec.space import Configuration

CALIBRATION_SCHEMA = {
    "item_id": pl.String,
    "config_index": pl.Int64,
    "stage": pl.String,
    "choice": pl.String,
    "wall_ms": pl.Float64,
    "cpu_ms": pl.Float64,
    "error": pl.String,  # a timed-out call: recorded, and no sample of the stage's time
}
FACTORS_SCHEMA = {"stage": pl.String, "choice": pl.String, "factor": pl.Float64, "n_calls": pl.Int64}


def calibration_plan(
    configs: list[Configuration], candidates: list[int] | None = None
) -> list[tuple[int, int]]:
    """The (configuration index, depth) runs that time every choice of every stage on a sampled item in few
    stage calls. A run starts from the longest prefix an earlier run of the item computed (the calibrator
    keeps those outputs, as the run computes a shared prefix once) and stops after its last stage with a
    choice no earlier run timed (`depth` stages). Greedy: next, the run that times the most new choices per
    call it makes. Over (none | cnn) > tesseract > layout it is two runs, the second only the CNN: four calls
    an item, one of them Tesseract, where whole configurations made six, two of them Tesseract."""
    pool = candidates if candidates is not None else list(range(len(configs)))
    needed = {(k, label) for i in pool for k, label in enumerate(configs[i].labels)}
    computed: set[tuple[str, ...]] = set()

    def new_choices(i: int) -> list[int]:
        return [k for k, label in enumerate(configs[i].labels) if (k, label) in needed]

    def score(i: int) -> tuple[float, int, int]:
        new = new_choices(i)
        if not new:
            return (0.0, 0, -i)
        labels = configs[i].labels
        calls = sum(labels[:j] not in computed for j in range(1, max(new) + 2))  # at least the first new one
        return (len(new) / calls, len(new), -i)

    plan: list[tuple[int, int]] = []
    while needed:
        best = max(pool, key=score)
        labels, depth = configs[best].labels, max(new_choices(best)) + 1
        plan.append((best, depth))
        needed -= set(enumerate(labels[:depth]))
        computed |= {labels[:j] for j in range(1, depth + 1)}
    return plan


def plan_calls(configs: list[Configuration], plan: list[tuple[int, int]]) -> int:
    """The stage calls a calibration plan makes on one item (each prefix once)."""
    return len({configs[c].labels[:j] for c, depth in plan for j in range(1, depth + 1)})


def sample_items(items: pl.DataFrame, n: int, stratify_by: str | None = None, seed: int = 0) -> list[str]:
    """`n` item ids drawn at random (seeded): round-robin over the strata of `stratify_by` when given."""
    items = items.sample(fraction=1.0, shuffle=True, seed=seed)
    if stratify_by and stratify_by in items.columns and items[stratify_by].null_count() < items.height:
        groups = items.group_by(stratify_by, maintain_order=True).agg(pl.col("item_id"))
        lists = [ids for ids in groups["item_id"].to_list()]
        picked: list[str] = []
        while len(picked) < min(n, items.height):
            for ids in lists:
                if ids and len(picked) < n:
                    picked.append(ids.pop(0))
        return picked
    return items["item_id"].to_list()[:n]


def factors(calibration: pl.DataFrame, items: pl.DataFrame, stage_names: list[str]) -> pl.DataFrame:
    """Per (stage, choice): the median, over the sampled calls, of alone wall time / the same call's CPU time
    in the run (a median: one call slowed by something else in the run must not move every call's estimate).

    The calls' in-run CPU times come from `items` (columns config_index, item_id, cpu_<stage>_ms and the
    stage's choice column). Where a sampled call has no in-run CPU time (it failed, or came from another
    run's cache on this hardware), the alone CPU time stands in for it. Calls that timed out alone are
    left out.
    """
    if "error" in calibration.columns:
        calibration = calibration.filter(pl.col("error").is_null())
    if calibration.is_empty():
        return pl.DataFrame(schema=FACTORS_SCHEMA)
    in_run = pl.concat(
        [
            items.select(
                "item_id",
                "config_index",
                pl.lit(stage).alias("stage"),
                pl.col(columns.stage_ms("cpu", stage)).alias("cpu_run_ms"),
            )
            for stage in stage_names
        ]
    )
    joined = calibration.join(in_run, on=["item_id", "config_index", "stage"], how="left")
    cpu = pl.when(pl.col("cpu_run_ms") > 0).then(pl.col("cpu_run_ms")).otherwise(pl.col("cpu_ms"))
    ratio = pl.col("wall_ms") / pl.col("cpu_basis").clip(lower_bound=1e-3)
    return (
        joined.with_columns(cpu.alias("cpu_basis"))
        .group_by("stage", "choice")
        .agg(ratio.median().alias("factor"), pl.len().alias("n_calls"))
        .sort("stage", "choice")
    )


def service_latency(
    items: pl.LazyFrame | pl.DataFrame, stage_names: list[str], factor_table: pl.DataFrame
) -> pl.LazyFrame | pl.DataFrame:
    """items with latency_<stage>_ms = cpu_<stage>_ms x the (stage, choice) factor (1 when uncalibrated),
    and latency_total_ms their sum (a stage that never ran adds nothing). Lazy in, lazy out."""
    out = items
    for stage in stage_names:
        table = factor_table.filter(pl.col("stage") == stage).select(
            pl.col("choice").alias(stage), pl.col("factor").alias("_factor")
        )
        table = table.lazy() if isinstance(out, pl.LazyFrame) else table
        out = out.join(table, on=stage, how="left").with_columns(
            (pl.col(columns.stage_ms("cpu", stage)) * pl.col("_factor").fill_null(1.0)).alias(
                columns.stage_ms("latency", stage)
            )
        )
        out = out.drop("_factor")
    total = pl.sum_horizontal([pl.col(f"latency_{s}_ms").fill_null(0.0) for s in stage_names])
    return out.with_columns(total.alias("latency_total_ms"))
