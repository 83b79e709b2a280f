"""raypipe's own cost at the public dataset's size: zero-cost stages, 525 configurations, up to 20,000 items.

    python benchmarks/scale.py [--items 1000 5000 20000] [--out benchmarks/results/scale]
    python benchmarks/scale.py --images 200 [--reps 2] [--out benchmarks/results/scale]

Three stages of the built-in zero-cost `noop` kind (7 x 5 x 15 choices = 525 configurations, each choice
a distinct tiny output, so every unique prefix is a real stage call) over items of a task defined here
(`NullTask`, the "write your own task" pattern: 8 bytes an item, a trivial score). Each size runs in a
fresh process with its own embedded Ray (a user's run is one process), and for each it reports
the wall time, the CPU time per stage call (the engine's overhead: the stages themselves cost nothing) of
the whole machine (`core_ms_per_call`, the headline: run it on a quiet machine) and of the driver's process
tree (`tree_core_ms_per_call`: it misses Ray workers that exit before the run ends), the driver's peak
memory (RSS, and its own: RSS less the pages of Ray's object store it read results from, which are the
store's, and mapped files), the machine's peak memory, and whether Ray's object store spilled.
Writes scale.md and scale.parquet under --out.

`--images N` measures instead the engine's cost per stage call on card-sized items: N items of one megapixel
(1000 x 1000 bytes) through three stages of the `noop` kind's `mark` (2 x 2 x 2 = 8 configurations; each
call copies its input image and marks its first pixel, so images really move between stages). It runs the
light stages fused into one actor (raypipe's default, `engine.plan.fuse`) and a pool per stage, alternating,
`--reps` times each, in one session, and reports per run the overhead per call: the machine's CPU time
beyond the calls' own (`cpu_seconds` of the manifest's work), divided by the calls. Writes overhead.md and
overhead.json under --out; the data and run directories go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import psutil
import pyarrow as pa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import rss_kinds
from raypipe.spec.task import Metric, Task

STAGE_SIZES = (7, 5, 15)
IMAGE_STAGE_SIZES = (2, 2, 2)
IMAGE_SIDE = 1000


class NullTask(Task):
    """Items of 8 random bytes; the score is whether the last output's first value is even."""

    name: ClassVar[str] = "null"
    truth_fields: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("even", "the last stage's first value is even", needs_truth=False),
    )

    def generate(self, profile: str, n: int, seed: int, **options: Any) -> pa.Table:
        """`size` bytes an item (8; a megapixel image is IMAGE_SIDE ** 2)."""
        size = int(options.get("size", 8))
        data = np.random.default_rng(seed).integers(0, 256, size=(n, size), dtype=np.uint8)
        return pa.table(
            {"item_id": [f"null-{i:06d}" for i in range(n)], "input": [row.tobytes() for row in data]}
        )

    def load(self, source: str, limit: int | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        return table if limit is None else table.slice(0, limit)

    def inputs(self, table: pa.Table) -> pa.ChunkedArray:
        return table.column("input")

    def decode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8)

    def score(self, output: Any, truth: Mapping[str, Any]) -> dict[str, Any]:
        return {"even": None if output is None else bool(int(output[0]) % 2 == 0)}

    def default_objective(self, has_truth: bool) -> str:
        return "even"


def spec(source: str, sizes: tuple[int, ...] = STAGE_SIZES, stage: str = "tag") -> dict:
    stages = [
        {
            "name": f"s{k}",
            "kind": "noop",
            "choices": [{"name": stage, "label": f"t{v}", "params": {"value": v}} for v in range(size)],
        }
        for k, size in enumerate(sizes)
    ]
    return {
        "name": "scale",
        "task": "benchmarks.scale:NullTask",
        "stages": stages,
        "dataset": {"source": source},
    }


class Sampler:
    """Peak RSS of this process (the driver), of its own memory (RSS less the object store's shared pages
    it touched and mapped files: `measure.rss_kinds`), and peak used memory of the machine, every 0.2 s."""

    def __init__(self) -> None:
        self.driver_peak = self.driver_own_peak = self.machine_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            self.driver_peak = max(self.driver_peak, me.memory_info().rss)
            self.driver_own_peak = max(self.driver_own_peak, rss_kinds()["anon"])
            vm = psutil.virtual_memory()
            self.machine_peak = max(self.machine_peak, vm.total - vm.available)


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine spent (user, nice, system): on a quiet machine, the run's
    whole cost, including Ray workers that exit before the run ends and so escape `tree_cpu_seconds`."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def tree_cpu_seconds() -> float:
    """CPU seconds of the driver, everything it started (the embedded Ray), and what they reaped."""
    root = psutil.Process()
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def spilled_bytes() -> int:
    """Bytes Ray's object store spilled to disk so far in this session (0 when it never spilled)."""
    from ray._private.internal_api import memory_summary

    summary = memory_summary(stats_only=True)
    for line in summary.splitlines():
        if line.strip().startswith("Spilled"):
            return int(float(line.split()[1]) * 2**20)
    return 0


def measure(n_items: int, out: Path) -> dict:
    from raypipe.engine.datasets import write_table
    from raypipe.engine.rundir import Request
    from raypipe.evaluate.driver import evaluate
    from raypipe.spec.validation import parse_spec

    source = out / f"null-{n_items}.parquet"
    write_table(NullTask().generate("random", n_items, 0), str(source))
    run_dir = out / f"run-{n_items}"
    shutil.rmtree(run_dir, ignore_errors=True)
    request = Request(spec=parse_spec(spec(str(source))), out=str(run_dir), calibrate=False)
    driver_start = psutil.Process().memory_info().rss
    cpu_before, machine_before, started = tree_cpu_seconds(), machine_cpu_seconds(), time.perf_counter()
    with Sampler() as sampler:
        result = evaluate(request)
    wall, cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu_before
    machine = machine_cpu_seconds() - machine_before
    calls = sum(w["calls"] for w in result.manifest["work"].values())
    return {
        "items": n_items,
        "configurations": result.manifest["n_configs"],
        "rows": n_items * result.manifest["n_configs"],
        "stage_calls": calls,
        "wall_s": round(wall, 1),
        "core_ms_per_call": round(1000 * machine / calls, 4),
        "tree_core_ms_per_call": round(1000 * cpu / calls, 4),
        "driver_start_mib": round(driver_start / 2**20),
        "driver_peak_mib": round(sampler.driver_peak / 2**20),
        "driver_own_peak_mib": round(sampler.driver_own_peak / 2**20),
        "machine_peak_mib": round(sampler.machine_peak / 2**20),
        "spilled_mib": round(spilled_bytes() / 2**20, 1),
    }


def overhead(source: Path, run_dir: Path, fused: bool) -> dict:
    """One run over megapixel items, fused or a pool per stage: CPU per call beyond the calls' own."""
    from raypipe.engine.rundir import Request
    from raypipe.evaluate.driver import evaluate
    from raypipe.spec.validation import parse_spec

    shutil.rmtree(run_dir, ignore_errors=True)
    raw = spec(str(source), IMAGE_STAGE_SIZES, stage="mark")
    request = Request(spec=parse_spec(raw), out=str(run_dir), calibrate=False, fuse_light_stages=fused)
    machine_before, started = machine_cpu_seconds(), time.perf_counter()
    result = evaluate(request)
    wall, machine = time.perf_counter() - started, machine_cpu_seconds() - machine_before
    work = result.manifest["work"].values()
    calls, own_ms = sum(w["calls"] for w in work), 1000 * sum(w["cpu_seconds"] for w in work)
    return {
        "pools": "fused" if fused else "one per stage",
        "items": result.manifest["n_items"],
        "stage_calls": calls,
        "wall_s": round(wall, 1),
        "streaming_s": round(result.manifest["wall_seconds"], 1),
        "calls_cpu_ms_per_call": round(own_ms / calls, 3),
        "overhead_core_ms_per_call": round((1000 * machine - own_ms) / calls, 2),
    }


def measure_overhead(n_items: int, reps: int, out: Path) -> list[dict]:
    import tempfile

    from raypipe.engine.datasets import write_table

    rows = []
    with tempfile.TemporaryDirectory(prefix="raypipe-overhead-") as tmp:
        source = Path(tmp) / "images.parquet"
        write_table(NullTask().generate("random", n_items, 0, size=IMAGE_SIDE**2), str(source))
        for rep in range(reps):
            for fused in (False, True):
                print(f"rep {rep + 1}: {'fused' if fused else 'a pool per stage'}", flush=True)
                rows.append({"rep": rep + 1, **overhead(source, Path(tmp) / "run", fused)})
                print(rows[-1], flush=True)
    (out / "overhead.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "overhead.md").write_text(table(rows))
    print(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += [
        "| " + " | ".join(f"{r[h]:,}" if isinstance(r[h], int) else str(r[h]) for h in header) + " |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--images", type=int, help="measure the overhead per call on N megapixel items")
    parser.add_argument("--reps", type=int, default=2, help="--images: runs of each kind")
    parser.add_argument("--out", default="benchmarks/results/scale")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a size in this process
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.images and not args.one:
        rows = [measure_apart(n, out) for n in args.items]
        write_scale(rows, out)
        return
    from raypipe.ray import cluster

    cluster.connect(None)
    if args.images:
        measure_overhead(args.images, args.reps, out)
        return
    for n in args.items:
        print(f"measuring {n} items x 525 configurations", flush=True)
        row = measure(n, out)
        (out / f"scale-{n}.json").write_text(json.dumps(row) + "\n")
        print(row, flush=True)


def measure_apart(n: int, out: Path) -> dict:
    """One size in a fresh process with its own embedded Ray, as a user runs one run per process: the
    driver's memory at one size is not what an earlier, larger size left behind."""
    import subprocess

    subprocess.run([sys.executable, __file__, "--one", "--items", str(n), "--out", str(out)], check=True)
    return json.loads((out / f"scale-{n}.json").read_text())


def write_scale(rows: list[dict], out: Path) -> None:
    import polars as pl

    pl.DataFrame(rows).write_parquet(out / "scale.parquet")
    (out / "scale.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "scale.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
