"""The comparison table: speed-ups, efficiency against the ideal, and how close halving came to exhaustive.

The ideal wall time is the unique engine work (raypipe exhaustive's engine-seconds, from its own
per-stage times) spread perfectly over the cores; a method's efficiency is ideal / its wall time.
raypipe times its calls while its actors share the cores, so a call that waits for a core is counted as
work; the stricter ideal prices the same unique calls at the sequential loop's mean time per call of
each stage (one process, no waiting on its own siblings).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from raypipe import results
from raypipe.evaluation import RunResult

SEQUENTIAL, POOL, UNSHARED, EXHAUSTIVE, HALVING = (
    "sequential",
    "pool",
    "raypipe-unshared",
    "raypipe",
    "raypipe-halving",
)
DESCRIPTIONS = {
    SEQUENTIAL: "sequential loop over configurations and items (course notebooks)",
    POOL: "multiprocessing.Pool over items, per configuration (course script)",
    UNSHARED: "raypipe, prefix sharing and identical-input reuse off",
    EXHAUSTIVE: "raypipe exhaustive",
    HALVING: "raypipe successive halving",
}


@dataclass
class MethodRun:
    """One measured method: its wall time and memory from the driver, and the work it reports."""

    method: str
    wall_seconds: float
    engine_seconds: float
    stage_calls: int
    peak_rss_bytes: int
    load_before: float
    predictions: pl.DataFrame  # config_id, item_id, prediction
    cpu_seconds: float = 0.0  # CPU used by the benchmark's process tree
    others_cpu_seconds: float = 0.0  # CPU used by the rest of the (shared) machine meanwhile


def same_predictions(run: pl.DataFrame, reference: pl.DataFrame) -> float:
    """Share of (configuration, item) rows whose prediction equals the reference's for the same pair."""
    joined = run.join(reference, on=["config_id", "item_id"], how="inner", suffix="_ref")
    if joined.height == 0:
        return float("nan")
    return joined.select((pl.col("prediction") == pl.col("prediction_ref")).mean()).item()


def priced_seconds(work: dict[str, dict], mean_ms: dict[str, float]) -> float:
    """Engine-seconds of a run's stage calls (a manifest's `work`), each at its stage's given mean time."""
    return sum(work[stage]["calls"] * ms for stage, ms in mean_ms.items()) / 1000.0


def comparison_table(runs: list[MethodRun], cores: int, strict_ideal: float | None = None) -> pl.DataFrame:
    """One row per method with the derived columns; needs the exhaustive run (the ideal's source)."""
    by_method = {r.method: r for r in runs}
    ideal = by_method[EXHAUSTIVE].engine_seconds / cores
    reference = by_method[EXHAUSTIVE].predictions
    frame = pl.DataFrame(
        {
            "method": [r.method for r in runs],
            "description": [DESCRIPTIONS.get(r.method, r.method) for r in runs],
            "wall_seconds": [r.wall_seconds for r in runs],
            "engine_seconds": [r.engine_seconds for r in runs],
            "stage_calls": [r.stage_calls for r in runs],
            "peak_rss_mib": [r.peak_rss_bytes / 2**20 for r in runs],
            "load_1m_before": [r.load_before for r in runs],
            "cpu_seconds": [r.cpu_seconds for r in runs],
            "others_cpu_seconds": [r.others_cpu_seconds for r in runs],
            "same_predictions": [same_predictions(r.predictions, reference) for r in runs],
        }
    )
    wall = pl.col("wall_seconds")

    def speedup(method: str) -> pl.Expr:  # null where the peer was not run (--halving-only)
        return (
            pl.lit(by_method[method].wall_seconds) / wall if method in by_method else pl.lit(None, pl.Float64)
        )

    return frame.with_columns(
        speedup(SEQUENTIAL).alias("speedup_vs_sequential"),
        speedup(POOL).alias("speedup_vs_pool"),
        pl.lit(ideal).alias("ideal_seconds"),
        (pl.lit(ideal) / wall).alias("efficiency"),
        pl.lit(strict_ideal, pl.Float64).alias("strict_ideal_seconds"),
        (pl.lit(strict_ideal, pl.Float64) / wall).alias("efficiency_strict"),
        (pl.col("cpu_seconds") / wall).alias("cores_used"),
        (pl.col("others_cpu_seconds") / wall).alias("others_cores"),
    )


def _share(found: set[str], reference: set[str]) -> float | None:
    return len(found & reference) / len(reference) if reference else None


def own_front(configs: pl.DataFrame) -> set[str]:
    """The Pareto front of these configurations alone, from their own numbers."""
    return set(results.with_pareto(configs.drop("pareto")).filter("pareto")["config_id"])


def halving_quality(
    exhaustive_run: RunResult,
    halving_run: RunResult,
    repeat: pl.DataFrame | None = None,
    mean_ms: dict[str, float] | None = None,
) -> dict:
    """Did halving pick the exhaustive winner, how much of the exhaustive Pareto set did it find, and at
    what share of the exhaustive engine-seconds.

    Halving's answer is what it kept to the end: those configurations ran on every item, so their rows
    compare with exhaustive's. Its Pareto set is the front among them (a configuration dropped early has
    numbers from a few items and must not dominate anything). Halving drops configurations that miss the
    SLA by design, so shares are also given of the exhaustive front's SLA-meeting part. Pareto membership
    hangs on measured latencies, which move from run to run: `repeat` (the configs table of a second full
    run) gives the share that a repetition of exhaustive itself finds. Engine-seconds measured while other
    work shares the cores are inflated by waiting, so the fraction is also given with both runs' calls
    priced at `mean_ms` (the sequential loop's time per call of each stage).
    """
    exhaustive = results.rank(exhaustive_run.configs)
    survivors = results.rank(halving_run.configs.filter(pl.col("dropped_round").is_null()))
    front, kept = own_front(survivors), set(survivors["config_id"])
    exhaustive_front = set(exhaustive.filter("pareto")["config_id"])
    meeting_sla = exhaustive_front & set(exhaustive.filter("sla_pass")["config_id"])
    winner = exhaustive["config_id"][0]
    halving_winner = survivors["config_id"][0] if survivors.height else None
    accuracy = dict(zip(exhaustive["config_id"], exhaustive["assertion_accuracy"], strict=True))
    work = exhaustive_run.manifest["work"], halving_run.manifest["work"]
    strict = priced_seconds(work[1], mean_ms) / priced_seconds(work[0], mean_ms) if mean_ms else None
    return {
        "exhaustive_winner": winner,
        "halving_winner": halving_winner,
        "found_winner": halving_winner == winner,
        "winner_kept": winner in kept,
        "winner_accuracy_gap": accuracy[winner] - accuracy.get(halving_winner, 0.0),
        "n_survivors": survivors.height,
        "exhaustive_pareto": len(exhaustive_front),
        "pareto_share": _share(front, exhaustive_front),
        "exhaustive_pareto_sla": len(meeting_sla),
        "pareto_share_sla": _share(front, meeting_sla),
        "pareto_kept_sla": _share(kept, meeting_sla),
        "pareto_share_repeat": _share(own_front(repeat), exhaustive_front) if repeat is not None else None,
        "engine_fraction": halving_run.manifest["search"]["engine_seconds"]
        / exhaustive_run.manifest["engine_seconds"],
        "engine_fraction_strict": strict,
    }


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


TABLE_COLUMNS = {
    "method": "method",
    "wall_seconds": "wall s",
    "engine_seconds": "engine-s",
    "stage_calls": "stage calls",
    "speedup_vs_sequential": "x sequential",
    "speedup_vs_pool": "x Pool",
    "efficiency": "efficiency",
    "efficiency_strict": "efficiency (strict)",
    "peak_rss_mib": "peak RSS MiB",
    "cores_used": "cores used",
    "others_cores": "others' cores",
    "same_predictions": "same predictions",
}


def markdown_report(table: pl.DataFrame, halving: dict | None, context: dict[str, object]) -> str:
    """The table and the halving comparison as Markdown, headed by what was run where."""
    lines = ["# raypipe against its peers", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    ideal, strict = table["ideal_seconds"][0], table["strict_ideal_seconds"][0]
    lines += ["", f"Ideal wall time (raypipe's unique engine work / cores): {ideal:.1f} s"]
    if strict is not None:
        lines += [f"Strict ideal (the same calls at the sequential loop's time per call): {strict:.1f} s"]
    shown = table.select(list(TABLE_COLUMNS)).rename(TABLE_COLUMNS)
    lines += ["", markdown_table(shown), ""]
    if halving:
        lines += ["## Successive halving against exhaustive", ""]
        vertical = pl.DataFrame({"measure": list(halving), "value": [_cell(v) for v in halving.values()]})
        lines += [markdown_table(vertical), ""]
    return "\n".join(lines)
