"""An embedded Ray's life in a process that ends with its run (the CLI): started in a thread of its own while
the driver plans, and stopped in the background while the driver writes its files (`raypipe.ray.cluster`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.ray

# Run in a fresh process: the suite's own Ray is started by its fixture, and this is about one that
# `cluster.start` starts. Prints one line per check, which the test reads back.
SCRIPT = textwrap.dedent(
    """
    import time

    import psutil
    import ray

    from raypipe.ray import cluster

    def ray_children():
        names = ("gcs_server", "raylet")
        return [p for p in psutil.Process().children() if any(n in p.name() for n in names)]

    cluster.start(None, 1)
    cluster.connect(None, 1)
    time.sleep(2)  # Ray's processes die with the thread that started them: it must still hold them
    print("task", ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60))
    held = ray_children()
    print("children", sorted({p.name() for p in held}))
    print("head", sorted(ray._private.worker._global_node.all_processes))  # Ray's own record of them
    head = ray._private.node.Node
    print("restored", head.start_api_server.__name__, head.start_monitor.__name__)
    with cluster.stopping():  # Ray stops in the background while the block runs
        gone, alive = psutil.wait_procs(held, timeout=30)
        print("gone within the block", len(alive) == 0)
    print("after the block", ray.is_initialized())

    ray.init(address="local", num_cpus=1, include_dashboard=False)  # a Ray this module did not start
    cluster.connect(None, 1)
    with cluster.stopping():
        pass
    print("not ours", ray.is_initialized(), ray.get(ray.remote(lambda: 7).remote(), timeout=60))
    ray.shutdown()
    """
)


def test_a_started_ray_is_lean_outlives_its_start_and_stopping_stops_only_its_own():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # an embedded Ray of its own
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "task 42" in lines
    assert "children ['gcs_server', 'raylet']" in lines
    # `cluster.lean_head`: no dashboard head and no autoscaler monitor (their Python processes cost the
    # start about 1 CPU-s), and Ray's Node is as it was once Ray is up
    assert "head ['gcs_server', 'log_monitor', 'raylet']" in lines
    assert "restored start_api_server start_monitor" in lines
    assert "gone within the block True" in lines  # its processes went while the driver went on
    assert "after the block False" in lines
    assert "not ours True 7" in lines  # a Ray the driver joined is left running


def test_a_failed_start_is_raised_by_its_connect_and_not_by_a_later_one(monkeypatch):
    from raypipe.ray import cluster

    up = {"ray": False}
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: up["ray"])
    monkeypatch.setattr(cluster, "_embedded", None)

    def refused(address, num_cpus):
        raise ConnectionError(f"no cluster at {address}")

    monkeypatch.setattr(cluster, "_init", refused)
    with pytest.raises(ConnectionError, match="no cluster at head:6379"):
        cluster.connect("head:6379")
    up["ray"] = True  # a Ray started since (by the caller, say): the failed start is history
    cluster.connect("head:6379")


def test_stopping_leaves_a_joined_ray_alone(monkeypatch):
    from raypipe.ray import cluster

    monkeypatch.setattr(cluster, "_embedded", None)
    monkeypatch.setattr(cluster, "_init", lambda address, num_cpus: False)  # joined, not started here
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    cluster.start("ray://head:10001")
    cluster._embedded.thread.join(timeout=10)
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: True)
    with cluster.stopping():
        pass
    assert not cluster._embedded.release.is_set()


def test_the_stop_kills_the_autoscaler_monitor_before_ray_stops_the_gcs(monkeypatch):
    """ray.shutdown stops the GCS before the monitor, whose SIGTERM handler then waits on the stopped GCS
    until Ray kills it a second later: raypipe's stop kills the monitor first (`cluster._shutdown`)."""
    from raypipe.ray import cluster

    calls = []

    class Node:
        def kill_monitor(self, check_alive=True):
            calls.append(("kill_monitor", check_alive))

    monkeypatch.setattr(cluster.ray._private.worker, "_global_node", Node())
    monkeypatch.setattr(cluster.ray, "shutdown", lambda: calls.append(("shutdown",)))
    cluster._shutdown()
    assert calls == [("kill_monitor", False), ("shutdown",)]
    monkeypatch.setattr(cluster.ray._private.worker, "_global_node", None)  # no node: Ray is not up here
    cluster._shutdown()
    assert calls[-1] == ("shutdown",)


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys

    import psutil
    import ray

    from raypipe.ray import cluster

    stop = cluster._shutdown

    def traced():
        print("stopped by raypipe's stop", flush=True)
        stop()

    cluster._shutdown = traced
    cluster.start(None, 1)
    cluster.connect(None, 1)
    ray.get(ray.remote(lambda: 1).remote(), timeout=60)
    print("pids", " ".join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)
    sys.exit(3)  # without `stopping`, as a run that failed
    """
)


def test_a_process_that_exits_without_stopping_stops_its_ray_at_exit_and_leaves_none_running():
    """Its exit handler stops Ray through raypipe's stop, in the thread that started it (Ray's own exit
    handler would wait a second on the monitor), and nothing Ray started outlives the process."""
    import psutil

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 3, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.rstrip().endswith("stopped by raypipe's stop")
    pids = [int(p) for p in done.stdout.split("pids", 1)[1].splitlines()[0].split()]
    assert len(pids) >= 5  # the GCS, the raylet, its agents, the monitors, a worker
    left = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            process.wait(timeout=30)
        except psutil.NoSuchProcess:
            continue
        except psutil.TimeoutExpired:
            if process.status() != psutil.STATUS_ZOMBIE:  # ended, not yet reaped by its new parent
                left.append(" ".join(process.cmdline())[:80])
    assert not left


def test_a_lean_head_starts_ray_s_whole_head_where_usage_statistics_are_on(monkeypatch):
    import ray

    from raypipe.ray import cluster

    head = ray._private.node.Node
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the dashboard head reports them: it must start
    with cluster.lean_head():
        assert (head.start_api_server.__name__, head.start_monitor.__name__) == (
            "start_api_server",
            "start_monitor",
        )
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    with cluster.lean_head():
        assert head.start_api_server is cluster._no_dashboard_head
        assert head.start_monitor is cluster._no_monitor
    assert head.start_monitor.__name__ == "start_monitor"
