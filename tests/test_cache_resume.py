"""The persistent stage cache (a second run does no engine work) and resuming a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from raypipe import data
from raypipe.cache import CacheConfig
from raypipe.cli import app
from raypipe.evaluation import evaluate, resume
from raypipe.runner import RunOptions
from raypipe.spec import parse_spec
from tests.conftest import REPO

pytestmark = pytest.mark.ray


def spec_dict(source: str, channels: list[str], extra_first: list | None = None) -> dict:
    return {
        "name": "cache",
        "stages": [
            {"name": "orient", "choices": ["none", *(extra_first or [])]},
            {"name": "enhance", "choices": ["none"]},
            {"name": "channel", "choices": channels},
            {"name": "ocr", "choices": ["tesseract"]},
        ],
        "dataset": {"source": source},
        "sla": {"p95_latency_ms": 5000, "min_assertion_accuracy": 0.2},
    }


def test_second_identical_run_does_no_engine_work(ray_cluster, tiny_dataset, tmp_path):
    options = RunOptions(cache=CacheConfig(str(tmp_path / "cache")))
    spec = parse_spec(spec_dict(str(tiny_dataset), ["gray"]))
    first = evaluate(spec, out=str(tmp_path / "first"), options=options)
    second = evaluate(spec, out=str(tmp_path / "second"), options=options)
    assert first.manifest["work"]["ocr"]["calls"] == 4
    assert all(w["calls"] == 0 and w["engine_seconds"] == 0 for w in second.manifest["work"].values())
    assert second.manifest["work"]["ocr"]["cache_hits"] == 4
    cols = ["item_id", "prediction", "latency_total_ms", "latency_ocr_ms"]
    a = pl.read_parquet(first.run_dir / "items.parquet").select(cols).sort("item_id")
    b = pl.read_parquet(second.run_dir / "items.parquet").select(cols).sort("item_id")
    assert a.equals(b)  # measured latency travels with the cached output

    grown = parse_spec(spec_dict(str(tiny_dataset), ["gray", "green"]))
    third = evaluate(grown, out=str(tmp_path / "third"), options=options)
    work = third.manifest["work"]
    assert work["channel"]["calls"] == 4 and work["channel"]["cache_hits"] == 4  # only green is new
    assert work["ocr"]["calls"] == 4 and work["ocr"]["cache_hits"] == 4
    assert work["orient"]["calls"] == 0


def test_cache_command_reports_and_clears(tmp_path, ray_cluster, tiny_dataset):
    options = RunOptions(cache=CacheConfig(str(tmp_path / "c")))
    evaluate(parse_spec(spec_dict(str(tiny_dataset), ["gray"])), out=str(tmp_path / "r"), options=options)
    info = CliRunner().invoke(app, ["cache", "info", "--cache-dir", str(tmp_path / "c")])
    assert info.exit_code == 0 and "16 entries" in info.output
    cleared = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path / "c")])
    assert "removed 16" in cleared.output


def test_killed_run_resumes_without_losing_or_duplicating_rows(ray_cluster, tmp_path):
    source = tmp_path / "twelve.parquet"
    data.write_dataset(data.generate_dataset("clean", 12, seed=5), source)
    raw = spec_dict(str(source), ["gray", "original"])
    raw["stages"][0]["choices"] = [
        {"name": "tests.plugin_stages:Sleepy", "label": "sleepy", "params": {"seconds": 1}}
    ]
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "raypipe.cli", "run", str(config), "--out", str(run_dir), "--no-cache"]
    # its own embedded Ray: not the session cluster that ray.init advertises in RAY_ADDRESS
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_parts(run_dir / "parts", at_least=2, timeout=180, log=log_path)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the embedded Ray it started
        proc.wait()
    written = len(list((run_dir / "parts").glob("part-*.parquet")))
    assert not (run_dir / "items.parquet").exists()
    result = resume(run_dir)
    items = pl.read_parquet(run_dir / "items.parquet")
    assert items.height == 12 * 2
    assert items.select("item_id", "config_id").n_unique() == 24
    # items written before the kill were not run again: one orientation call per item in all
    assert result.manifest["work"]["orient"]["calls"] == 12
    assert written >= 2


def wait_for_parts(folder: Path, at_least: int, timeout: float, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if folder.exists() and len(list(folder.glob("part-*.parquet"))) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"fewer than {at_least} parts in {timeout} s; driver log:\n{log.read_text()[-3000:]}"
    )


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path):
    from raypipe.errors import RaypipeError

    with pytest.raises(RaypipeError, match=r"is not a run directory \(run\.json missing\)"):
        resume(tmp_path)
