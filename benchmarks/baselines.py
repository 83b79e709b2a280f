"""The peers raypipe replaces, written the way the course code works: every configuration on every item,
independently, with no sharing of prefixes and no reuse of identical inputs.

They build the same stage classes (`raypipe.spec.registry.resolve(kind, name, task)`), decode items with the
task's `decode`, time each call the same way (`raypipe.engine.execution.timed_call`) and score with the task's
`score`, so the work they do and the predictions they make are the ones raypipe makes. Ray Tune's trials
(benchmarks/tune.py) run one configuration with `run_configuration` too.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterable
from functools import partial
from typing import Any

import polars as pl
import pyarrow as pa

from raypipe.engine.execution import timed_call
from raypipe.spec.registry import resolve
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.space import Configuration, expand_configurations
from raypipe.spec.task import Task
from raypipe.spec.validation import task_of

Item = tuple[str, bytes, dict[str, Any]]
Implementations = dict[tuple[int, str], Any]


def dataset_items(task: Task, table: pa.Table) -> list[Item]:
    """(item_id, encoded input, truth) per row; truth keyed by field name without the `truth_` prefix."""
    fields = [f for f in task.truth_fields if f"truth_{f}" in table.column_names]
    truths = {f: table.column(f"truth_{f}").to_pylist() for f in fields}
    inputs = task.inputs(table).to_pylist()
    return [
        (item_id, inputs[i], {f: truths[f][i] for f in fields})
        for i, item_id in enumerate(table.column("item_id").to_pylist())
    ]


def build_implementations(
    spec: PipelineSpec, task: Task, configs: Iterable[Configuration] | None = None
) -> Implementations:
    """The choices the given configurations use (all of them by default), each instantiated once:
    (stage index, choice label) -> stage object."""
    wanted = None if configs is None else {(k, lab) for c in configs for k, lab in enumerate(c.labels)}
    return {
        (k, choice.key): resolve(stage.registry_kind, choice.name, task)(**choice.params)
        for k, stage in enumerate(spec.stages)
        for choice in stage.choices
        if wanted is None or (k, choice.key) in wanted
    }


def run_configuration(
    task: Task, impls: Implementations, config: Configuration, item: Item
) -> dict[str, Any]:
    """One configuration on one item from its encoded bytes: decode, each stage timed, then scored.

    Per stage: `call_<stage>_ms` (wall time of the call) and `cpu_<stage>_ms`; None where no call was made."""
    item_id, data, truth = item
    row: dict[str, Any] = {"config_id": config.config_id, "item_id": item_id, **config.choices()}
    wall: dict[str, float | None] = dict.fromkeys(config.stage_names)
    cpu: dict[str, float | None] = dict.fromkeys(config.stage_names)
    output: Any = None
    error = None
    try:
        output = task.decode(data)
        for k, (stage, label) in enumerate(zip(config.stage_names, config.labels, strict=True)):
            output, cpu[stage], wall[stage] = timed_call(impls[(k, label)], output)
    except Exception as exc:  # noqa: BLE001 - recorded like raypipe records it; the loop goes on
        error = f"{type(exc).__name__}: {exc}"
    for stage in config.stage_names:
        row[f"call_{stage}_ms"], row[f"cpu_{stage}_ms"] = wall[stage], cpu[stage]
    done = [ms for ms in wall.values() if ms is not None]
    row.update(calls=len(done), call_ms=sum(done), error=error)
    row["latency_total_ms"] = None if error else row["call_ms"]
    scores = task.score(None if error else output, truth)
    row["prediction"] = scores.get("prediction", "")
    row.update({name: scores.get(name) for name in task.metric_names()})
    return row


def rows_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows as a frame (metric columns hold bools, numbers or None)."""
    return pl.DataFrame(rows, infer_schema_length=None)


def warm_up(spec: PipelineSpec, item: Item) -> None:
    """Call every choice once, untimed, so that no method pays for a cold disk cache or a first model load.
    Each stage's choices get the output of the previous stage's first choice (a valid input of its kind)."""
    task = task_of(spec)
    impls = build_implementations(spec, task)
    value = task.decode(item[1])
    for k, stage in enumerate(spec.stages):
        outputs = [impls[(k, choice.key)](value) for choice in stage.choices]
        value = outputs[0]


def run_sequential(spec: PipelineSpec, items: list[Item]) -> pl.DataFrame:
    """The course notebooks: a loop over configurations, and inside it a loop over items."""
    task = task_of(spec)
    impls = build_implementations(spec, task)
    rows = [
        run_configuration(task, impls, config, item)
        for config in expand_configurations(spec)
        for item in items
    ]
    return rows_frame(rows)


# Per worker process of the Pool: the task, the implementations and the items, set once by the initializer.
_WORKER: dict[str, Any] = {}


def _init_worker(spec: PipelineSpec, items: list[Item]) -> None:
    _WORKER["task"] = task_of(spec)
    _WORKER["impls"] = build_implementations(spec, _WORKER["task"])
    _WORKER["items"] = items


def _run_item(config: Configuration, index: int) -> dict[str, Any]:
    return run_configuration(_WORKER["task"], _WORKER["impls"], config, _WORKER["items"][index])


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
            rows += pool.map(partial(_run_item, config), range(len(items)))
    return rows_frame(rows)
