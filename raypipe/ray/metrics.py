"""Live metrics through ray.util.metrics: what the Ray dashboard and Prometheus show of a run in progress."""

from __future__ import annotations

import pyarrow as pa

from raypipe.spec import columns

LATENCY_BUCKETS_MS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


class LiveMetrics:
    """A run's progress exported through ray.util.metrics (the Ray dashboard, Prometheus): items and rows
    done, errored rows, per-stage call times, and each configuration's running objective.

    The driver records them from each result batch as it arrives, so they need no extra traffic."""

    def __init__(self, run: str, stage_names: list[str], objective: str, config_ids: list[str]):
        from ray.util import metrics

        self.tags = {"run": run}
        self.stage_names, self.objective, self.config_ids = stage_names, objective, config_ids
        self.rows = metrics.Counter("raypipe_rows_done", "Result rows (item x configuration) done.", ("run",))
        self.items = metrics.Counter(
            "raypipe_items_done", "Items whose every configuration is done.", ("run",)
        )
        self.errors = metrics.Counter("raypipe_rows_errored", "Result rows that ended in an error.", ("run",))
        self.stage_ms = metrics.Histogram(
            "raypipe_stage_call_ms",
            "Wall milliseconds of stage calls, as the run sees them (under load).",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("run", "stage"),
        )
        self.running = metrics.Gauge(
            "raypipe_config_objective", "Running mean of each configuration's objective.", ("run", "config")
        )
        self.sums: dict[int, list[float]] = {}

    def observe(self, batch: pa.Table) -> None:
        self.rows.inc(batch.num_rows, self.tags)
        errors = batch.num_rows - batch.column("error").null_count
        if errors:
            self.errors.inc(errors, self.tags)
        first = columns.work("calls", self.stage_names[0])
        if first in batch.column_names:  # an item's work counts ride on its first row
            self.items.inc(len(batch.column(first).drop_null()), self.tags)
        for stage in self.stage_names:
            self._stage_times(batch, stage)
        self._running(batch)

    def _stage_times(self, batch: pa.Table, stage: str) -> None:
        """One observation per item and stage, its mean call time: rows repeat a shared call per config."""
        calls, busy = columns.work("calls", stage), columns.work("busy_ms", stage)
        if calls not in batch.column_names or busy not in batch.column_names:
            return
        for n, ms in zip(batch.column(calls).to_pylist(), batch.column(busy).to_pylist(), strict=True):
            if n:
                self.stage_ms.observe(ms / n, {**self.tags, "stage": stage})

    def _running(self, batch: pa.Table) -> None:
        if self.objective not in batch.column_names:
            return
        values = batch.select(["config_index", self.objective]).cast(
            pa.schema([("config_index", pa.int64()), (self.objective, pa.float64())])
        )
        grouped = values.group_by("config_index").aggregate(
            [(self.objective, "sum"), (self.objective, "count")]
        )
        names = ("config_index", f"{self.objective}_sum", f"{self.objective}_count")
        for config, total, count in zip(*(grouped.column(c).to_pylist() for c in names), strict=True):
            if count:
                sums = self.sums.setdefault(config, [0.0, 0])
                sums[0] += total or 0.0
                sums[1] += count
                self.running.set(sums[0] / sums[1], {**self.tags, "config": self.config_ids[config]})
