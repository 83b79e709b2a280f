"""Wall time, peak memory and CPU use of one benchmarked method, taken over the whole process tree, and
the CPU the rest of the machine used meanwhile (the numbers come from a machine shared with others)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

SAMPLE_SECONDS = 0.2


def in_fresh_process(code: str, *args: str, cwd: str | os.PathLike | None = None) -> Any:
    """Run Python `code` in a fresh interpreter (this one's, with `args` as its argv) and return the JSON its
    last line of output printed."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_kinds(pid: int | str = "self") -> dict[str, int]:
    """A process's resident memory by kind, in bytes (Linux /proc): `anon`, its own (heap, arrays); `shmem`,
    shared memory it has touched (for a Ray driver, pages of the object store it read results from, which
    belong to the store); `file`, mapped files and libraries. RSS is the sum of the three."""
    kinds = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    out = dict.fromkeys(kinds.values(), 0)
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, *rest = line.split()
            if key in kinds:
                out[kinds[key]] = int(rest[0]) * 1024
    return out


def median_range(values: list[float], digits: int = 1) -> str:
    """ "median [min, max]" of repeated measurements, as the benchmarks' tables print them."""
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """`root` and its descendants (embedded Ray: the raylet is the driver's child, workers the raylet's)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [root]


def cpu_with_reaped(proc: psutil.Process) -> float:
    """CPU seconds of a process and of the children it has reaped (a `tesseract` call, a Pool worker)."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def tree_cpu_seconds(root: psutil.Process) -> float:
    """CPU seconds used so far by the live tree, including what its members have reaped: a reaped process's
    time moves into its parent's children_* fields, so nothing is counted twice."""
    total = 0.0
    for proc in process_tree(root):
        try:
            total += cpu_with_reaped(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def ignores_sigchld(pid: int) -> bool:
    """True when `pid` ignores SIGCHLD (Ray's raylet does): the kernel then discards its children's times
    instead of adding them to its children_* fields."""
    try:
        with open(f"/proc/{pid}/status") as status:
            mask = next(line for line in status if line.startswith("SigIgn:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(mask, 16) & (1 << (signal.SIGCHLD - 1)))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; steal counts: another VM had the core)."""
    t = psutil.cpu_times()
    return sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def machine_idle_seconds() -> float:
    """CPU seconds the whole machine has been idle (all cores; waiting for I/O counts as idle)."""
    t = psutil.cpu_times()
    return t.idle + getattr(t, "iowait", 0.0)


@dataclass
class TreeSampler:
    """Samples the process tree in a thread until stopped: the highest sum of RSS seen, and each process's
    last CPU reading, so that a worker whose time the kernel discards on exit (a Ray actor) still counts.

    RSS counts pages shared between processes (fork's copy-on-write pages, shared libraries, Ray's object
    store) once per process, so the sum overstates the true footprint; it does so for every method alike.
    """

    root: psutil.Process = field(default_factory=psutil.Process)
    interval: float = SAMPLE_SECONDS
    keep_names: bool = False  # also every command line each process showed (Ray renames its workers)
    peak_rss: int = 0
    last_cpu: dict[int, tuple[float, int]] = field(default_factory=dict)  # pid -> (cpu, parent pid)
    names: dict[int, set[str]] = field(default_factory=dict)  # pid -> command lines, with keep_names
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        rss = 0
        for proc in process_tree(self.root):
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    self.last_cpu[proc.pid] = (cpu_with_reaped(proc), proc.ppid())
                    if self.keep_names:
                        self.names.setdefault(proc.pid, set()).add(" ".join(proc.cmdline()))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # exited between listing and reading
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def discarded_cpu(self) -> float:
        """CPU of processes that exited under a parent ignoring SIGCHLD, as last seen (up to one interval
        short). One that existed at the start is added whole: the start total, subtracted, held its part."""
        alive = {p.pid for p in process_tree(self.root)}
        return sum(
            cpu for pid, (cpu, ppid) in self.last_cpu.items() if pid not in alive and ignores_sigchld(ppid)
        )


@dataclass
class Measured:
    """What one method returned, how long it took from the caller's side, its memory peak and CPU."""

    value: Any
    wall_seconds: float
    peak_rss_bytes: int
    load_before: float
    cpu_seconds: float  # used by this process tree
    others_cpu_seconds: float  # used by every other process on the machine meanwhile


def measure(run: Callable[[], Any]) -> Measured:
    """Call `run()` timing it with perf_counter while sampling the process tree's memory, and account for
    the CPU time used by the tree and by the rest of the machine."""
    load = os.getloadavg()[0]
    root = psutil.Process()
    ours, busy = tree_cpu_seconds(root), machine_busy_seconds()
    with TreeSampler(root) as sampler:
        started = time.perf_counter()
        value = run()
        wall = time.perf_counter() - started
    ours = tree_cpu_seconds(root) - ours + sampler.discarded_cpu()
    others = max(0.0, machine_busy_seconds() - busy - ours)
    return Measured(value, wall, sampler.peak_rss, load, ours, others)
