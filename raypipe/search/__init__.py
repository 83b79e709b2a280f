"""Search strategies: one interface (`search.base.Search.run(ctx) -> SearchOutcome`), looked up by name."""
