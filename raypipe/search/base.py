"""The interface every search strategy implements, what the engine hands it, and what it reports back.

A search pulls: `ctx.stream(items, configs)` gives it a `ResultStream` of result batches (each already
written to the run directory) and it iterates, calling `drop` to stop spending on configurations and
leaving the loop when it has what it needs. It never receives a callback, the Ray execution or CLI flags;
the evaluation driver implements `SearchContext` on Ray (`raypipe.evaluate.context`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import polars as pl
import pyarrow as pa

from raypipe.spec.schema import PipelineSpec
from raypipe.spec.space import Configuration
from raypipe.spec.task import Metric, Task

DROPS_SCHEMA = {"config_id": pl.String, "dropped_after_items": pl.Int64, "drop_reason": pl.String}


class ResultStream(Protocol):
    """One streaming execution's result batches (one row per item x configuration, `config_index` the run's).

    `drop` returns at once: actors skip work only dropped configurations need from their next batch, so rows
    already in flight still arrive. Leaving the iteration early ends the execution."""

    def __iter__(self) -> Iterator[pa.Table]: ...

    def drop(self, config_indices: list[int]) -> None: ...


class SearchContext(Protocol):
    """What a search sees of a run: what to evaluate, the items, and `stream` to run them."""

    spec: PipelineSpec
    task: Task
    objective: Metric
    configs: list[Configuration]
    table: pa.Table  # the items to run (a resumed run's unfinished ones)
    dataset: pa.Table  # every item of the run; a race until decided appends generated items to it
    request_dataset: str | None  # a file the user named, which no generator extends

    def stream(self, todo: pa.Table, config_indices: list[int]) -> ResultStream: ...


@dataclass
class SearchOutcome:
    """What a search did: which configurations it stopped and why, its looks, and its manifest entry."""

    method: str
    dropped: list[dict[str, Any]] = field(default_factory=list)  # config_id, dropped_after_items, drop_reason
    looks: list[dict[str, Any]] = field(default_factory=list)  # one row per decision point
    summary: dict[str, Any] = field(default_factory=dict)

    def drops_frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.dropped, schema=DROPS_SCHEMA)


class Search:
    """A strategy: pull result streams from `ctx.stream` for some configurations over some items, and say
    what it stopped.

    Subclasses take their parameters as typed keyword arguments of `__init__` (from `--search-param` or a
    Python caller) and implement `run`. `resumable` says whether `--resume` may finish a killed run.
    """

    name: ClassVar[str]
    resumable: ClassVar[bool] = False
    # A strategy that drops configurations while items flow caps the batches, so drops reach the actors soon.
    max_batch_size: ClassVar[int | None] = None

    def run(self, ctx: SearchContext) -> SearchOutcome:  # pragma: no cover - interface
        raise NotImplementedError
