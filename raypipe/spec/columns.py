"""The names of result columns, built in one place.

Per row (item x configuration), each stage's times are `<kind>_<stage>_ms`: `cpu` (CPU time of the call the
row reached), `busy` (its wall time in the run, under load) and `latency` (the calibrated service time).
Per item, the engine's work counters ride on the item's first row as `_<counter>_<stage>` (calls, reused,
cached, busy_ms, cpu_ms, node, pid): the leading underscore marks them as the engine's bookkeeping, which
the results writer sums per stage and drops from the item table. Truth fields arrive as `truth_<field>`.
"""

from __future__ import annotations

from typing import Literal

StageTime = Literal["cpu", "busy", "latency"]


def stage_ms(kind: StageTime, stage: str) -> str:
    """A row's time in one stage: cpu, busy (wall under load) or latency (service time)."""
    return f"{kind}_{stage}_ms"


def work(counter: str, stage: str) -> str:
    """An item's work counter for one stage (on the item's first row)."""
    return f"_{counter}_{stage}"


def truth(field: str) -> str:
    return f"truth_{field}"
