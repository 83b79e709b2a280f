"""The item browser's data: which items each configuration got wrong, their fields against the truth and
why, and downscaled thumbnails with the task's boxes; only items some configuration got wrong are carried,
and images only until a byte budget is spent (the report stays small)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.spec.task import ItemView, Metric, Task

MAX_ITEMS = 300  # items carried with their details
IMAGE_BUDGET = 2_500_000  # bytes of embedded images, base64 included
THUMB_WIDTH = 400
ERROR_KIND = "pipeline error"


@dataclass
class Browser:
    """What the page's script reads (`payload`) and what the page says about what is left out."""

    payload: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def wrong_column(items: pl.DataFrame, objective: Metric) -> pl.Expr:
    """An item is wrong for a configuration when it failed, has no objective value, or scores below the
    best value any item reached (1 for a rate; 0 errors for an error rate)."""
    value = pl.col(objective.name).cast(pl.Float64)
    oriented = value if objective.higher_is_better else -value
    best = items.select(oriented.max()).item()
    return pl.col("error").is_not_null() | value.is_null() | (oriented < best)


def carried_items(wrong: pl.DataFrame, pick: str | None, limit: int = MAX_ITEMS) -> list[str]:
    """Items some configuration got wrong, the pick's first, then those most configurations got wrong."""
    counts = (
        wrong.filter("wrong")
        .group_by("item_id")
        .agg(pl.len().alias("n"), (pl.col("config_id") == pick).any().alias("by_pick"))
        .sort(["by_pick", "n", "item_id"], descending=[True, True, False])
    )
    return counts["item_id"].head(limit).to_list()


def thumbnail(view: ItemView) -> dict[str, Any] | None:
    """The image as a data URL, downscaled unless tiny; boxes stay in the original pixel coordinates."""
    from PIL import Image

    if view.image is None:
        return None
    array = np.asarray(view.image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    width, height = image.size
    buffer = io.BytesIO()
    if view.pixelated or width <= 64:
        image.save(buffer, format="PNG")
        kind = "png"
    else:
        if width > THUMB_WIDTH:
            image = image.resize((THUMB_WIDTH, round(height * THUMB_WIDTH / width)), Image.Resampling.LANCZOS)
        image.convert("RGB").save(buffer, format="JPEG", quality=70)
        kind = "jpeg"
    url = f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode()
    boxes = [[[round(x, 1), round(y, 1)] for x, y in box.points] + [box.label] for box in view.boxes]
    return {"src": url, "w": width, "h": height, "pixelated": view.pixelated, "boxes": boxes}


def dataset_rows(task: Task, table: pa.Table | None, ids: list[str]) -> dict[str, tuple[bytes | None, dict]]:
    """item_id -> (encoded input, the rest of its dataset row) for the items asked for."""
    if table is None or "item_id" not in table.column_names:
        return {}
    table = table.filter(pc.is_in(table.column("item_id"), value_set=pa.array(ids, pa.string())))
    inputs = task.inputs(table).to_pylist()
    rows = table.to_pylist()
    return {row["item_id"]: (data, row) for data, row in zip(inputs, rows, strict=True)}


def _truth(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k.startswith("truth_")}


def _result(task: Task, r: dict[str, Any], truth: Mapping[str, Any]) -> dict[str, Any]:
    fields = task.view_fields(r.get("prediction"), truth)
    kinds = [f.name for f in fields if f.differs]
    if r.get("error") is not None:
        kinds.append(ERROR_KIND)
    return {
        "wrong": bool(r["wrong"]),
        "kinds": kinds,
        "error": r.get("error"),
        "fields": [[f.name, f.predicted, f.truth, f.differs] for f in fields],
    }


def build_browser(
    task: Task, items: pl.DataFrame, objective: Metric, configs: list[dict], table: pa.Table | None
) -> Browser:
    """The browser for `configs` (ranked, each with `config_id` and `label`) over the run's items."""
    browser = Browser()
    if items.is_empty() or objective.name not in items.columns:
        browser.notes.append("this run has no per-item results of its objective: no item browser")
        return browser
    bins = [c for c in items.columns if c.startswith("bin_")]
    keep = [c for c in ("config_id", "item_id", "error", "prediction", *bins) if c in items.columns]
    frame = items.select(*keep, wrong_column(items, objective).alias("wrong"))
    pick = configs[0]["config_id"] if configs else None
    ids = carried_items(frame, pick)
    try:
        rows = dataset_rows(task, table, ids)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as exc:  # a dataset of another shape
        rows, table = {}, None
        browser.notes.append(f"the run's dataset has no inputs this task can show ({exc})")
    if table is None:
        browser.notes.append(
            "the run's dataset could not be read: no images and no truth (placeholders shown)"
        )
    carried = frame.filter(pl.col("item_id").is_in(ids))
    shown: dict[str, Any] = {}
    spent = 0
    for item_id in ids:
        data, row = rows.get(item_id, (None, {}))
        entry: dict[str, Any] = {"truth": {k: None if v is None else str(v) for k, v in _truth(row).items()}}
        if data is not None and spent < IMAGE_BUDGET:
            try:
                entry["image"] = thumbnail(task.view_input(data, row))
            except ValueError as exc:
                entry["image_error"] = f"cannot show this input: {exc}"
            spent += len((entry.get("image") or {}).get("src", ""))
        elif data is not None:
            entry["image_error"] = "image left out to keep the report small"
        shown[item_id] = entry
    if spent >= IMAGE_BUDGET:
        browser.notes.append(f"images carried until {IMAGE_BUDGET / 1e6:.1f} MB; the rest show placeholders")
    bin_names = [c.removeprefix("bin_") for c in bins]
    for r in carried.select("item_id", *bins).unique("item_id").iter_rows(named=True):
        shown[r["item_id"]]["bins"] = {name: r[f"bin_{name}"] for name in bin_names}
    results: dict[str, dict[str, Any]] = {}
    for r in carried.iter_rows(named=True):
        truth = _truth(rows.get(r["item_id"], (None, {}))[1])
        results.setdefault(r["config_id"], {})[r["item_id"]] = _result(task, r, truth)
    wrong_counts = dict(frame.filter("wrong").group_by("config_id").len().iter_rows())
    left_out = frame.filter("wrong")["item_id"].n_unique() - len(ids)
    if left_out > 0:
        browser.notes.append(f"{left_out} more items that some configuration got wrong are not carried")
    browser.payload = {
        "configs": [{**c, "n_wrong": int(wrong_counts.get(c["config_id"], 0))} for c in configs],
        "attributes": bin_names,
        "items": shown,
        "results": results,
        "error_kind": ERROR_KIND,
    }
    return browser
