"""The machine a benchmark ran on, and how much of it other processes took while this one timed models."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Other processes using more than this many cores on average while we time make timings indicative only.
QUIET_CORES = 0.2
SAMPLE_S = 0.5


def machine() -> str:
    """CPU model, cores, memory, platform and the load average now."""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cores = os.cpu_count()
    return f"{cpu}, {cores} cores, {memory:.0f} GiB, {platform.platform()}; load average {load} at the end"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine spent busy since boot (/proc/stat), None where unreadable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


def process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process /proc shows."""
    table = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (name) ": state, ppid, ...
        table[int(entry.name)] = (int(fields[1]), (float(fields[11]) + float(fields[12])) / tick)
    return table


class TreeCpu:
    """CPU seconds of this process and all its descendants (Ray's workers too), sampled in a thread.

    A process that exits between two samples loses at most its last SAMPLE_S of CPU: the "others"
    figure can only come out a little high, never hide contention.
    """

    def __init__(self) -> None:
        self.root = os.getpid()
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        table = process_table()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in table.items():
            children.setdefault(parent, []).append(pid)
        stack = [self.root]
        while stack:
            pid = stack.pop()
            if pid in table:
                self.seen[pid] = table[pid][1]
            stack += children.get(pid, [])
        return sum(self.seen.values())

    def _run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            self.sample()


@contextmanager
def tree_cpu() -> Iterator[TreeCpu]:
    tracker = TreeCpu()
    tracker.sample()
    tracker.thread.start()
    try:
        yield tracker
    finally:
        tracker.stop.set()
        tracker.thread.join()
        tracker.sample()


class OtherLoad:
    """Cores used by processes other than this benchmark's while its timed blocks ran."""

    def __init__(self) -> None:
        self.cores: dict[str, float] = {}
        self.load_at_start = os.getloadavg()[0]

    @contextmanager
    def watch(self, name: str) -> Iterator[None]:
        """Record, for the block, (machine busy CPU - this process tree's CPU) / wall seconds as `name`."""
        busy, wall = busy_cpu_seconds(), time.perf_counter()
        with tree_cpu() as ours:
            start = ours.sample()
            yield
        busy_after, elapsed = busy_cpu_seconds(), time.perf_counter() - wall
        if busy is None or busy_after is None or elapsed <= 0:
            return
        others = (busy_after - busy) - (ours.sample() - start)
        self.cores[name] = max(0.0, others / elapsed)

    def shared(self) -> bool:
        return max(self.cores.values(), default=0.0) > QUIET_CORES
