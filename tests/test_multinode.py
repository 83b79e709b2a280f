"""Faults on a multi-node Ray cluster: three raylets on this machine (ray.cluster_utils.Cluster), one driver.

Items run on more than one node; a worker node killed mid-run, or the driver killed mid-run and the run
resumed, still leaves every (item, configuration) row exactly once, each with the right prediction.
The drivers, the spec and the part watcher are those of benchmarks/reliability.py (RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import polars as pl
import pytest

from benchmarks.reliability import CLASSIFIERS, PartWatcher, start_driver
from benchmarks.reliability_runs import FAULT_ITEMS, QUIET, digits_source, digits_spec, sleepy, write_yaml
from raypipe.spec.registry import resolve, resolve_task

pytestmark = pytest.mark.ray
WHERE = ("item_id", "config_index", "_node_preprocess")


@pytest.fixture(scope="module")
def cluster():
    """A head and two workers with 1 CPU each, in their own temp dir; removed afterwards.

    On the machine's own address, not 127.0.0.1: Ray sends a driver given 127.0.0.1 there anyway."""
    from ray.cluster_utils import Cluster

    from raypipe.ray.cluster import WORKER_ENV

    saved = dict(os.environ)
    os.environ.update({**WORKER_ENV, "RAY_USAGE_STATS_ENABLED": "0"})  # the raylets pass these on
    common = {"num_cpus": 1, "temp_dir": tempfile.mkdtemp(prefix="rpm-", dir="/tmp")}
    # A killed raylet refuses the GCS's health checks at once: found dead after 3 checks 1 s apart, not 5
    # checks 3 s apart (Ray's default, 15 s of the test). A slow but live node still has 10 s per check.
    health = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    head = {**common, "include_dashboard": False, "_system_config": health}
    nodes = Cluster(initialize_head=True, head_node_args=head)
    try:
        workers = [nodes.add_node(**common) for _ in range(2)]
        nodes.wait_for_nodes()
        yield nodes, workers
    finally:
        nodes.shutdown()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> tuple[Path, dict]:
    """The fault spec (Sleepy preprocessing, 0.5 s per item: runs last long enough to be killed midway),
    and each row's prediction computed here."""
    folder = tmp_path_factory.mktemp("multinode")
    source = digits_source(folder)
    task = resolve_task("digits")
    table = task.load(str(source))
    expected = {}
    for name in CLASSIFIERS:
        classify = resolve("classify", name, task)()
        ids, inputs = table.column("item_id").to_pylist(), task.inputs(table).to_pylist()
        expected |= {(i, name): str(classify(task.decode(d)).label) for i, d in zip(ids, inputs, strict=True)}
    return write_yaml(folder / "multinode.yaml", digits_spec(source, sleepy(0.5))), expected


@pytest.fixture
def driver():
    """Starts `raypipe run ...` drivers (own process groups: killable alone); ends any left running."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], log: Path) -> subprocess.Popen:
        started.append(start_driver([*args, *QUIET], log))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check_exactly_once(run_dir: Path, expected: dict) -> None:
    """Every (item, configuration) row once, none errored, each with the prediction computed here."""
    items = pl.read_parquet(run_dir / "items.parquet")
    assert items.height == FAULT_ITEMS * len(CLASSIFIERS)
    assert items.select("item_id", "config_id").n_unique() == items.height
    assert items["error"].null_count() == items.height
    keys = zip(items["item_id"], items["classify"], strict=True)
    assert dict(zip(keys, items["prediction"], strict=True)) == expected


def test_a_killed_worker_node_loses_no_row(cluster, spec, driver, tmp_path):
    nodes, workers = cluster
    run_dir, log = tmp_path / "run", tmp_path / "driver.log"
    proc = driver([str(spec[0]), "--address", nodes.address, "--out", str(run_dir)], log)
    watcher = PartWatcher(run_dir, WHERE)
    watcher.wait(1, proc)
    busy = set(watcher.rows["_node_preprocess"].drop_nulls())
    victim = next((n for n in workers if n.node_id in busy), workers[0])
    nodes.remove_node(victim, allow_graceful=False)
    workers.remove(victim)
    assert watcher.rows.height < FAULT_ITEMS * len(CLASSIFIERS)  # killed mid-run
    assert watcher.follow(proc) == 0, log.read_text()[-3000:]
    check_exactly_once(run_dir, spec[1])
    rows = watcher.rows
    assert rows.height == rows.select("item_id", "config_index").n_unique()  # none streamed twice
    assert rows["_node_preprocess"].drop_nulls().n_unique() >= 2  # the items ran on several nodes


def test_a_killed_driver_resumes_on_the_cluster_without_losing_or_duplicating_rows(
    cluster, spec, driver, tmp_path
):
    nodes, _ = cluster
    run_dir, log = tmp_path / "run", tmp_path / "driver.log"
    proc = driver([str(spec[0]), "--address", nodes.address, "--out", str(run_dir)], log)
    watcher = PartWatcher(run_dir, WHERE)
    watcher.wait(2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    watcher.poll()
    assert not (run_dir / "items.parquet").exists()
    done_before = watcher.rows["item_id"].n_unique()
    assert 0 < done_before < FAULT_ITEMS

    resumed = driver(["--resume", str(run_dir), "--address", nodes.address], log)
    assert watcher.follow(resumed) == 0, log.read_text()[-3000:]
    check_exactly_once(run_dir, spec[1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["work"]["preprocess"]["calls"] == FAULT_ITEMS  # items finished before the kill: not rerun
    rows = watcher.rows
    assert rows.height == rows.select("item_id", "config_index").n_unique()
