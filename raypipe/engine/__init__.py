"""The work, without Ray: the execution plan, what one item goes through, the stage cache, service-time
latency, and the run directory every result lands in."""
