"""Run results: atomic Parquet/JSON writes and the Polars aggregation (percentiles, SLA, Pareto, slices)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.space import Configuration
from raypipe.spec import SLASpec

EXACT_FIELDS = ("name", "sex", "ethnicity", "birth_date", "id_number")
WORK_PREFIXES = ("_calls_", "_reused_", "_cached_", "_busy_")
Z_95 = 1.959963984540054


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename: readers never see a torn file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_parquet(frame: pl.DataFrame | pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def parts_dir(run_dir: Path) -> Path:
    return run_dir / "parts"


def write_part(run_dir: Path, batch: pa.Table, index: int) -> None:
    """Persist one streamed batch of result rows as soon as it arrives (a crash loses at most one batch)."""
    atomic_write_parquet(batch, parts_dir(run_dir) / f"part-{index:06d}.parquet")


def read_parts(run_dir: Path) -> pl.DataFrame | None:
    files = sorted(parts_dir(run_dir).glob("part-*.parquet"))
    if not files:
        return None
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")


def remove_parts(run_dir: Path) -> None:
    """Drop the streamed parts once the final files exist (renamed first: a crash here leaves no half set)."""
    parts = parts_dir(run_dir)
    if parts.exists():
        trash = run_dir / ".parts-removed"
        os.replace(parts, trash)
        shutil.rmtree(trash)


def complete_items(rows: pl.DataFrame, n_configs: int) -> set[str]:
    """Items that already have a row for every configuration (a resumed run skips them)."""
    counts = rows.group_by("item_id").agg(pl.col("config_index").n_unique().alias("n"))
    return set(counts.filter(pl.col("n") == n_configs)["item_id"].to_list())


def next_part_index(run_dir: Path) -> int:
    indices = [int(f.stem.split("-")[1]) for f in parts_dir(run_dir).glob("part-*.parquet")]
    return max(indices, default=-1) + 1


def configs_frame(configs: list[Configuration]) -> pl.DataFrame:
    """config_index -> config_id and one column per stage holding its choice label."""
    stage_names = configs[0].stage_names
    data: dict[str, list] = {
        "config_index": list(range(len(configs))),
        "config_id": [c.config_id for c in configs],
    }
    for k, name in enumerate(stage_names):
        data[name] = [c.labels[k] for c in configs]
    return pl.DataFrame(data)


def work_counts(rows: pl.DataFrame, stage_names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per stage, summed over items: calls made, calls saved by identical-input reuse, cache hits, and
    engine-seconds actually spent (cache hits cost none)."""

    def total(column: str) -> float:
        return rows.get_column(column).fill_null(0).sum() if column in rows.columns else 0

    return {
        name: {
            "calls": int(total(f"_calls_{name}")),
            "saved_by_reuse": int(total(f"_reused_{name}")),
            "cache_hits": int(total(f"_cached_{name}")),
            "engine_seconds": round(total(f"_busy_{name}") / 1000.0, 3),
        }
        for name in stage_names
    }


def assemble_items(
    rows: pl.DataFrame, configs: list[Configuration], attributes: pl.DataFrame
) -> pl.DataFrame:
    """items.parquet: result rows joined with their configuration's choices and the item's attributes."""
    rows = rows.drop([c for c in rows.columns if c.startswith(WORK_PREFIXES)])
    rows = rows.unique(subset=["item_id", "config_index"], keep="last", maintain_order=True)
    frame = rows.join(configs_frame(configs), on="config_index", how="left")
    frame = frame.join(attributes, on="item_id", how="left")
    first = ["config_id", *configs[0].stage_names, "item_id"]
    return frame.select([*first, *[c for c in frame.columns if c not in first and c != "config_index"]]).sort(
        ["config_id", "item_id"]
    )


def wilson(successes: pl.Expr, n: pl.Expr, z: float = Z_95) -> tuple[pl.Expr, pl.Expr]:
    """The Wilson score interval for a proportion, as Polars expressions."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * ((p * (1 - p) / n + z * z / (4 * n * n)).sqrt())
    return (centre - half).clip(0, 1), (centre + half).clip(0, 1)


def aggregate_configs(items: pl.DataFrame, stage_names: tuple[str, ...], sla: SLASpec) -> pl.DataFrame:
    """configs.parquet: accuracy with its CI, field matches, latency percentiles, SLA pass, Pareto flag."""
    ok = pl.col("error").is_null()
    total = pl.col("latency_total_ms").filter(ok)
    low, high = wilson(pl.col("assertion_score").sum(), pl.len())
    frame = items.group_by(["config_id", *stage_names]).agg(
        pl.len().alias("n_items"),
        (~ok).sum().alias("n_errors"),
        pl.col("assertion_score").mean().alias("assertion_accuracy"),
        low.alias("assertion_ci_low"),
        high.alias("assertion_ci_high"),
        *[pl.col(f"exact_{f}").cast(pl.Float64).mean().alias(f"exact_{f}") for f in EXACT_FIELDS],
        pl.col("cer").mean().alias("cer"),
        total.quantile(0.50, "linear").alias("latency_p50_ms"),
        total.quantile(0.95, "linear").alias("latency_p95_ms"),
        total.quantile(0.99, "linear").alias("latency_p99_ms"),
        (1000.0 / total.mean()).alias("throughput_items_per_s"),
        *[pl.col(f"latency_{s}_ms").filter(ok).median().alias(f"latency_{s}_p50_ms") for s in stage_names],
    )
    frame = frame.with_columns(
        (
            (pl.col("latency_p95_ms") <= sla.p95_latency_ms)
            & (pl.col("assertion_accuracy") >= sla.min_assertion_accuracy)
        )
        .fill_null(False)
        .alias("sla_pass")
    )
    return rank(with_pareto(frame))


def with_pareto(frame: pl.DataFrame) -> pl.DataFrame:
    """Flag configurations no other beats on both accuracy (higher) and p95 latency (lower)."""
    keys = frame.select(
        "config_id", acc="assertion_accuracy", p95=pl.col("latency_p95_ms").fill_null(float("inf"))
    )
    pairs = keys.join(keys, how="cross", suffix="_o")
    dominated = (
        pairs.filter(
            (pl.col("acc_o") >= pl.col("acc"))
            & (pl.col("p95_o") <= pl.col("p95"))
            & ((pl.col("acc_o") > pl.col("acc")) | (pl.col("p95_o") < pl.col("p95")))
        )
        .select("config_id")
        .unique()
    )
    return frame.with_columns((~pl.col("config_id").is_in(dominated["config_id"].implode())).alias("pareto"))


def survivors_first(frame: pl.DataFrame) -> pl.DataFrame:
    """After a search: the Pareto flag among configurations that were kept to the end, survivors ranked
    first (a dropped configuration's numbers come from a smaller sample)."""
    kept = with_pareto(frame.filter(pl.col("dropped_round").is_null()))
    dropped = frame.filter(pl.col("dropped_round").is_not_null()).with_columns(pl.lit(False).alias("pareto"))
    return pl.concat([rank(kept), rank(dropped)], how="vertical_relaxed")


def rank(frame: pl.DataFrame) -> pl.DataFrame:
    """SLA-passing first, then by accuracy, then by p95 latency."""
    return frame.sort(
        ["sla_pass", "assertion_accuracy", "latency_p95_ms"], descending=[True, True, False], nulls_last=True
    )


def slice_values(items: pl.DataFrame, attribute: str) -> pl.Expr:
    """A slice attribute as categories; continuous ones are cut into three quantile buckets."""
    column = items.get_column(attribute)
    if column.dtype.is_float() and column.n_unique() > 6:
        return pl.col(attribute).qcut(3, allow_duplicates=True).cast(pl.String)
    return pl.col(attribute).cast(pl.String)


def best_per_slice(
    items: pl.DataFrame, configs: pl.DataFrame, attributes: list[str], sla: SLASpec
) -> pl.DataFrame:
    """slices.parquet: per slice attribute and value, the most accurate configuration under the p95 bound."""
    fast = configs.filter(pl.col("latency_p95_ms") <= sla.p95_latency_ms).select("config_id")
    pool = items.join(fast, on="config_id", how="semi")
    frames = []
    for attribute in attributes:
        if attribute not in items.columns or items.get_column(attribute).null_count() == items.height:
            continue
        per = (
            pool.with_columns(slice_values(items, attribute).alias("value"))
            .group_by("value", "config_id")
            .agg(pl.len().alias("n_items"), pl.col("assertion_score").mean().alias("assertion_accuracy"))
            .sort(["assertion_accuracy", "config_id"], descending=[True, False])
            .group_by("value", maintain_order=True)
            .first()
        )
        frames.append(per.with_columns(pl.lit(attribute).alias("attribute")))
    if not frames:
        return pl.DataFrame(schema={"attribute": pl.String, "value": pl.String, "config_id": pl.String})
    out = pl.concat(frames, how="diagonal_relaxed")
    out = out.with_columns((pl.col("assertion_accuracy") >= sla.min_assertion_accuracy).alias("meets_sla"))
    return out.select("attribute", "value", "config_id", "n_items", "assertion_accuracy", "meets_sla").sort(
        "attribute", "value"
    )
