"""Per-item label-free features of a dataset, computed by its task; a corrupt item is an error row."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from raypipe.errors import RaypipeError
from raypipe.spec.task import Task

ERROR = "feature_error"


@dataclass(frozen=True)
class FeatureTable:
    """The features of some items and what computing them cost."""

    frame: pl.DataFrame  # item_id, feature_error, one column per feature
    seconds: float

    @property
    def n_errors(self) -> int:
        return int(self.frame[ERROR].is_not_null().sum())


def feature_schema(task: Task) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"item_id": pl.String(), ERROR: pl.String()}
    for name, kind in task.features.items():
        schema[name] = pl.String() if kind == "categorical" else pl.Float64()
    return schema


def compute_features(task: Task, table: pa.Table) -> FeatureTable:
    """Decode each item's input and ask the task for its features; an item that cannot be decoded (or whose
    features fail) becomes a row with `feature_error` set and null features, as a run's error rows do."""
    if not task.features:
        raise RaypipeError(f"task '{task.name}' declares no monitoring features (Task.features is empty)")
    started = time.perf_counter()
    rows = []
    for item_id, data in zip(
        table.column("item_id").to_pylist(), task.inputs(table).to_pylist(), strict=True
    ):
        rows.append({"item_id": str(item_id), **_item_row(task, data)})
    frame = pl.DataFrame(rows, schema=feature_schema(task), orient="row")
    return FeatureTable(frame, time.perf_counter() - started)


def _item_row(task: Task, data: bytes | None) -> dict[str, object]:
    try:
        if not data:
            raise ValueError("empty input")
        values = task.item_features(task.decode(data))
    except Exception as exc:  # noqa: BLE001 - any failure on one item is that item's error, not the batch's
        return {ERROR: f"{type(exc).__name__}: {exc}"}
    row: dict[str, object] = {ERROR: None}
    for name, kind in task.features.items():
        value = values.get(name)
        if kind == "categorical":
            row[name] = None if value is None else str(value)
        else:
            row[name] = float(value) if value is not None and math.isfinite(float(value)) else None
    return row
