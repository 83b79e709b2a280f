"""Search strategies: one interface (`Search.run(ctx) -> SearchOutcome`), looked up by name in the registry."""

from raypipe.search.base import Search, SearchOutcome

__all__ = ["Search", "SearchOutcome"]
