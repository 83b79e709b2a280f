"""The only module that builds Ray Data plans: items flow through a pool per (stage, resource class)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from raypipe.cache import CacheConfig, StageCache
from raypipe.execution import ChoiceRef, ItemState, StageWorker, finish_item, start_item
from raypipe.metrics import score
from raypipe.registry import resolve
from raypipe.space import Configuration
from raypipe.spec import ChoiceSpec, PipelineSpec
from raypipe.stages.base import Resources

# Set before Ray starts so that workers inherit them (NOTES.md: Tesseract threads, TF and ORT noise).
WORKER_ENV = {
    "OMP_THREAD_LIMIT": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ORT_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
# CPUs kept free for the tasks that start items: an actor pool that takes every CPU deadlocks (NOTES.md).
CPU_HEADROOM = 0.5
TASK_CPUS = 0.1


@dataclass(frozen=True)
class RunOptions:
    """How to execute: switches for the two savings (benchmarks turn them off) and the pool sizes."""

    share_prefixes: bool = True
    reuse_identical: bool = True
    cache: CacheConfig | None = None
    max_actors_per_pool: int | None = None


@dataclass
class OperatorPlan:
    """One Ray Data operator: the choices of one stage that share a resource class."""

    stage_index: int
    stage_name: str
    choices: dict[str, ChoiceRef]
    resources: Resources
    finalize: bool
    pool_size: int = 1
    devices: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        gpu = f", {self.resources.num_gpus:g} GPU" if self.resources.num_gpus else ""
        cpu = f"{self.resources.num_cpus:.2f} CPU"
        choices = ", ".join(f"{c} on {self.devices.get(c, 'cpu')}" for c in self.choices)
        return f"{self.stage_name}: {choices}; {self.pool_size} actor(s), {cpu}{gpu} each"


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join an existing cluster at `address`, or start an embedded local Ray."""
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})
    if ray.is_initialized():
        return
    runtime_env: dict[str, Any] = {"env_vars": dict(WORKER_ENV)}
    if address:
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
            # A driver outside `ray job submit` ships this raypipe to the cluster (a job ships its own).
            runtime_env["py_modules"] = [os.path.dirname(os.path.abspath(__file__))]
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI shows one bar for the whole run
    # OCR actors hold models of ~1 GB by design; Ray Data's periodic advice about it is noise here.
    ctx.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    ctx.execution_options.preserve_order = False


def _declared(choice: ChoiceSpec, kind: str) -> Resources:
    base = getattr(resolve(kind, choice.name), "resources", Resources())
    o = choice.resources
    return Resources(
        num_cpus=base.num_cpus if o.num_cpus is None else o.num_cpus,
        num_gpus=base.num_gpus if o.num_gpus is None else o.num_gpus,
        batch_size=base.batch_size if o.batch_size is None else o.batch_size,
    )


def plan_operators(spec: PipelineSpec, cluster_cpus: float, cluster_gpus: float) -> list[OperatorPlan]:
    """Group each stage's choices by resource class (CPUs and GPUs per actor); size pools so the cluster
    never deadlocks.

    A class's batch is the smallest its choices ask for. Without a GPU, a choice that asks for one joins
    the CPU class: one pool then holds every engine, and its actors share the stage's work evenly (in
    separate pools on 2 cores, EasyOCR's one actor was the whole run's critical path)."""
    plans = []
    for k, stage in enumerate(spec.stages):
        by_class: dict[tuple[float, float], dict[str, ChoiceRef]] = {}
        batch: dict[tuple[float, float], int] = {}
        devices: dict[str, str] = {}
        for choice in stage.choices:
            res = _declared(choice, stage.registry_kind)
            devices[choice.key] = "gpu" if res.num_gpus and cluster_gpus else "cpu"
            if res.num_gpus and not cluster_gpus:
                res = Resources(res.num_cpus, 0.0, res.batch_size)  # no GPU here: run it on CPU
                devices[choice.key] = "cpu (asks for a GPU; the cluster has none)"
            ref = ChoiceRef(stage.registry_kind, choice.name, dict(choice.params))
            key = (res.num_cpus, res.num_gpus)
            by_class.setdefault(key, {})[choice.key] = ref
            batch[key] = min(batch.get(key, res.batch_size), res.batch_size)
        classes = list(by_class.items())
        for i, ((cpus, gpus), refs) in enumerate(classes):
            where = {label: devices[label] for label in refs}
            res = Resources(cpus, gpus, batch[(cpus, gpus)])
            plans.append(
                OperatorPlan(k, stage.name, refs, res, finalize=i == len(classes) - 1, devices=where)
            )
    return size_pools(plans, cluster_cpus, cluster_gpus)


def size_pools(
    plans: list[OperatorPlan], cluster_cpus: float, cluster_gpus: float, max_actors: int | None = None
) -> list[OperatorPlan]:
    """The last stage (the expensive one) gets most actors; CPU shares shrink to fit under the headroom."""
    last = max(p.stage_index for p in plans)
    n_last = sum(p.stage_index == last for p in plans)
    for p in plans:
        want = max(p.resources.num_cpus, 0.01)
        size = int(cluster_cpus / n_last // want) if p.stage_index == last else int(cluster_cpus // 8)
        if p.resources.num_gpus:
            size = min(size, int(cluster_gpus // p.resources.num_gpus))
        p.pool_size = max(1, min(size, max_actors or size))
    budget = max(cluster_cpus - CPU_HEADROOM, 0.1)
    demand = sum(p.pool_size * p.resources.num_cpus for p in plans)
    if demand > budget:
        scale = budget / demand
        for p in plans:
            p.resources = Resources(
                p.resources.num_cpus * scale, p.resources.num_gpus, p.resources.batch_size
            )
    return plans


class StageActor:
    """A Ray Data callable class wrapping StageWorker: models load once per actor, on first use."""

    def __init__(self, emit_rows_for: list[str] | None = None, **worker_kwargs: Any):
        self.worker = StageWorker(**worker_kwargs)
        self.emit_rows_for = emit_rows_for

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray] | pa.Table:
        states = [self.worker.process(ItemState.loads(blob)) for blob in batch["state"]]
        if self.emit_rows_for is not None:  # the last operator scores its items itself: no extra hop
            return result_rows(states, self.emit_rows_for)
        return {"item_id": batch["item_id"], "state": np.array([s.dumps() for s in states], dtype=object)}


def _start_items(batch: dict[str, np.ndarray], n_configs: int, n_stages: int, share: bool) -> dict:
    truth_cols = [c for c in batch if c.startswith("truth_")]
    states = []
    for i, item_id in enumerate(batch["item_id"]):
        truth = {c.removeprefix("truth_"): batch[c][i] for c in truth_cols}
        state = start_item(str(item_id), batch["image_bytes"][i], truth, n_configs, n_stages, share)
        states.append(state.dumps())
    return {"item_id": batch["item_id"], "state": np.array(states, dtype=object)}


def result_rows(states: list[ItemState], stage_names: list[str]) -> pa.Table:
    """One row per item x configuration, scored, with each item's work counts on its first row."""
    rows = []
    for state in states:
        item_rows = finish_item(state, stage_names, score)
        if item_rows:  # the item's work counts ride on its first row; the results writer sums them
            for k, name in enumerate(stage_names):
                item_rows[0][f"_calls_{name}"] = state.calls[k]
                item_rows[0][f"_reused_{name}"] = state.reused[k]
                item_rows[0][f"_cached_{name}"] = state.cached[k]
                item_rows[0][f"_busy_{name}"] = state.busy_ms[k]
        rows += item_rows
    return pa.Table.from_pylist(rows)


def split_blocks(items: pa.Table, cpus: float) -> list[pa.Table]:
    """Small input blocks so that every actor gets work from the start (one block feeds one task)."""
    rows = max(1, min(64, items.num_rows // max(1, int(cpus * 4))))
    return [items.slice(i, rows) for i in range(0, items.num_rows, rows)]


def build_plan(
    items: pa.Table, configs: list[Configuration], plans: list[OperatorPlan], options: RunOptions
) -> ray.data.Dataset:
    """The Ray Data plan: start items, then one map_batches per operator plan; the last one scores."""
    stage_names = list(configs[0].stage_names)
    labels = [c.labels for c in configs]
    ds = ray.data.from_arrow(split_blocks(items, cluster_resources()[0]))
    ds = ds.map_batches(
        _start_items,
        fn_kwargs={"n_configs": len(configs), "n_stages": len(stage_names), "share": options.share_prefixes},
        batch_size=None,
        num_cpus=TASK_CPUS,
    )
    for n, p in enumerate(plans, start=1):
        worker = {
            "emit_rows_for": stage_names if n == len(plans) else None,
            "stage_index": p.stage_index,
            "labels_of_config": labels,
            "choices": p.choices,
            "finalize": p.finalize,
            "reuse_identical": options.reuse_identical,
            "cache": StageCache(options.cache) if options.cache else None,
        }
        ds = ds.map_batches(
            StageActor,
            fn_constructor_kwargs=worker,
            compute=ray.data.ActorPoolStrategy(size=p.pool_size),
            batch_size=p.resources.batch_size,
            num_cpus=p.resources.num_cpus,
            num_gpus=p.resources.num_gpus or None,
        )
    return ds


def execute(
    items: pa.Table, configs: list[Configuration], plans: list[OperatorPlan], options: RunOptions
) -> Iterator[pa.Table]:
    """Stream result batches (one row per item x configuration) as they complete."""
    ds = build_plan(items, configs, plans, options)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if batch.num_rows:
            yield batch


def cluster_resources() -> tuple[float, float]:
    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))
