"""A run in progress, as search strategies see it: the configurations, the items, and `stream` to run them.

Strategies (raypipe.search) receive a RunContext and nothing else, so they never import the evaluation
that calls them. `stream` runs one streaming execution over some items and configurations, writes every
result batch to the run directory's parts as it arrives, and hands each batch to the strategy, which may
drop configurations while the items are still flowing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raypipe import runner
from raypipe.plan import OperatorPlan
from raypipe.run import RunDir
from raypipe.space import Configuration
from raypipe.spec import PipelineSpec
from raypipe.task import Metric, Task

Progress = Callable[[str, float, float], None]


@dataclass
class RunContext:
    """A run in progress: its spec, task, objective, configurations, data, Ray plan, and where parts go."""

    spec: PipelineSpec
    task: Task
    objective: Metric
    configs: list[Configuration]
    table: pa.Table  # the items to run (a resumed run's unfinished ones)
    run_dir: RunDir
    options: runner.RunOptions
    plans: list[OperatorPlan]
    cpus: float
    gpus: float
    on_progress: Progress | None = None
    next_part: int = 0
    rows_done: int = 0
    rows_total: int = 0
    monitor: Any = None
    dataset: pa.Table | None = None  # every item of the run
    request_dataset: str | None = None  # --dataset: a file the user named, which no generator extends

    def __post_init__(self) -> None:
        if self.dataset is None:
            self.dataset = self.table

    def inputs(self, todo: pa.Table) -> pa.Table:
        """What flows through the stages: id, encoded input, and the truth the scorer needs."""
        truth = [f"truth_{f}" for f in self.task.truth_fields if f"truth_{f}" in todo.column_names]
        columns = {"item_id": todo.column("item_id"), "input": self.task.inputs(todo)}
        return pa.table({**columns, **{c: todo.column(c) for c in truth}})

    def stream(
        self,
        todo: pa.Table,
        config_indices: list[int],
        on_batch: Callable[[pa.Table, runner.Execution], bool] | None = None,
    ) -> None:
        """Run the given configurations over `todo` in one execution, writing each result batch as a part."""
        if not todo.num_rows or not config_indices:
            return
        subset = [self.configs[i] for i in config_indices]
        to_global = pa.array(config_indices, pa.int64())
        execution = runner.execute(
            self.inputs(todo), self.task, subset, self.plans, self.options, list(config_indices)
        )
        for batch in execution.batches:
            local = batch.column("config_index")
            batch = batch.set_column(
                batch.column_names.index("config_index"), "config_index", to_global.take(local)
            )
            self.run_dir.write_part(batch, self.next_part)
            self.next_part += 1
            self.rows_done += batch.num_rows
            if self.monitor is not None:
                self.monitor.observe(batch)
            if self.on_progress:
                self.on_progress("rows", self.rows_done, max(self.rows_total, self.rows_done))
            if on_batch is not None and on_batch(batch, execution):
                break  # the search is done (a race certified its pick): the rest of the stream is not needed
