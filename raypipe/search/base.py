"""The interface every search strategy implements, and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from raypipe.context import RunContext

DROPS_SCHEMA = {"config_id": pl.String, "dropped_after_items": pl.Int64, "drop_reason": pl.String}


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
    """A strategy: run some configurations over some items through `ctx.stream`, and say what it stopped.

    Subclasses take their parameters as typed keyword arguments of `__init__` (from `--search-param` or a
    Python caller) and implement `run`. `resumable` says whether `--resume` may finish a killed run.
    """

    name: ClassVar[str]
    resumable: ClassVar[bool] = False
    # A strategy that drops configurations while items flow caps the batches, so drops reach the actors soon.
    max_batch_size: ClassVar[int | None] = None

    def run(self, ctx: RunContext) -> SearchOutcome:  # pragma: no cover - interface
        raise NotImplementedError
