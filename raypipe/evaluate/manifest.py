"""A run's manifest: what ran, on what data, hardware and versions, its cost, how latency was measured."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import polars as pl

from raypipe.engine.hardware import fingerprint, hardware_id
from raypipe.evaluate.context import RunContext
from raypipe.search.base import SearchOutcome
from raypipe.spec.space import invocations_per_item

PACKAGES = (
    "raypipe",
    "ray",
    "polars",
    "pyarrow",
    "numpy",
)  # the engine's; a task adds its own (Task.packages)


def build_manifest(
    ctx: RunContext,
    work: dict[str, dict[str, float]],
    wall_s: float,
    outcome: SearchOutcome,
    factors: pl.DataFrame,
    fingerprint_of_data: str,
) -> dict[str, Any]:
    n_items, configs = ctx.dataset.num_rows, ctx.configs
    shared = invocations_per_item(configs, shared=True)
    for k, name in enumerate(configs[0].stage_names):
        work[name]["calls_with_prefix_sharing_only"] = shared[k] * n_items
        work[name]["calls_without_sharing"] = len(configs) * n_items
    return {
        "spec": ctx.spec.model_dump(mode="json"),
        "task": {"name": ctx.task.name, "version": ctx.task.version},
        "objective": {
            "metric": ctx.objective.name,
            "higher_is_better": ctx.objective.higher_is_better,
            "description": ctx.objective.description,
            "chosen_by": "spec" if ctx.spec.objective else "task default",
        },
        "n_configs": len(configs),
        "n_items": n_items,
        "dataset_fingerprint": fingerprint_of_data,
        "options": {k: str(v) if k == "cache" else v for k, v in vars(ctx.plan.options).items()},
        "work": work,
        "engine_seconds": round(sum(w["engine_seconds"] for w in work.values()), 3),
        "cpu_seconds": round(sum(w["cpu_seconds"] for w in work.values()), 3),
        "wall_seconds": round(wall_s, 3),
        "latency": {
            "method": "service time: per-call CPU time x a per-(stage, choice) factor from calls timed alone"
            if not factors.is_empty()
            else "per-call CPU time (not calibrated: --no-calibrate)",
            "factors": factors.to_dicts(),
            "hardware_id": hardware_id(),
        },
        "search": {"method": outcome.method, **outcome.summary},
        "created": datetime.now(UTC).isoformat(),
        "versions": package_versions(ctx.task.packages),
        "hardware": {
            **fingerprint(),
            "platform": platform.platform(),
            "cluster_cpus": ctx.plan.cpus,
            "cluster_gpus": ctx.plan.gpus,
        },
        "git_revision": git_revision(),
    }


def package_versions(task_packages: tuple[str, ...] = ()) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in (*PACKAGES, *task_packages):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def git_revision(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out at `cwd` (this process's working directory by default), or None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
