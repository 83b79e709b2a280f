"""The persistent stage cache (a second run does no engine work) and resuming a killed run."""

from __future__ import annotations

import json
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

from raypipe.cli import app
from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import Request
from raypipe.evaluate.driver import evaluate
from raypipe.spec.registry import resolve_task
from tests.conftest import REPO, request_for

pytestmark = pytest.mark.ray


def spec_dict(source: str, channels: list[str], extra_first: list | None = None) -> dict:
    return {
        "name": "cache",
        "task": "idcard",
        "stages": [
            {"name": "orient", "choices": ["none", *(extra_first or [])]},
            {"name": "enhance", "choices": ["none"]},
            {"name": "channel", "choices": channels},
            {"name": "ocr", "choices": ["tesseract"]},
            {"name": "extract", "choices": ["label_value"]},
        ],
        "dataset": {"source": source},
        "sla": {"p95_latency_ms": 5000, "min": {"assertion_score": 0.2}},
    }


def test_second_identical_run_does_no_engine_work(ray_cluster, tiny_dataset, tmp_path):
    cache = str(tmp_path / "cache")
    raw = spec_dict(str(tiny_dataset), ["gray"])
    first = evaluate(request_for(raw, tmp_path / "first", cache_dir=cache, calibrate=False))
    second = evaluate(request_for(raw, tmp_path / "second", cache_dir=cache, calibrate=False))
    assert first.manifest["work"]["ocr"]["calls"] == 4
    assert all(w["calls"] == 0 and w["engine_seconds"] == 0 for w in second.manifest["work"].values())
    assert second.manifest["work"]["ocr"]["cache_hits"] == 4
    cols = ["item_id", "prediction", "latency_total_ms", "latency_ocr_ms", "cpu_ocr_ms"]
    a = first.run_dir.read_parquet("items.parquet").select(cols).sort("item_id")
    b = second.run_dir.read_parquet("items.parquet").select(cols).sort("item_id")
    assert a.equals(b)  # measured latency travels with the cached output

    grown = spec_dict(str(tiny_dataset), ["gray", "green"])
    third = evaluate(request_for(grown, tmp_path / "third", cache_dir=cache, calibrate=False))
    work = third.manifest["work"]
    assert work["channel"]["calls"] == 4 and work["channel"]["cache_hits"] == 4  # only green is new
    assert work["ocr"]["calls"] == 4 and work["ocr"]["cache_hits"] == 4
    assert work["orient"]["calls"] == 0

    # 4 items x 5 stages, and green's channel, OCR and extract calls of the third run
    info = CliRunner().invoke(app, ["cache", "info", "--cache-dir", cache])
    assert info.exit_code == 0 and "32 entries" in info.output
    cleared = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", cache])
    assert "removed 32" in cleared.output


def test_killed_run_resumes_without_losing_or_duplicating_rows(ray_cluster, tmp_path):
    source = tmp_path / "twenty.parquet"
    write_table(resolve_task("digits").generate("clean", 20, seed=5), str(source))
    raw = {
        "name": "resume",
        "task": "digits",
        "stages": [
            {
                "name": "preprocess",
                "choices": [
                    {
                        "name": "tests.plugin_stages:Sleepy",
                        "label": "sleepy",
                        "params": {"seconds": 0.5},
                        "resources": {"num_cpus": 0.25},  # one slow actor: results trickle out
                    }
                ],
            },
            {"name": "classify", "choices": ["linear", "onnx"]},
        ],
        "dataset": {"source": str(source)},
    }
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "raypipe.cli", "run", str(config), "--out", str(run_dir), "--no-cache"]
    cmd += ["--no-calibrate"]
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
    resumed = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    items = pl.read_parquet(run_dir / "items.parquet")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert items.height == 20 * 2
    assert items.select("item_id", "config_id").n_unique() == 40
    # items written before the kill were not run again: one sleepy call per item in all
    assert manifest["work"]["preprocess"]["calls"] == 20
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
        Request.load(tmp_path)
    out = CliRunner().invoke(app, ["run", "--resume", str(tmp_path)])
    assert out.exit_code == 2 and "is not a run directory" in out.output
