"""A finished run read back: its manifest, tables, task and objective, and the views the CLI prints."""

from __future__ import annotations

import tempfile
from functools import cached_property
from pathlib import Path

import polars as pl
from rich.console import Console

from raypipe.decide.slices import cell_summary
from raypipe.engine.rundir import CONFIGS, ITEMS, MANIFEST, SLICES, RunDir
from raypipe.errors import RaypipeError
from raypipe.report import terminal
from raypipe.spec.registry import resolve_task
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.task import Metric, Task


class RunView:
    """Read access to a finished run directory (local path or URI)."""

    def __init__(self, location: str | RunDir):
        self.run_dir = location if isinstance(location, RunDir) else RunDir(location)
        if not self.run_dir.exists(CONFIGS) or not self.run_dir.exists(MANIFEST):
            raise RaypipeError(f"{self.run_dir} holds no finished run ({CONFIGS} or {MANIFEST} missing)")

    @cached_property
    def manifest(self) -> dict:
        return self.run_dir.read_json(MANIFEST)

    @cached_property
    def spec(self) -> PipelineSpec:
        return PipelineSpec.model_validate(self.manifest["spec"])

    @cached_property
    def task(self) -> Task:
        return resolve_task(self.manifest["task"]["name"])

    @cached_property
    def objective(self) -> Metric:
        return self.task.metric(self.manifest["objective"]["metric"])

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.spec.stages]

    @cached_property
    def configs(self) -> pl.DataFrame:
        return self.run_dir.read_parquet(CONFIGS)

    @cached_property
    def items(self) -> pl.DataFrame:
        return self.run_dir.read_parquet(ITEMS)

    @cached_property
    def slices(self) -> pl.DataFrame:
        return self.run_dir.read_parquet(SLICES)

    def headline(self) -> list[Metric]:
        return [
            m
            for m in self.task.metrics
            if m.headline and m.name != self.objective.name and m.name in self.configs.columns
        ]

    def print_ranked(self, console: Console, top: int | None = None) -> None:
        terminal.print_ranked(self.configs, self.stage_names, self.objective, self.headline(), console, top)
        console.print(terminal.decision_line(self.manifest.get("decision")))

    def print_slices(self, console: Console) -> None:
        if self.slices.is_empty():
            console.print("no slice attributes in this run's items")
            return
        console.print(terminal.slice_summary_table(cell_summary(self.slices), self.configs, self.stage_names))

    def write_pareto_plot(self) -> str:
        """pareto.png beside the results (drawn locally, then copied into the run directory)."""
        local = Path(tempfile.mkdtemp(prefix="raypipe-plot-")) / "pareto.png"
        terminal.pareto_plot(self.configs, local, self.objective, self.spec.sla.p95_latency_ms)
        self.run_dir.write_bytes("pareto.png", local.read_bytes())
        return self.run_dir.path("pareto.png")
