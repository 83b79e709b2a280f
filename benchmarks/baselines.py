"""The peers raypipe replaces, written the way the course code works: every configuration on every item,
independently, with no sharing of prefixes and no reuse of identical inputs.

They call the same stage implementations (`raypipe.registry.resolve`), time each call the same way
(`raypipe.execution.timed_call`) and score with the same metrics (`raypipe.metrics.score`), so the work
they do and the predictions they make are the ones raypipe makes.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.execution import decode_image, prediction_text, timed_call
from raypipe.metrics import score
from raypipe.registry import resolve
from raypipe.space import expand_configurations
from raypipe.spec import PipelineSpec

Item = tuple[str, bytes, dict[str, Any]]
Implementations = dict[tuple[int, str], Callable]


def dataset_items(table: pa.Table) -> list[Item]:
    """(item_id, encoded image, truth) per row; truth keys without their `truth_` prefix, as the runner."""
    truth_columns = [c for c in table.column_names if c.startswith("truth_")]
    images = pc.struct_field(table.column("image"), "bytes").to_pylist()
    truths = [table.column(c).to_pylist() for c in truth_columns]
    names = [c.removeprefix("truth_") for c in truth_columns]
    return [
        (item_id, images[i], {name: values[i] for name, values in zip(names, truths, strict=True)})
        for i, item_id in enumerate(table.column("item_id").to_pylist())
    ]


def build_implementations(spec: PipelineSpec) -> Implementations:
    """Every choice of every stage, instantiated once: (stage index, choice label) -> callable."""
    return {
        (k, choice.key): resolve(stage.registry_kind, choice.name)(**choice.params)
        for k, stage in enumerate(spec.stages)
        for choice in stage.choices
    }


def run_configuration(impls: Implementations, labels: tuple[str, ...], item: Item) -> dict[str, Any]:
    """One configuration on one item from its encoded bytes: decode, each stage timed, then scored."""
    item_id, image_bytes, truth = item
    stage_ms: list[float | None] = [None] * len(labels)
    row: dict[str, Any] = {"item_id": item_id, "prediction": "", "error": None}
    try:
        output: Any = decode_image(image_bytes)
        for k, label in enumerate(labels):
            output, stage_ms[k] = timed_call(label, impls[(k, label)], output)
        row["prediction"] = prediction_text(output)
    except Exception as exc:  # noqa: BLE001 - recorded like raypipe records it; the loop goes on
        row["error"] = f"{type(exc).__name__}: {exc}"
    done = [ms for ms in stage_ms if ms is not None]
    row.update(stage_ms=stage_ms, calls=len(done), engine_ms=sum(done))
    row["latency_total_ms"] = None if row["error"] else row["engine_ms"]
    row["assertion_score"] = score(row["prediction"], truth)["assertion_score"]
    return row


def warm_up(spec: PipelineSpec, item: Item) -> None:
    """Call every choice once on one image, untimed, so that no method pays for a cold disk cache."""
    image = decode_image(item[1])
    for impl in build_implementations(spec).values():
        impl(image)


def run_sequential(spec: PipelineSpec, items: list[Item]) -> pl.DataFrame:
    """The course notebooks: a loop over configurations, and inside it a loop over items."""
    impls = build_implementations(spec)
    rows = []
    for config in expand_configurations(spec):
        for item in items:
            rows.append({"config_id": config.config_id, **run_configuration(impls, config.labels, item)})
    return pl.DataFrame(rows, infer_schema_length=None)


# Per worker process of the Pool: the implementations and the items, set once by the initializer.
_WORKER: dict[str, Any] = {}


def _init_worker(spec: PipelineSpec, items: list[Item]) -> None:
    _WORKER["impls"] = build_implementations(spec)
    _WORKER["items"] = items


def _run_item(labels: tuple[str, ...], index: int) -> dict[str, Any]:
    return run_configuration(_WORKER["impls"], labels, _WORKER["items"][index])


def default_start_method() -> str:
    """fork, as the course script gets on Linux; spawn where this process already runs Ray (forking a
    process with Ray's threads is unsafe), which is the case in the tests only."""
    ray = sys.modules.get("ray")
    return "spawn" if ray is not None and ray.is_initialized() else "fork"


def run_pool(
    spec: PipelineSpec, items: list[Item], processes: int | None = None, start_method: str | None = None
) -> pl.DataFrame:
    """The course's scaled script: for each configuration, `Pool.map` over the items. One pool serves all
    configurations and its initializer builds the implementations once per worker (the peer's best case)."""
    context = multiprocessing.get_context(start_method or default_start_method())
    rows = []
    with context.Pool(processes or os.cpu_count(), initializer=_init_worker, initargs=(spec, items)) as pool:
        for config in expand_configurations(spec):
            results = pool.map(partial(_run_item, config.labels), range(len(items)))
            rows += [{"config_id": config.config_id, **r} for r in results]
    return pl.DataFrame(rows, infer_schema_length=None)
