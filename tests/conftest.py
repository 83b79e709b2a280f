"""Shared fixtures: one small local Ray cluster for the whole session, and tiny generated datasets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from raypipe.runner import WORKER_ENV

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU local Ray with its own temp dir; stopped at the end (never `ray stop`: that kills all Ray)."""
    import ray

    os.environ.update(WORKER_ENV)
    temp_dir = tempfile.mkdtemp(prefix="rp-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp_dir,
        runtime_env={"env_vars": dict(WORKER_ENV)},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Four generated cards: two clean, one rotated, one dark; written once per session."""
    import pyarrow as pa

    from raypipe import data

    parts = [data.generate_dataset("clean", 2, seed=1), data.generate_dataset("rotated", 1, seed=2)]
    parts.append(data.generate_dataset("dark", 1, seed=3))
    table = pa.concat_tables(parts)
    ids = [f"card-{i}" for i in range(table.num_rows)]
    table = table.set_column(table.column_names.index("item_id"), "item_id", pa.array(ids))
    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    data.write_dataset(table, path)
    return path
