"""The runs behind RELIABILITY.md: bad inputs through real `raypipe run` drivers, and four injected faults
(a stage actor killed, a hung call, a worker node killed, the driver killed and the run resumed)."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pyarrow as pa
import yaml

from benchmarks.reliability import (
    CLASSIFIERS,
    Outcome,
    PartWatcher,
    bad_image_table,
    dataset_cases,
    huge_png,
    outcome,
    start_driver,
    unusual_lines,
    with_images,
)

FAULT_ITEMS = 40
HANG_VALUE = 200
QUIET = ["--no-cache", "--no-calibrate"]


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def idcard_spec(source: str, ocr: dict | str) -> dict:
    stages = {
        "orient": ["none"],
        "enhance": ["none"],
        "channel": ["gray"],
        "ocr": [ocr],
        "extract": ["label_value"],
    }
    return {
        "name": "reliability",
        "task": "idcard",
        "stages": [{"name": k, "choices": v} for k, v in stages.items()],
        "dataset": {"source": source},
    }


def digits_spec(source: Path, preprocess: dict, **stage_options) -> dict:
    classify = [{"name": n, "resources": {"batch_size": 4}} for n in CLASSIFIERS]
    return {
        "name": "fault",
        "task": "digits",
        "stages": [
            {"name": "preprocess", "choices": [preprocess], **stage_options},
            {"name": "classify", "choices": classify},
        ],
        "dataset": {"source": str(source)},
    }


def sleepy(seconds: float = 0.5) -> dict:
    return {
        "name": "tests.plugin_stages:Sleepy",
        "label": "sleepy",
        "params": {"seconds": seconds},
        "resources": {"num_cpus": 0.6, "batch_size": 2},
    }


def run_to_end(
    folder: Path, name: str, args: list[str], env: dict | None = None
) -> tuple[Path, PartWatcher, str]:
    run_dir, log = folder / name, folder / f"{name}.log"
    proc = start_driver([*args, "--out", str(run_dir), *QUIET], log, env)
    watcher = PartWatcher(run_dir)
    watcher.follow(proc)
    return run_dir, watcher, log.read_text()


# -- bad inputs --------------------------------------------------------------------------------------------


def bad_image_outcomes(folder: Path) -> list[Outcome]:
    from raypipe.engine.datasets import write_table

    source = write_table(bad_image_table(), str(folder / "bad-images.parquet"))
    ocr = {"name": "tesseract", "params": {"lang": "eng", "psm": 11}}
    spec = write_yaml(folder / "bad-images.yaml", idcard_spec(source, ocr))
    run_dir, watcher, _ = run_to_end(folder, "bad-images", [str(spec)])
    items = pl.read_parquet(run_dir / "items.parquet")
    found = []
    for item_id, error in items.select("item_id", "error").iter_rows():
        if item_id.startswith("good-"):
            continue
        streamed = watcher.rows.filter(pl.col("item_id") == item_id)
        duplicates = streamed.height - streamed.select("config_index").n_unique()
        seen = f"error row: {error}" if error else "read and scored like any card"
        found.append(Outcome(f"image: {item_id}", "bad input", 1, 1, duplicates, seen))
    return sorted(found, key=lambda o: o.case)


def huge_outcome(folder: Path) -> Outcome:
    """One 16k x 16k card through the cheap stages and the plumbing-only OCR stage (reads the mean)."""
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    table = with_images(resolve_task("idcard").generate("clean", 1, seed=1), {"16k-x-16k": huge_png()})
    source = write_table(table, str(folder / "huge.parquet"))
    spec = write_yaml(folder / "huge.yaml", idcard_spec(source, {"name": "tests.plugin_stages:EchoOCR"}))
    run_dir, watcher, _terminal = run_to_end(folder, "huge", [str(spec)])
    error = pl.read_parquet(run_dir / "items.parquet")["error"][0]
    seen = (
        f"error row: {error}" if error else "read (16384 x 16384 x 3), turned gray and read by the OCR stage"
    )
    return outcome("image: 16k x 16k", "bad input", 1, run_dir, watcher, seen)


def loader_outcomes(folder: Path) -> list[Outcome]:
    """Each refused or odd dataset through `raypipe run`: what the terminal says, and rows if it runs."""
    found = []
    for name, source in dataset_cases(folder / "datasets").items():
        spec = write_yaml(
            folder / f"{name}.yaml", idcard_spec(source, {"name": "tests.plugin_stages:EchoOCR"})
        )
        run_dir, watcher, terminal = run_to_end(folder, name, [str(spec)])
        expected = 2 if name.startswith("parquet") else 0
        message = next((line for line in terminal.splitlines() if line.startswith("error")), None)
        seen = (message or unusual_lines(terminal)).replace(str(folder), "TMP")
        found.append(outcome(f"dataset: {name}", "bad input", expected, run_dir, watcher, seen[:220]))
    return found


# -- faults ------------------------------------------------------------------------------------------------


def digits_source(folder: Path, marked: int | None = None) -> Path:
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    table = resolve_task("digits").generate("clean", FAULT_ITEMS, seed=9)
    if marked is not None:  # the first pixel HangOn hangs on
        images = table.column("image").to_pylist()
        image = cv2.imdecode(np.frombuffer(images[marked], np.uint8), cv2.IMREAD_GRAYSCALE)
        image[0, 0] = HANG_VALUE
        images[marked] = cv2.imencode(".png", image)[1].tobytes()
        table = table.set_column(table.column_names.index("image"), "image", pa.array(images, pa.binary()))
    return Path(write_table(table, str(folder / f"digits-{marked}.parquet")))


def actor_kill_outcome(folder: Path) -> Outcome:
    spec = write_yaml(folder / "actor.yaml", digits_spec(digits_source(folder), sleepy()))
    run_dir, log = folder / "actor", folder / "actor.log"
    proc = start_driver([str(spec), "--out", str(run_dir), *QUIET], log)
    watcher = PartWatcher(run_dir, ("item_id", "config_index", "_pid_preprocess"))
    watcher.wait(1, proc)
    pid = int(watcher.rows["_pid_preprocess"].drop_nulls()[0])
    os.kill(pid, signal.SIGKILL)  # a stage actor of the run's own embedded Ray
    watcher.follow(proc)
    expected = FAULT_ITEMS * len(CLASSIFIERS)
    return outcome(
        "stage actor killed (SIGKILL)", "fault", expected, run_dir, watcher, unusual_lines(log.read_text())
    )


def hung_call_outcome(folder: Path) -> Outcome:
    hang = {"name": "tests.plugin_stages:HangOn", "label": "hang", "params": {"value": HANG_VALUE}}
    raw = digits_spec(digits_source(folder, marked=FAULT_ITEMS - 1), hang, timeout_s=3)
    run_dir, watcher, _terminal = run_to_end(folder, "hung", [str(write_yaml(folder / "hung.yaml", raw))])
    errors = pl.read_parquet(run_dir / "items.parquet")["error"].drop_nulls().unique().to_list()
    seen = f"{len(errors)} distinct error: {'; '.join(errors)} (on that item's rows only)"
    return outcome("hung call (sleeps 1 h on one item)", "fault", FAULT_ITEMS * 2, run_dir, watcher, seen)


def start_cluster(temp_dir: str):
    from ray.cluster_utils import Cluster

    from raypipe.ray.cluster import WORKER_ENV

    os.environ.update({**WORKER_ENV, "RAY_USAGE_STATS_ENABLED": "0"})
    common = {"num_cpus": 1, "temp_dir": temp_dir}
    cluster = Cluster(initialize_head=True, head_node_args={**common, "include_dashboard": False})
    workers = [cluster.add_node(**common) for _ in range(2)]
    cluster.wait_for_nodes()
    return cluster, workers


def node_kill_outcome(folder: Path, cluster, workers) -> Outcome:
    spec = write_yaml(folder / "node.yaml", digits_spec(digits_source(folder), sleepy(1.0)))
    run_dir, log = folder / "node", folder / "node.log"
    proc = start_driver([str(spec), "--address", cluster.address, "--out", str(run_dir), *QUIET], log)
    watcher = PartWatcher(run_dir, ("item_id", "config_index", "_node_preprocess"))
    watcher.wait(1, proc)
    busy = set(watcher.rows["_node_preprocess"].drop_nulls())
    victim = next((n for n in workers if n.node_id in busy), workers[0])
    cluster.remove_node(victim, allow_graceful=False)
    workers.remove(victim)
    watcher.follow(proc)
    nodes = watcher.rows["_node_preprocess"].drop_nulls().n_unique()
    seen = f"items ran on {nodes} nodes; terminal: {unusual_lines(log.read_text(), 1)}"
    return outcome("worker node killed (3 nodes)", "fault", FAULT_ITEMS * 2, run_dir, watcher, seen)


def driver_kill_outcome(folder: Path, cluster) -> Outcome:
    spec = write_yaml(folder / "driver.yaml", digits_spec(digits_source(folder), sleepy(1.0)))
    run_dir, log = folder / "driver", folder / "driver.log"
    proc = start_driver([str(spec), "--address", cluster.address, "--out", str(run_dir), *QUIET], log)
    watcher = PartWatcher(run_dir)
    watcher.wait(2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = watcher.poll()
    resumed = start_driver(["--resume", str(run_dir), "--address", cluster.address], log)
    watcher.follow(resumed)
    terminal = unusual_lines(log.read_text(), 1)
    seen = f"killed after {before} parts; `raypipe run --resume` finished the rest; terminal: {terminal}"
    return outcome(
        "driver killed, then --resume (multi-node)", "fault", FAULT_ITEMS * 2, run_dir, watcher, seen
    )


def all_outcomes(folder: Path, huge: bool = True) -> list[Outcome]:
    found = [actor_kill_outcome(folder), hung_call_outcome(folder)]
    cluster, workers = start_cluster(tempfile.mkdtemp(prefix="rpr-", dir="/tmp"))
    try:
        found += [node_kill_outcome(folder, cluster, workers), driver_kill_outcome(folder, cluster)]
    finally:
        cluster.shutdown()
    found += bad_image_outcomes(folder)
    if huge:
        found.append(huge_outcome(folder))
    return found + loader_outcomes(folder)
