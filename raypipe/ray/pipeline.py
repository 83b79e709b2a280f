"""The Ray Data pipeline: items flow through a pool per group of operators (`engine.plan.fuse`): the light
stages share one actor, the heaviest stage and GPU stages have pools of their own.

A small `RunControl` actor holds what the driver decides while the data streams: the configurations a
search has dropped (actors skip work only they need) and the stage calls that timed out (a replaced actor
records them as errors instead of calling again). Every actor reads it once per batch.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import pyarrow as pa
import ray

from raypipe.engine.cache import StageCache
from raypipe.engine.execution import ItemState, StageWorker, finish_item, start_item
from raypipe.engine.plan import OperatorPlan, RunOptions, fuse, group_resources
from raypipe.ray.cluster import alive_nodes, cluster_resources, driver_key, on_driver_node
from raypipe.spec import columns
from raypipe.spec.space import Configuration
from raypipe.spec.task import Task

TASK_CPUS = 0.1
ACTOR_START_S = 900  # on a cluster: how long Ray Data waits for a pool's actors before items flow
WATCHDOG_PERIOD_S = 0.25
POOL_EXIT_S = 10.0  # how long calibration waits for the stream's actors to exit before it times beside them
WORK_COLUMNS = ("calls", "reused", "cached", "busy_ms", "cpu_ms")
PLACE_COLUMNS = ("node", "pid")  # where each stage ran an item


def batch_size(declared: int, n_items: int, actors: int, cap: int | None) -> int:
    """The batch an operator takes: what its choices declare, capped by the run's limit, and small enough
    that `actors` (the pool the cluster allows: `OperatorPlan.batches_for`) get work on a small dataset,
    two batches each at least."""
    spread = max(1, -(-n_items // (2 * actors)))
    return max(1, min(declared, spread, cap or declared))


def pool_strategy(size: int, nodes: int) -> ray.data.ActorPoolStrategy:
    """The actor pool of a stage planned for `size` actors, on a cluster of `nodes` nodes.

    On one node the pool starts with one actor and grows to `size` while its queue is longer than its actors
    take, so a stage whose calls cost microseconds never pays for more than one actor's start (a small run's
    start halved: BENCHMARKS.md section 8). On a cluster it starts at `size`, so that its actors spread over
    the nodes: a pool grown from one actor stayed on one node, and a killed node took every actor of it
    (tests/test_multinode.py)."""
    if nodes > 1:
        return ray.data.ActorPoolStrategy(size=size)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=size, initial_size=1)


@ray.remote(num_cpus=0)
class RunControl:
    """What the driver decides during a run and every actor reads once per batch."""

    def __init__(self) -> None:
        self.dropped: set[int] = set()
        self.timeouts: set[tuple[str, int, str, str]] = set()
        self.processes: set[tuple[str, int]] = set()  # (node, pid) of the stream's stage actors

    def started(self, where: tuple[str, int]) -> None:
        self.processes.add(tuple(where))

    def stream_processes(self) -> set[tuple[str, int]]:
        return self.processes

    def drop(self, config_indices: list[int]) -> None:
        self.dropped.update(config_indices)

    def report_timeout(self, key: tuple[str, int, str, str]) -> None:
        self.timeouts.add(tuple(key))

    def snapshot(self) -> tuple[set[int], set[tuple[str, int, str, str]]]:
        return self.dropped, self.timeouts

    def clear(self) -> None:
        """Forget an earlier use's decisions (a driver keeps its RunControls, its calibrator's too, between
        runs)."""
        self.dropped, self.timeouts, self.processes = set(), set(), set()


# The RunControl of a driver's executions, kept by (job, node) between them: each execution started its own
# actor process before, about 0.5 CPU-s. A driver runs one execution at a time (a search pulls its streams
# one after another), so the next one clears it and takes it over.
_CONTROLS: dict[tuple[str, str], Any] = {}


def run_control() -> Any:
    """This driver's RunControl, cleared; a new one the first time, or when the kept one has died."""
    key = driver_key()
    control = _CONTROLS.pop(key, None)
    if control is not None:
        try:
            ray.get(control.clear.remote(), timeout=60)
        except (ray.exceptions.RayError, TimeoutError):  # it died with its node, or was killed
            control = None
    if control is None:
        control = RunControl.options(scheduling_strategy=on_driver_node()).remote()
    _CONTROLS[key] = control
    return control


def stream_processes() -> list[int]:
    """The processes of the stage actors of the driver's last stream on the driver's node (from its
    RunControl, which each actor tells when it starts)."""
    control = _CONTROLS.get(driver_key())
    if control is None:
        return []
    node = ray.get_runtime_context().get_node_id()
    try:
        processes = ray.get(control.stream_processes.remote(), timeout=60)
    except (ray.exceptions.RayError, TimeoutError):  # it died: nothing known to wait for
        return []
    return sorted(pid for where, pid in processes if where == node)


def await_exit(pids: list[int], timeout_s: float = POOL_EXIT_S) -> int:
    """Wait until the processes `pids` (on this node) have exited, at most `timeout_s`; returns how many still
    run."""
    deadline = time.monotonic() + timeout_s
    while (running := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(running)


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (one that has exited but is not yet reaped does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class StageActor:
    """A Ray Data callable class wrapping the StageWorkers of one operator group, run one after another on
    each item: models load once per actor, when it starts (before it takes a batch), and each choice's first
    call is made once untimed.

    A watchdog thread per worker enforces its stage's timeout: a call that runs past it is reported to
    RunControl and the actor exits, so Ray Data replaces it and retries the batch; the new actor records the
    call as a timeout error instead of calling again.
    """

    def __init__(
        self,
        control: Any,
        workers: list[dict[str, Any]],
        task: Task | None = None,
        emit_rows_for: list[str] | None = None,
    ):
        self.workers = [StageWorker(**kwargs, warm_up=True) for kwargs in workers]
        for worker in self.workers:
            worker.load_models()
        self.control = control
        self.task = task
        self.emit_rows_for = emit_rows_for
        self.where = (ray.get_runtime_context().get_node_id(), os.getpid())
        control.started.remote(self.where)  # no wait: calibration waits for this process to exit
        for worker in self.workers:
            threading.Thread(
                target=watch_calls, args=(worker, control), daemon=True, name="raypipe-timeout"
            ).start()

    def __del__(self) -> None:
        """Ray Data lets the actor go (its `__ray_shutdown__`), and the process exits next. Python's last
        collections at exit would walk the whole heap of the models' libraries: 0.3 CPU-s an actor here,
        beside whatever runs after the stream (calibration waits for these exits). Frozen, the heap is left
        to the process's end; every exit handler still runs."""
        gc.freeze()

    def __call__(self, batch: pa.Table) -> pa.Table:
        dropped, timeouts = ray.get(self.control.snapshot.remote())
        for worker in self.workers:
            worker.live = lambda config: config not in dropped
            worker.timed_out = timeouts
        states = [self._processed(ItemState.loads(blob)) for blob in batch.column("state").to_pylist()]
        if self.emit_rows_for is not None:  # the last operator scores its items itself: no extra hop
            return result_rows(states, self.emit_rows_for, self.task)
        return state_table(batch.column("item_id"), [s.dumps() for s in states])

    def _processed(self, state: ItemState) -> ItemState:
        """Process the item stage after stage and note where (node, process): it rides on the item's first row
        as the `_node_<stage>` and `_pid_<stage>` work columns (multi-node tests and RELIABILITY.md read
        them)."""
        for worker in self.workers:
            state = worker.process(state)
            n_stages = len(state.work["calls"])
            for what, value in zip(PLACE_COLUMNS, self.where, strict=True):
                state.work.setdefault(what, [None] * n_stages)[worker.stage_index] = value
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


def _start_items(batch: pa.Table, n_configs: int, n_stages: int, share: bool, task: Task) -> pa.Table:
    truths = {
        c.removeprefix("truth_"): batch.column(c).to_pylist()
        for c in batch.column_names
        if c.startswith("truth_")
    }
    states = []
    item_ids, inputs = batch.column("item_id").to_pylist(), batch.column("input").to_pylist()
    for i, (item_id, data) in enumerate(zip(item_ids, inputs, strict=True)):
        truth = {name: values[i] for name, values in truths.items()}
        state = start_item(str(item_id), data, truth, n_configs, n_stages, share, task.decode)
        states.append(state.dumps())
    return state_table(batch.column("item_id"), states)


def state_table(item_ids: pa.ChunkedArray | pa.Array, states: list[bytes]) -> pa.Table:
    """The batch that flows between pools: each item's id and its pickled state, as Arrow binary (Ray Data
    carries it as is; a NumPy object column cost a conversion to Arrow at every hop)."""
    return pa.table({"item_id": item_ids, "state": pa.array(states, pa.large_binary())})


def result_rows(states: list[ItemState], stage_names: list[str], task: Task) -> pa.Table:
    """One row per item x configuration, scored, with each item's work counts on its first row."""
    rows = []
    for state in states:
        item_rows = finish_item(state, stage_names, task.score)
        if item_rows:  # the item's work counts ride on its first row; the results writer sums them
            for what, per_stage in state.work.items():
                for k, name in enumerate(stage_names):
                    item_rows[0][columns.work(what, name)] = per_stage[k]
        rows += item_rows
    return pa.Table.from_pylist(rows)


def split_blocks(items: pa.Table, cpus: float, chain: list[StartItems | StageOperator]) -> list[pa.Table]:
    """Small input blocks so that every actor gets work from the start (one block feeds one task), and none
    larger than the smallest batch a stage of `chain` declares (what one of its calls amortizes): an actor
    task takes its whole block. Blocks of 4 cards held one OCR actor 12-23 s a task, and the run's last 15 s
    had one of its two actors idle (table 1's 32 cards); one card a block ended the two within 4.5 s of each
    other. A search's cap on batches (racing's 4) is not a stage's: its digits keep blocks of up to 64."""
    declared = [group_resources(op.group)[0].batch_size for op in chain if isinstance(op, StageOperator)]
    rows = max(1, min(64, *declared, items.num_rows // max(1, int(cpus * 4))))
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
        self.control.drop.remote(
            [local[g] for g in config_indices if g in local]
        )  # no wait: the stream goes on


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
    control = run_control()
    ds = build_plan(items, task, configs, plans, options, control)
    execution = Execution(control, config_indices or list(range(len(configs))))
    execution.batches = (b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows)
    return execution


@dataclass(frozen=True)
class StartItems:
    """The first operator: each item's state (decoded input, truth, its frontier) from its row."""

    n_configs: int
    n_stages: int
    share: bool
    task: Task
    tasks: int = 1  # at most this many at once: the cluster's CPUs

    def map_batches_args(self) -> dict[str, Any]:
        return {
            "fn": _start_items,
            # Each task at TASK_CPUS needs a worker process of its own: uncapped, 8 one-item blocks started
            # 8 workers (about 1 CPU-s each in a fresh Ray) to decode 8 digits.
            "compute": ray.data.TaskPoolStrategy(size=self.tasks),
            "fn_kwargs": {
                "n_configs": self.n_configs,
                "n_stages": self.n_stages,
                "share": self.share,
                "task": self.task,
            },
            "batch_size": None,
            "batch_format": "pyarrow",
            "num_cpus": TASK_CPUS,
        }


@dataclass(frozen=True)
class StageOperator:
    """One group of operators (`engine.plan.fuse`): a pool of StageActors; the last also scores (`task`)."""

    group: list[OperatorPlan]
    control: Any
    labels: list[tuple[str, ...]]
    options: RunOptions
    n_items: int
    task: Task | None = None  # the last operator's
    stage_names: list[str] | None = None  # the last operator's: it emits result rows
    nodes: int = 1  # the cluster's, when the run starts

    def map_batches_args(self) -> dict[str, Any]:
        options = self.options
        workers = [
            {
                "stage_index": p.stage_index,
                "stage_name": p.stage_name,
                "labels_of_config": self.labels,
                "choices": p.choices,
                "finalize": p.finalize,
                "reuse_identical": options.reuse_identical,
                "cache": StageCache(options.cache) if options.cache else None,
            }
            for p in self.group
        ]
        resources, pool_size = group_resources(self.group)
        actors = max(p.batches_for for p in self.group)  # the batches are cut for the pool the cluster allows
        return {
            "fn": StageActor,
            "fn_constructor_kwargs": {
                "control": self.control,
                "workers": workers,
                "task": self.task,
                "emit_rows_for": self.stage_names,
            },
            "compute": pool_strategy(pool_size, self.nodes),
            "batch_format": "pyarrow",
            "batch_size": batch_size(resources.batch_size, self.n_items, actors, options.max_batch_size),
            "num_cpus": resources.num_cpus,
            "num_gpus": resources.num_gpus or None,
        }


def operators(
    items: pa.Table,
    task: Task,
    configs: list[Configuration],
    plans: list[OperatorPlan],
    options: RunOptions,
    control: Any,
    nodes: int = 1,
    cpus: float = 1.0,
) -> list[StartItems | StageOperator]:
    """The run's operators in order: start items, then one per group of operator plans; the last scores.
    `nodes`: the cluster's alive nodes (`pool_strategy`); `cpus`: its CPUs (as many start tasks at once)."""
    stage_names = list(configs[0].stage_names)
    labels = [c.labels for c in configs]
    chain: list[StartItems | StageOperator] = [
        StartItems(len(configs), len(stage_names), options.share_prefixes, task, max(1, int(cpus)))
    ]
    groups = fuse(plans, options.fuse_light_stages)
    for n, group in enumerate(groups, start=1):
        last = n == len(groups)
        chain.append(
            StageOperator(
                group,
                control,
                labels,
                options,
                items.num_rows,
                task=task if last else None,
                stage_names=stage_names if last else None,
                nodes=nodes,
            )
        )
    return chain


def build_plan(
    items: pa.Table,
    task: Task,
    configs: list[Configuration],
    plans: list[OperatorPlan],
    options: RunOptions,
    control: Any,
) -> ray.data.Dataset:
    """The Ray Data plan: the items in small blocks, then each operator's map_batches in order.

    On a cluster of several nodes every pool starts at its planned size, models loaded, before the first
    item flows, so that its actors spread over the nodes (`pool_strategy`). On one node the pools grow from
    one actor and start together: Ray Data's wait runs operator by operator, so a run's start was the sum of
    every pool's (BENCHMARKS.md section 8); a call's service time is its CPU time (engine.latency), which an
    actor loading beside it barely moves."""
    nodes = alive_nodes()
    ray.data.DataContext.get_current().wait_for_min_actors_s = ACTOR_START_S if nodes > 1 else 0
    cpus = cluster_resources()[0]
    chain = operators(items, task, configs, plans, options, control, nodes, cpus)
    ds = ray.data.from_arrow(split_blocks(items, cpus, chain))
    for operator in chain:
        ds = ds.map_batches(**operator.map_batches_args())
    return ds
