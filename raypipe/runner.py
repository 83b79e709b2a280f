"""The only module that builds Ray Data plans: items flow through a pool per (stage, resource class).

A small `RunControl` actor holds what the driver decides while the data streams: the configurations a
search has dropped (actors skip work only they need) and the stage calls that timed out (a replaced actor
records them as errors instead of calling again). Every actor reads it once per batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import ray

from raypipe.cache import CacheConfig, StageCache
from raypipe.execution import ChoiceRef, CurrentCall, ItemState, StageWorker, finish_item, start_item
from raypipe.plan import OperatorPlan
from raypipe.space import Configuration
from raypipe.task import Task

# Set before Ray starts so that workers inherit them (NOTES.md: Tesseract threads, TF and ORT noise).
WORKER_ENV = {
    "OMP_THREAD_LIMIT": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ORT_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
TASK_CPUS = 0.1
ACTOR_START_S = 900
WATCHDOG_PERIOD_S = 0.25
WORK_COLUMNS = ("calls", "reused", "cached", "busy_ms", "cpu_ms")
PLACE_COLUMNS = ("node", "pid")  # where each stage ran an item


@dataclass(frozen=True)
class RunOptions:
    """How to execute: switches for the two savings (benchmarks turn them off) and the pool sizes."""

    share_prefixes: bool = True
    reuse_identical: bool = True
    cache: CacheConfig | None = None
    max_actors_per_pool: int | None = None
    # A search that drops configurations while items flow wants small batches: an actor reads the live set
    # once per batch, and a large batch decided before a drop runs to its end.
    max_batch_size: int | None = None


def batch_size(declared: int, n_items: int, pool_size: int, cap: int | None) -> int:
    """The batch an operator takes: what its choices declare, capped by the run's limit, and small enough
    that every actor of the pool gets work on a small dataset (two batches per actor at least)."""
    spread = max(1, -(-n_items // (2 * pool_size)))
    return max(1, min(declared, spread, cap or declared))


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join an existing cluster at `address`, or start an embedded local Ray (or use the one running here)."""
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})
    if not ray.is_initialized():
        _init(address, num_cpus)
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI shows one bar for the whole run
    # OCR actors hold models of ~1 GB by design; Ray Data's periodic advice about it is noise here.
    ctx.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    ctx.execution_options.preserve_order = False
    # Start every actor pool, models loaded, before the first item flows: actors still importing and loading
    # models slow the calls being timed (seen: the first Tesseract calls of a run 40 % slower).
    ctx.wait_for_min_actors_s = ACTOR_START_S


def _init(address: str | None, num_cpus: int | None) -> None:
    runtime_env: dict[str, Any] = {"env_vars": dict(WORKER_ENV)}
    if address:
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
            # A driver outside `ray job submit` ships this raypipe to the cluster (a job ships its own).
            runtime_env["py_modules"] = [os.path.dirname(os.path.abspath(__file__))]
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        # "local" starts this run's own Ray: without it, ray.init() joins whatever cluster another session
        # on the machine started last. Inside a Ray job (RAY_ADDRESS set) the job's cluster is the one.
        local = None if os.environ.get("RAY_ADDRESS") else "local"
        ray.init(
            address=local, num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
            log_to_driver=False,
        )  # fmt: skip


def cluster_resources() -> tuple[float, float]:
    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


@ray.remote(num_cpus=0)
class RunControl:
    """What the driver decides during a run and every actor reads once per batch."""

    def __init__(self) -> None:
        self.dropped: set[int] = set()
        self.timeouts: set[tuple[str, int, str, str]] = set()

    def drop(self, config_indices: list[int]) -> None:
        self.dropped.update(config_indices)

    def report_timeout(self, key: tuple[str, int, str, str]) -> None:
        self.timeouts.add(tuple(key))

    def snapshot(self) -> tuple[set[int], set[tuple[str, int, str, str]]]:
        return self.dropped, self.timeouts


class StageActor:
    """A Ray Data callable class wrapping StageWorker: models load once per actor, when it starts (Ray Data
    waits for every pool before items flow, so no call is timed while models load), and each choice's first
    call is made once untimed.

    A watchdog thread enforces the stage's timeout: a call that runs past it is reported to RunControl
    and the actor exits, so Ray Data replaces it and retries the batch; the new actor records the call as a
    timeout error instead of calling again.
    """

    def __init__(
        self,
        control: Any,
        task: Task | None = None,
        emit_rows_for: list[str] | None = None,
        **worker_kwargs: Any,
    ):
        self.worker = StageWorker(**worker_kwargs, warm_up=True)
        self.worker.load_models()
        self.control = control
        self.task = task
        self.emit_rows_for = emit_rows_for
        self.where = (ray.get_runtime_context().get_node_id(), os.getpid())
        threading.Thread(
            target=watch_calls, args=(self.worker, control), daemon=True, name="raypipe-timeout"
        ).start()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray] | pa.Table:
        dropped, timeouts = ray.get(self.control.snapshot.remote())
        self.worker.live = lambda config: config not in dropped
        self.worker.timed_out = timeouts
        states = [self._processed(ItemState.loads(blob)) for blob in batch["state"]]
        if self.emit_rows_for is not None:  # the last operator scores its items itself: no extra hop
            return result_rows(states, self.emit_rows_for, self.task)
        return {"item_id": batch["item_id"], "state": np.array([s.dumps() for s in states], dtype=object)}

    def _processed(self, state: ItemState) -> ItemState:
        """Process the item and note where (node, process): it rides on the item's first row as the
        `_node_<stage>` and `_pid_<stage>` work columns (multi-node tests and RELIABILITY.md read them)."""
        state = self.worker.process(state)
        n_stages = len(state.work["calls"])
        for what, value in zip(PLACE_COLUMNS, self.where, strict=True):
            state.work.setdefault(what, [None] * n_stages)[self.worker.stage_index] = value
        return state


def watch_calls(worker: Any, control: Any) -> None:
    """Enforce the stage timeout of `worker.current` (the call it is in): a call past it is reported to
    RunControl and the actor exits, since the hung call cannot be interrupted; its replacement records the
    call as a timeout instead of making it again."""
    while True:
        time.sleep(WATCHDOG_PERIOD_S)
        current = worker.current
        if current is not None and time.monotonic() - current.started > current.timeout_s:
            ray.get(control.report_timeout.remote(current.key))
            os._exit(1)


def _start_items(
    batch: dict[str, np.ndarray], n_configs: int, n_stages: int, share: bool, task: Task
) -> dict:
    truth_cols = [c for c in batch if c.startswith("truth_")]
    states = []
    for i, item_id in enumerate(batch["item_id"]):
        truth = {c.removeprefix("truth_"): batch[c][i] for c in truth_cols}
        state = start_item(str(item_id), batch["input"][i], truth, n_configs, n_stages, share, task.decode)
        states.append(state.dumps())
    return {"item_id": batch["item_id"], "state": np.array(states, dtype=object)}


def result_rows(states: list[ItemState], stage_names: list[str], task: Task) -> pa.Table:
    """One row per item x configuration, scored, with each item's work counts on its first row."""
    rows = []
    for state in states:
        item_rows = finish_item(state, stage_names, task.score)
        if item_rows:  # the item's work counts ride on its first row; the results writer sums them
            for what, per_stage in state.work.items():
                for k, name in enumerate(stage_names):
                    item_rows[0][f"_{what}_{name}"] = per_stage[k]
        rows += item_rows
    return pa.Table.from_pylist(rows)


def split_blocks(items: pa.Table, cpus: float) -> list[pa.Table]:
    """Small input blocks so that every actor gets work from the start (one block feeds one task)."""
    rows = max(1, min(64, items.num_rows // max(1, int(cpus * 4))))
    return [items.slice(i, rows) for i in range(0, items.num_rows, rows)]


@dataclass
class Execution:
    """One streaming execution over a set of items, and the control actor the driver steers it with.

    `config_indices` maps the execution's configurations (0..n-1) to the run's; `drop` takes the run's."""

    control: Any
    config_indices: list[int]
    batches: Iterator[pa.Table] = field(default_factory=lambda: iter(()))

    def drop(self, config_indices: list[int]) -> None:
        """Stop spending on these configurations: actors skip work only they need, from their next batch."""
        local = {g: i for i, g in enumerate(self.config_indices)}
        ray.get(self.control.drop.remote([local[g] for g in config_indices if g in local]))


def on_driver_node() -> Any:
    """Pin to the driver's node: an actor the run cannot do without must not die with a worker node (a
    RunControl on a killed worker node failed every batch after it, seen on a 3-node cluster)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def execute(
    items: pa.Table,
    task: Task,
    configs: list[Configuration],
    plans: list[OperatorPlan],
    options: RunOptions,
    config_indices: list[int] | None = None,
) -> Execution:
    """Start streaming result batches (one row per item x configuration that was not dropped); rows carry
    the execution's own config_index (0..len(configs)-1)."""
    control = RunControl.options(scheduling_strategy=on_driver_node()).remote()
    ds = build_plan(items, task, configs, plans, options, control)
    execution = Execution(control, config_indices or list(range(len(configs))))
    execution.batches = (b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows)
    return execution


def build_plan(
    items: pa.Table,
    task: Task,
    configs: list[Configuration],
    plans: list[OperatorPlan],
    options: RunOptions,
    control: Any,
) -> ray.data.Dataset:
    """The Ray Data plan: start items, then one map_batches per operator plan; the last one scores."""
    stage_names = list(configs[0].stage_names)
    labels = [c.labels for c in configs]
    ds = ray.data.from_arrow(split_blocks(items, cluster_resources()[0]))
    ds = ds.map_batches(
        _start_items,
        fn_kwargs={
            "n_configs": len(configs),
            "n_stages": len(stage_names),
            "share": options.share_prefixes,
            "task": task,
        },
        batch_size=None,
        num_cpus=TASK_CPUS,
    )
    for n, p in enumerate(plans, start=1):
        last = n == len(plans)
        worker = {
            "control": control,
            "task": task if last else None,
            "emit_rows_for": stage_names if last else None,
            "stage_index": p.stage_index,
            "stage_name": p.stage_name,
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
            batch_size=batch_size(
                p.resources.batch_size, items.num_rows, p.pool_size, options.max_batch_size
            ),
            num_cpus=p.resources.num_cpus,
            num_gpus=p.resources.num_gpus or None,
        )
    return ds


LATENCY_BUCKETS_MS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


class LiveMetrics:
    """A run's progress exported through ray.util.metrics (the Ray dashboard, Prometheus): items and rows
    done, errored rows, per-stage call times, and each configuration's running objective.

    The driver records them from each result batch as it arrives, so they need no extra traffic."""

    def __init__(self, run: str, stage_names: list[str], objective: str, config_ids: list[str]):
        from ray.util import metrics

        self.tags = {"run": run}
        self.stage_names, self.objective, self.config_ids = stage_names, objective, config_ids
        self.rows = metrics.Counter("raypipe_rows_done", "Result rows (item x configuration) done.", ("run",))
        self.items = metrics.Counter(
            "raypipe_items_done", "Items whose every configuration is done.", ("run",)
        )
        self.errors = metrics.Counter("raypipe_rows_errored", "Result rows that ended in an error.", ("run",))
        self.stage_ms = metrics.Histogram(
            "raypipe_stage_call_ms",
            "Wall milliseconds of stage calls, as the run sees them (under load).",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("run", "stage"),
        )
        self.running = metrics.Gauge(
            "raypipe_config_objective", "Running mean of each configuration's objective.", ("run", "config")
        )
        self.sums: dict[int, list[float]] = {}

    def observe(self, batch: pa.Table) -> None:
        self.rows.inc(batch.num_rows, self.tags)
        errors = batch.num_rows - batch.column("error").null_count
        if errors:
            self.errors.inc(errors, self.tags)
        first = f"_calls_{self.stage_names[0]}"
        if first in batch.column_names:  # an item's work counts ride on its first row
            self.items.inc(len(batch.column(first).drop_null()), self.tags)
        for stage in self.stage_names:
            self._stage_times(batch, stage)
        self._running(batch)

    def _stage_times(self, batch: pa.Table, stage: str) -> None:
        """One observation per item and stage, its mean call time: rows repeat a shared call per config."""
        calls, busy = f"_calls_{stage}", f"_busy_ms_{stage}"
        if calls not in batch.column_names or busy not in batch.column_names:
            return
        for n, ms in zip(batch.column(calls).to_pylist(), batch.column(busy).to_pylist(), strict=True):
            if n:
                self.stage_ms.observe(ms / n, {**self.tags, "stage": stage})

    def _running(self, batch: pa.Table) -> None:
        if self.objective not in batch.column_names:
            return
        values = batch.select(["config_index", self.objective]).cast(
            pa.schema([("config_index", pa.int64()), (self.objective, pa.float64())])
        )
        grouped = values.group_by("config_index").aggregate(
            [(self.objective, "sum"), (self.objective, "count")]
        )
        names = ("config_index", f"{self.objective}_sum", f"{self.objective}_count")
        for config, total, count in zip(*(grouped.column(c).to_pylist() for c in names), strict=True):
            if count:
                sums = self.sums.setdefault(config, [0.0, 0])
                sums[0] += total or 0.0
                sums[1] += count
                self.running.set(sums[0] / sums[1], {**self.tags, "config": self.config_ids[config]})


def submit_job(address: str, entrypoint: str, working_dir: Path, env: dict[str, str]) -> str:
    """Submit a job to Ray's job server with the working directory and the given environment."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    return client.submit_job(
        entrypoint=entrypoint, runtime_env={"working_dir": str(working_dir), "env_vars": env}
    )


def follow_job(address: str, job_id: str, poll_s: float, out: TextIO) -> tuple[bool, str]:
    """Copy the job's output to `out` as it grows until the job ends; (succeeded, final status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client, shown = JobSubmissionClient(address), 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        out.write(logs[shown:])
        out.flush()
        shown = len(logs)
        if status.is_terminal():
            return status == JobStatus.SUCCEEDED, status.value.lower()
        time.sleep(poll_s)


__all__ = [
    "ChoiceRef",
    "Execution",
    "LiveMetrics",
    "RunOptions",
    "connect",
    "execute",
    "follow_job",
    "submit_job",
]


class Calibrator:
    """Runs sampled (item, configuration) pairs one call at a time, alone, timing every stage call.

    The stages' timeouts hold here as in the run: a watchdog thread reports a call past its timeout to
    RunControl and ends the actor (the call cannot be interrupted); the driver starts another, which records
    that call as a timeout instead of making it again, and goes on with the remaining pairs.
    """

    def __init__(
        self,
        control: Any,
        task: Task,
        choices: list[dict[str, ChoiceRef]],
        stage_names: list[str],
        timed_out: set[tuple[str, int, str, str]],
    ):
        self.control, self.task, self.choices, self.stage_names = control, task, choices, stage_names
        self.timed_out = timed_out
        self.impls: dict[tuple[int, str], Any] = {}
        self.warm: set[tuple[int, str]] = set()
        self.current: CurrentCall | None = None
        threading.Thread(
            target=watch_calls, args=(self, control), daemon=True, name="raypipe-timeout"
        ).start()

    def run_pair(self, item_id: str, data: bytes, config_index: int, labels: tuple[str, ...]) -> list[dict]:
        """One calibration row per stage call of the pair, up to its first failure (a failing sample is
        no sample) or timeout (recorded: `error` says so, and it costs its whole timeout)."""
        try:
            value = self.task.decode(data)
        except Exception:  # noqa: BLE001 - a corrupt item is no sample of a stage's time
            return []
        rows = []
        for k, label in enumerate(labels):
            key = (item_id, k, label, "/".join(labels[:k]))
            row = {
                "item_id": item_id,
                "config_index": config_index,
                "stage": self.stage_names[k],
                "choice": label,
            }
            if key in self.timed_out:
                timeout_s = self.choices[k][label].timeout_s
                error = f"timeout in stage {self.stage_names[k]} after {timeout_s:g} s"
                rows.append(
                    {**row, "wall_ms": timeout_s * 1000.0, "cpu_ms": timeout_s * 1000.0, "error": error}
                )
                break
            try:
                value, cpu_ms, wall_ms = self._timed(key, k, label, value)
            except Exception:  # noqa: BLE001 - a failing sample is simply not a sample
                break
            rows.append({**row, "wall_ms": wall_ms, "cpu_ms": cpu_ms, "error": None})
        return rows

    def _timed(
        self, key: tuple[str, int, str, str], k: int, label: str, value: Any
    ) -> tuple[Any, float, float]:
        """The call, timed; a choice's first call pays one-off costs: it is made first, untimed. Each of the
        two calls has the whole timeout."""
        from raypipe.execution import timed_call

        impl, timeout_s = self._impl(k, label), self.choices[k][label].timeout_s
        try:
            if (k, label) not in self.warm:
                self.warm.add((k, label))
                self.current = CurrentCall(key, time.monotonic(), timeout_s)
                impl(value)
            self.current = CurrentCall(key, time.monotonic(), timeout_s)
            return timed_call(impl, value)
        finally:
            self.current = None

    def _impl(self, k: int, label: str) -> Any:
        if (k, label) not in self.impls:
            ref = self.choices[k][label]
            self.impls[(k, label)] = ref.cls(**ref.params)
        return self.impls[(k, label)]


def calibrate(
    task: Task,
    plans: list[OperatorPlan],
    stage_names: list[str],
    inputs: list[tuple[str, bytes]],
    pairs: list[tuple[str, int, tuple[str, ...]]],
) -> pa.Table:
    """Time the sampled pairs in one actor while nothing else runs (after the run's pools are gone), one pair
    per call; an actor ended by a timeout is replaced, and the pair it was on is tried again by the next."""
    choices: list[dict[str, ChoiceRef]] = [{} for _ in stage_names]
    for p in plans:
        choices[p.stage_index].update(p.choices)
    gpus = 1 if cluster_resources()[1] and any(p.resources.num_gpus for p in plans) else 0
    control = RunControl.options(scheduling_strategy=on_driver_node()).remote()
    start = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(Calibrator).remote
    data, rows, timed_out, actor = dict(inputs), [], set(), None
    try:
        for item_id, config_index, labels in pairs:
            while True:
                actor = actor or start(control, task, choices, stage_names, timed_out)
                try:
                    rows += ray.get(actor.run_pair.remote(item_id, data[item_id], config_index, labels))
                    break
                except ray.exceptions.RayActorError:
                    actor, known = None, len(timed_out)
                    timed_out = set(ray.get(control.snapshot.remote())[1])
                    if len(timed_out) == known:  # it died of something other than a timeout: no sample
                        break
    finally:
        for handle in (actor, control):
            if handle is not None:
                ray.kill(handle)
    return pa.Table.from_pylist(rows)
