"""Exhaustive search: every configuration on every item, in one streaming execution."""

from __future__ import annotations

from typing import ClassVar

from raypipe.context import RunContext
from raypipe.search.base import Search, SearchOutcome


class Exhaustive(Search):
    """Every configuration on every item (items already complete in the run directory are skipped)."""

    name: ClassVar[str] = "exhaustive"
    resumable: ClassVar[bool] = True

    def run(self, ctx: RunContext) -> SearchOutcome:
        ctx.stream(ctx.table, list(range(len(ctx.configs))))
        return SearchOutcome(self.name)
