"""A run in progress, in three parts each with one owner, and the result streams searches pull.

- `RunPlan`, what the run is: the spec, task, objective, configurations and how they execute (the driver
  builds it once);
- `Counters`, what it has done: parts written and rows done, reported to the progress bar and to Ray's
  metrics as batches arrive;
- the run directory (`raypipe.engine.rundir.RunDir`), where it writes.

`RunContext` joins them with the items and is the `raypipe.search.base.SearchContext` searches see:
`stream` starts one streaming execution on Ray and gives back a `Stream` the search iterates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from raypipe.engine.plan import OperatorPlan, RunOptions
from raypipe.engine.rundir import RunDir
from raypipe.ray import pipeline
from raypipe.ray.metrics import LiveMetrics
from raypipe.spec import columns
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.space import Configuration
from raypipe.spec.task import Metric, Task


@dataclass(frozen=True)
class ClusterFound:
    """The run found its cluster (GPU choices run on CPU without a GPU)."""

    cpus: float
    gpus: float


@dataclass(frozen=True)
class RowsDone:
    """Result rows (item x configuration) done so far, of the rows the run expects."""

    done: int
    total: int


@dataclass(frozen=True)
class Note:
    """A line for the user: the objective, each operator, calibration, a report not written."""

    text: str


ProgressEvent = ClusterFound | RowsDone | Note
Progress = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class RunPlan:
    """What the run is: what it evaluates and how it executes on the cluster it found."""

    spec: PipelineSpec
    task: Task
    objective: Metric
    configs: list[Configuration]
    plans: list[OperatorPlan]
    options: RunOptions
    cpus: float
    gpus: float


@dataclass
class Counters:
    """What the run has done: parts written and rows done, told to the progress bar and Ray's metrics."""

    next_part: int = 0
    rows_done: int = 0
    rows_total: int = 0
    on_progress: Progress | None = None
    metrics: LiveMetrics | None = None

    def took(self, batch: pa.Table) -> None:
        self.next_part += 1
        self.rows_done += batch.num_rows
        if self.metrics is not None:
            self.metrics.observe(batch)
        if self.on_progress:
            self.on_progress(RowsDone(self.rows_done, max(self.rows_total, self.rows_done)))

    def say(self, message: str) -> None:
        if self.on_progress:
            self.on_progress(Note(message))


@dataclass
class Stream:
    """One execution's result batches with the run's config indices, each written as a part before the
    search sees it (implements `raypipe.search.base.ResultStream`)."""

    execution: pipeline.Execution | None  # None: nothing to run
    to_global: pa.Array
    run_dir: RunDir
    counters: Counters

    def __iter__(self) -> Iterator[pa.Table]:
        if self.execution is None:
            return
        for batch in self.execution.batches:
            local = batch.column("config_index")
            batch = batch.set_column(
                batch.column_names.index("config_index"), "config_index", self.to_global.take(local)
            )
            self.run_dir.write_part(batch, self.counters.next_part)
            self.counters.took(batch)
            yield batch

    def drop(self, config_indices: list[int]) -> None:
        if self.execution is not None:
            self.execution.drop(config_indices)


@dataclass
class RunContext:
    """A run in progress: its plan, the items, where it writes and what it has done."""

    plan: RunPlan
    run_dir: RunDir
    table: pa.Table  # the items to run (a resumed run's unfinished ones)
    dataset: pa.Table  # every item of the run
    request_dataset: str | None = None  # --dataset: a file the user named, which no generator extends
    counters: Counters = field(default_factory=Counters)

    @property
    def spec(self) -> PipelineSpec:
        return self.plan.spec

    @property
    def task(self) -> Task:
        return self.plan.task

    @property
    def objective(self) -> Metric:
        return self.plan.objective

    @property
    def configs(self) -> list[Configuration]:
        return self.plan.configs

    def inputs(self, todo: pa.Table) -> pa.Table:
        """What flows through the stages: id, encoded input, and the truth the scorer needs."""
        truth = [columns.truth(f) for f in self.task.truth_fields if columns.truth(f) in todo.column_names]
        flowing = {"item_id": todo.column("item_id"), "input": self.task.inputs(todo)}
        return pa.table({**flowing, **{c: todo.column(c) for c in truth}})

    def stream(self, todo: pa.Table, config_indices: list[int]) -> Stream:
        """Start the configurations over `todo` in one execution; the search iterates what comes back."""
        execution = None
        if todo.num_rows and config_indices:
            subset = [self.configs[i] for i in config_indices]
            execution = pipeline.execute(
                self.inputs(todo), self.task, subset, self.plan.plans, self.plan.options, list(config_indices)
            )
        return Stream(execution, pa.array(config_indices, pa.int64()), self.run_dir, self.counters)
