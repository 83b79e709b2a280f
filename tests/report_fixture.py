"""A 48-configuration x 24-card idcard run directory built without running anything (real generated cards,
made-up results of the right shape): the report's size and speed are measured on it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import polars as pl

STAGES = {
    "orient": ["none", "osd"],
    "enhance": ["none", "clahe", "sharpen"],
    "channel": ["original", "gray"],
    "ocr": ["tesseract", "rapidocr"],
    "extract": ["label_value", "layout"],
}
FIELDS = ("name", "sex", "ethnicity", "birth_date", "id_number")


def _prediction(rng: np.random.Generator, row: dict, skill: float) -> tuple[str, bool]:
    read = {}
    for field in FIELDS:
        truth = row[f"truth_{field}"]
        if rng.random() < skill:
            read[field] = truth
        elif rng.random() < 0.5:
            read[field] = truth[:-1] + "?"
    key = all(read.get(f) == row[f"truth_{f}"] for f in ("name", "birth_date", "id_number"))
    return json.dumps(read, ensure_ascii=False, sort_keys=True), key


def build_idcard_run(root: Path, n_cards: int = 24, seed: int = 0) -> Path:
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    rng = np.random.default_rng(seed)
    dataset = root / "data.parquet"
    table = resolve_task("idcard").generate("mixed", n_cards, seed=seed)
    write_table(table, str(dataset))
    cards = table.drop_columns(["image"]).to_pylist()
    run = root / "run"
    run.mkdir(parents=True)
    configs, items = [], []
    for index, choices in enumerate(itertools.product(*STAGES.values())):
        config_id = f"{index:04d}" + "c0ffee" + f"{index:02d}"
        skill = rng.uniform(0.3, 0.97)
        for card in cards:
            prediction, key = _prediction(rng, card, skill)
            error = "StageError: timed out" if rng.random() < 0.02 else None
            row = {
                "config_id": config_id,
                **dict(zip(STAGES, choices, strict=True)),
                "item_id": card["item_id"],
            }
            row |= {
                "prediction": None if error else prediction,
                "error": error,
                "key_fields_exact": key and not error,
            }
            for stage in STAGES:
                row[f"latency_{stage}_ms"] = float(rng.gamma(2, 40))
                row[f"busy_{stage}_ms"] = row[f"latency_{stage}_ms"] * 1.7
            row["latency_total_ms"] = sum(row[f"latency_{s}_ms"] for s in STAGES)
            row["bin_profile"] = card["profile"]
            items.append(row)
        configs.append({"config_id": config_id, **dict(zip(STAGES, choices, strict=True))})
    items_frame = pl.DataFrame(items)
    summary = items_frame.group_by("config_id", maintain_order=True).agg(
        pl.col("key_fields_exact").cast(pl.Float64).mean().alias("objective"),
        pl.col("latency_total_ms").quantile(0.5).alias("latency_p50_ms"),
        pl.col("latency_total_ms").quantile(0.95).alias("latency_p95_ms"),
        pl.col("latency_total_ms").quantile(0.95).mul(1.7).alias("busy_p95_ms"),
        pl.col("error").is_not_null().sum().alias("n_errors"),
    )
    frame = (
        pl.DataFrame(configs)
        .join(summary, on="config_id")
        .with_columns(
            (pl.col("objective") - 0.15).clip(0, 1).alias("objective_ci_low"),
            (pl.col("objective") + 0.15).clip(0, 1).alias("objective_ci_high"),
            (pl.col("latency_p95_ms") < 600).alias("sla_pass"),
            pl.lit(False).alias("pareto"),
            pl.lit(n_cards).alias("n_items"),
        )
        .sort("objective", descending=True)
        .with_row_index("rank", offset=1)
    )
    frame = frame.with_columns((pl.col("rank") <= 3).alias("pareto"))
    frame.write_parquet(run / "configs.parquet")
    items_frame.write_parquet(run / "items.parquet")
    slices = items_frame.group_by("bin_profile", "config_id").agg(
        pl.len().alias("n"), pl.col("key_fields_exact").cast(pl.Float64).mean().alias("objective")
    )
    slices = slices.select(
        pl.lit("profile").alias("dimension"),
        pl.col("bin_profile").alias("cell"),
        "config_id",
        "n",
        "objective",
        (pl.col("objective") - 0.3).clip(0, 1).alias("ci_low"),
        (pl.col("objective") + 0.3).clip(0, 1).alias("ci_high"),
        pl.lit(500.0).alias("latency_p95_ms"),
        pl.col("n").alias("cell_items"),
        pl.lit(None, pl.String).alias("winner"),
        pl.lit("too few items").alias("note"),
        pl.lit(False).alias("is_winner"),
    )
    slices.write_parquet(run / "slices.parquet")
    spec = {
        "name": "icp-48x24",
        "task": "idcard",
        "stages": [{"name": s, "choices": list(c)} for s, c in STAGES.items()],
        "dataset": {"source": str(dataset)},
        "sla": {"p95_latency_ms": 600, "min": {"key_fields_exact": 0.5}},
    }
    manifest = {
        "spec": spec,
        "task": {"name": "idcard", "version": "2"},
        "objective": {"metric": "key_fields_exact"},
        "n_items": n_cards,
        "n_configs": len(configs),
        "created": "2026-12-04T00:00:00+00:00",
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run
