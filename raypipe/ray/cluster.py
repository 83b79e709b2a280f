"""The cluster: join one at an address or start an embedded local Ray, with the environment workers inherit.

`WORKER_ENV` is set before Ray starts so that every worker inherits it (NOTES.md: Tesseract threads, TF and
ORT noise); `on_driver_node` pins an actor the run cannot do without to the driver's node.

A command-line run pays an embedded Ray's start (about 1.8 s) and stop (about 0.4 s) around a small run's
few seconds of work, so both overlap the driver's own: `start` begins connecting in a background thread
while the driver imports and plans (`connect` waits for it), and `stopping` stops the Ray this process
started while the driver writes its result files. `lean_head` starts an embedded Ray without the two head
processes it has no use for (the dashboard's and the autoscaler's).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

# Set before Ray starts so that workers inherit them (NOTES.md: Tesseract threads, TF and ORT noise).
WORKER_ENV = {
    "OMP_THREAD_LIMIT": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ORT_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",  # also lets an embedded Ray start without its dashboard (`lean_head`)
}
LOCAL_SYSTEM_CONFIG = {
    # An embedded Ray keeps an idle worker process for a minute (Ray's default: one second past the CPU
    # count). Each actor of a run takes a worker; without idle ones kept, a driver's next run booted 7 or 8
    # fresh Python workers (0.4 CPU-s each): 40 digits x 4 configurations took 5.3 s and 10.1 CPU-s, and
    # 4.25 s and 8.3 CPU-s with them kept (benchmarks/idle_workers.py, BENCHMARKS.md section 8).
    "idle_worker_killing_time_threshold_ms": 60_000,
    # The raylet connects to its object store's socket, which a thread of its own opens, and retries after
    # this long (Ray's default: 1 s, 10 tries). Its first try missed in 2 of 10 starts here, which then
    # took 3.5 s instead of 2.5 s (benchmarks/ray_start.py); every 0.1 s, 100 tries, keeps the 10 s budget.
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}


@dataclass
class _Embedded:
    """A Ray started in its own thread (`start`), which then holds it until `stopping`: Ray's processes
    die with the thread that started them (PR_SET_PDEATHSIG), so that thread must live as long as they do.
    `started` says when `connect` may go on (or what the start raised)."""

    started: Future = field(default_factory=Future)
    release: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def hold(self, address: str | None, num_cpus: int | None) -> None:
        try:
            owned = _init(address, num_cpus)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting `connect`
            self.started.set_exception(exc)
            return
        self.started.set_result(owned)
        if owned:
            atexit.register(self.stop)  # runs before ray.init's exit handler: the stop stays in this thread
            self.release.wait()
            _shutdown()

    def stop(self) -> None:
        """Let the holding thread stop its Ray, and wait for the stop."""
        self.release.set()
        if self.thread is not None:
            self.thread.join()


_embedded: _Embedded | None = None  # the last start of this process


def start(address: str | None, num_cpus: int | None = None) -> None:
    """Begin connecting as `connect` does, in a background thread, so that Ray's start overlaps the driver's
    own; `connect` waits for it (and raises what it raised). Nothing when Ray is up or already starting."""
    global _embedded
    starting = _embedded is not None and not _embedded.started.done()
    if not starting and not ray.is_initialized():
        _set_worker_env()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)  # what ray.init sets when called here
        _embedded = _Embedded()
        _embedded.thread = threading.Thread(
            target=_embedded.hold, args=(address, num_cpus), name="raypipe-ray", daemon=True
        )  # daemon: Python does not wait for it at exit; `_Embedded.stop`, an exit handler, stops its Ray
        _embedded.thread.start()


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join an existing cluster at `address`, or start an embedded local Ray (or use the one running here)."""
    start(address, num_cpus)
    _quiet_data()  # Ray Data's import and settings need no cluster: they overlap its start
    embedded = _embedded
    if embedded is not None and (not embedded.started.done() or not ray.is_initialized()):
        embedded.started.result()  # an earlier start that failed is not this one's (Ray is up)


@contextlib.contextmanager
def stopping() -> Iterator[None]:
    """Stop the embedded Ray this process started (`start`) in the background while the block runs, and
    wait for the stop at its end: for a driver whose process ends with the run (the CLI) and has only files
    left to write. The block must not use Ray. A Ray the process joined or did not start is left running.

    Python objects that hold Ray references (object refs, actor handles) must not be freed while Ray's
    core worker stops (the process exits at once), so unreachable ones are collected before, and no
    collection runs during the block."""
    embedded = _embedded
    started = embedded is not None and embedded.started.done() and not embedded.started.exception()
    if not (started and embedded.started.result() and ray.is_initialized()):  # not ours, or not up
        yield
        return
    gc.collect()
    gc.disable()
    embedded.release.set()
    try:
        yield
    finally:
        embedded.stop()  # the stop began with the block: this waits for it
        gc.enable()


def _shutdown() -> None:
    """Stop the embedded Ray this process started, as ray.shutdown does, without its one-second wait for
    the autoscaler's monitor. Ray stops the GCS before the monitor, whose SIGTERM handler then reports its
    end to the stopped GCS until Ray kills it a second later: ray.shutdown took 1.4 s here, 1.0 s of it that
    wait. An embedded Ray has nothing to autoscale, so the monitor is killed first (where `lean_head` left
    it out, there is none to kill)."""
    kill_monitor = getattr(getattr(ray._private.worker, "_global_node", None), "kill_monitor", None)
    if kill_monitor is not None:  # Ray's internals: without them, the stop is ray.shutdown's, a second longer
        kill_monitor(check_alive=False)
    ray.shutdown()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(signum)  # exit as Python does, so that Ray stops at exit


class _NoThreadWarning(logging.Filter):
    """ray.init in `start`'s thread warns that it sets no SIGTERM handler: `start` set it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


logging.getLogger("ray._private.worker").addFilter(_NoThreadWarning())


def _set_worker_env() -> None:
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})


def _quiet_data() -> None:
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI shows one bar for the whole run
    # OCR actors hold models of ~1 GB by design; Ray Data's periodic advice about it is noise here.
    ctx.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    ctx.execution_options.preserve_order = False


def alive_nodes() -> int:
    """The cluster's nodes that are alive now."""
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _init(address: str | None, num_cpus: int | None) -> bool:
    """Start or join Ray; True when this process started it (an embedded Ray of its own)."""
    runtime_env: dict[str, Any] = {"env_vars": dict(WORKER_ENV)}
    if address:
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
            # A driver outside `ray job submit` ships this raypipe to the cluster (a job ships its own).
            runtime_env["py_modules"] = [str(Path(__file__).resolve().parents[1])]  # the raypipe package
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        return False
    if os.environ.get("RAY_ADDRESS"):  # inside a Ray job: the job's cluster is the one
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
        return False
    init_local(num_cpus)
    return True


def init_local(num_cpus: int | None, temp_dir: str | None = None) -> None:
    """Start an embedded Ray in this process as raypipe starts its own (the CLI's runs, the suite's Ray,
    table 1's harness). `address="local"`: without it, ray.init() joins whatever cluster another session on
    the machine started last. Its workers inherit this process's environment (`WORKER_ENV`, set here where
    missing), and without a runtime_env they can use the workers Ray prestarts: two actors were ready in
    0.3 s instead of 1.6 s. The head is lean (`lean_head`), and idle workers are kept
    (`LOCAL_SYSTEM_CONFIG`)."""
    _set_worker_env()
    with lean_head():
        ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
            _temp_dir=temp_dir, _system_config=LOCAL_SYSTEM_CONFIG,
        )  # fmt: skip


@contextlib.contextmanager
def lean_head() -> Iterator[None]:
    """While the block starts an embedded Ray (`ray.init(address="local", include_dashboard=False)`), its
    head leaves out two Python processes it has no use for, and that cost a 2-core machine its start:

    - the dashboard's head process: without the dashboard it loads only Ray's usage-statistics module,
      which does nothing with usage statistics off (`WORKER_ENV`), and ray.init waits for it to register;
    - the autoscaler's monitor (Ray's own `no_monitor` setting, which ray.init does not expose): an
      embedded Ray has no nodes to add.

    ray.init took 1.8 s instead of 2.6 s here, and the start's processes 0.5 CPU-s instead of 1.7
    (BENCHMARKS.md section 8, `benchmarks/ray_start.py`). The metrics agent, which raypipe's live metrics
    report to, still starts. Ray's internals (`Node.start_api_server`, `Node.start_monitor`): where a Ray
    lacks them, or usage statistics are on, the block starts Ray's whole head."""
    node = getattr(getattr(ray, "_private", None), "node", None)
    head = getattr(node, "Node", None)
    names = ("start_api_server", "start_monitor")
    if (
        head is None
        or not all(hasattr(head, n) for n in names)
        or os.environ.get("RAY_USAGE_STATS_ENABLED") != "0"
    ):
        yield
        return
    saved = [getattr(head, n) for n in names]
    head.start_api_server, head.start_monitor = _no_dashboard_head, _no_monitor
    try:
        yield
    finally:
        for name, method in zip(names, saved, strict=True):
            setattr(head, name, method)


def _no_dashboard_head(node: Any, **_: Any) -> None:
    node._webui_url = ""  # what ray.init reports without the dashboard


def _no_monitor(node: Any) -> None:
    """Nothing: no autoscaler's monitor (`lean_head`)."""


def driver_key() -> tuple[str, str]:
    """(job, node) of this driver: the key of what it keeps between runs (a calibrator, a RunControl)."""
    context = ray.get_runtime_context()
    return context.get_job_id(), context.get_node_id()


def cluster_resources() -> tuple[float, float]:
    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


def on_driver_node() -> Any:
    """Pin to the driver's node: an actor the run cannot do without must not die with a worker node (a
    RunControl on a killed worker node failed every batch after it, seen on a 3-node cluster)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
