"""Shared fixtures: one small local Ray cluster for the whole session, and tiny generated datasets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from raypipe.ray.cluster import WORKER_ENV, init_local

REPO = Path(__file__).resolve().parent.parent
# `make test` runs two workers (pytest-xdist), each taking a whole module at a time in this order: the
# longest modules first, one that computes beside one that mostly waits (subprocess drivers, a killed
# node, Ray jobs), so that no long module runs alone at the end (BENCHMARKS.md section 8). The rest keep
# their order.
LONGEST_FIRST = (
    "test_upside_down", "test_multinode", "test_monitor", "test_jobs", "test_benchmarks", "test_optimization",
    "test_reliability", "test_cache_resume", "test_notebook", "test_quiet",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU local Ray with its own temp dir; stopped at the end (never `ray stop`: that kills all Ray)."""
    import ray

    os.environ.update(WORKER_ENV)
    temp_dir = tempfile.mkdtemp(prefix="rp-", dir="/tmp")
    init_local(2, temp_dir)  # as raypipe starts its own: lean head, idle workers kept, prestarted workers
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Four generated ID cards: two clean, one rotated, one dark; written once per session."""
    import pyarrow as pa

    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    task = resolve_task("idcard")
    parts = [task.generate("clean", 2, seed=1), task.generate("rotated", 1, seed=2)]
    parts.append(task.generate("dark", 1, seed=3))
    table = pa.concat_tables(parts)
    ids = [f"card-{i}" for i in range(table.num_rows)]
    table = table.set_column(table.column_names.index("item_id"), "item_id", pa.array(ids))
    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write_table(table, str(path))
    return path


@pytest.fixture(scope="session")
def digits_dataset(tmp_path_factory) -> Path:
    """120 generated digits of the mixed profile: the engine's fast test data."""
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    path = tmp_path_factory.mktemp("digits") / "digits-120.parquet"
    write_table(resolve_task("digits").generate("mixed", 120, seed=7), str(path))
    return path


def request_for(raw: dict[str, Any], out: Path | str, **options: Any):
    """A run request for a spec given as a dict (validated as a YAML spec would be)."""
    from raypipe.engine.rundir import Request
    from raypipe.spec.validation import parse_spec

    return Request(spec=parse_spec(raw), out=str(out), **options)
