"""Where a large run's driver memory goes: one scale.py-sized run with finalize's steps marked.

    python benchmarks/finalize_memory.py 20000   # items x 525 zero-cost configurations (about 10 min)

Runs the 525-configuration zero-cost space of `benchmarks/scale.py` over N items in this process (an
embedded Ray), samples the driver's RSS every 0.25 s and prints, for the streaming part and for each step
of finalizing (latency factors, assembling items.parquet, configs, the decision, slices, the report), the
largest RSS seen while it ran, and the largest own memory (anonymous pages: RSS less the pages of Ray's
object store the driver read results from, which are the store's, and mapped files). BENCHMARKS.md
section 3 quotes it.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(n: int) -> None:
    from benchmarks.measure import rss_kinds
    from benchmarks.scale import NullTask, spec
    from raypipe.decide import results, slices
    from raypipe.engine.datasets import write_table
    from raypipe.engine.rundir import Request
    from raypipe.evaluate import driver
    from raypipe.ray import cluster
    from raypipe.spec.validation import parse_spec

    cluster.connect(None)
    out = Path(tempfile.mkdtemp(prefix="raypipe-finalize-memory-"))
    source = out / f"null-{n}.parquet"
    write_table(NullTask().generate("random", n, 0), str(source))
    samples: list[tuple[float, float, float]] = []  # (s, RSS, own memory: RSS less shared and file pages)
    marks: list[tuple[float, str]] = []
    started = time.perf_counter()

    def sample() -> None:
        me = psutil.Process()
        while True:
            own = rss_kinds()["anon"] / 2**20
            samples.append((time.perf_counter() - started, me.memory_info().rss / 2**20, own))
            time.sleep(0.25)

    def marked(module, name: str) -> None:
        step = getattr(module, name)

        def wrapper(*args, **kwargs):
            marks.append((time.perf_counter() - started, name))
            return step(*args, **kwargs)

        setattr(module, name, wrapper)

    steps = [
        (driver, "finalize"),
        (driver, "latency_factors"),
        (results, "aggregate_configs"),
        (results, "decide_and_rank"),
        (slices, "slice_table"),
        (driver, "write_report"),
    ]
    for module, name in steps:
        marked(module, name)
    threading.Thread(target=sample, daemon=True).start()
    # latency_factors returns before items.parquet is written: its step includes assembling the items
    request = Request(spec=parse_spec(spec(str(source))), out=str(out / "run"), calibrate=False)
    driver.evaluate(request)
    time.sleep(0.5)
    bounds = [(0.0, "streaming"), *marks, (samples[-1][0], "end")]
    print(f"{n} items x 525 configurations, driver peak MiB: RSS, and own (less the object store's pages):")
    for (begin, name), (end, _) in itertools.pairwise(bounds):
        peak = max((m for t, m, _ in samples if begin <= t <= end), default=0.0)
        own = max((m for t, _, m in samples if begin <= t <= end), default=0.0)
        print(f"  {name:<22} {begin:7.1f}-{end:7.1f} s  RSS {peak:6.0f}  own {own:6.0f}")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
