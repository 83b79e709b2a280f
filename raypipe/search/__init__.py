"""Search strategies: one interface (`Search.run(ctx) -> SearchOutcome`), looked up by name."""

from raypipe.search.base import Search, SearchOutcome

__all__ = ["Search", "SearchOutcome"]
