"""Exhaustive search: every configuration on every item, in one streaming execution."""

from __future__ import annotations

from typing import ClassVar

from raypipe.search.base import Search, SearchContext, SearchOutcome


class Exhaustive(Search):
    """Every configuration on every item (items already complete in the run directory are skipped)."""

    name: ClassVar[str] = "exhaustive"
    resumable: ClassVar[bool] = True

    def run(self, ctx: SearchContext) -> SearchOutcome:
        for _ in ctx.stream(ctx.table, list(range(len(ctx.configs)))):
            pass  # every batch is already written where the run's results are assembled
        return SearchOutcome(self.name)
