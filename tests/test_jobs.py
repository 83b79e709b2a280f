"""`ray start --head`, then `ray job submit ... python jobs/evaluate.py`: same spec, same runner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node():
    """A loopback-only head node of our own, stopped by its process id (never `ray stop`)."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rpj-", dir="/tmp")
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--disable-usage-stats",
        f"--port={free_port()}",
        f"--dashboard-port={dashboard}",
        # every fixed default port too: another Ray on this machine (a test's, a user's) may hold it,
        # and a job agent that cannot bind answers "No available agent to submit job"
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--include-dashboard=true",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(address, env)
        yield address, env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything it started and left behind
        except ProcessLookupError:
            pass


def wait_for_dashboard(address: str, env: dict) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        probe = subprocess.run(
            [str(BIN / "ray"), "job", "list", "--address", address], env=env, capture_output=True, text=True
        )
        if probe.returncode == 0:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray head never answered at {address}: {probe.stderr[-2000:]}")


def submit_when_ready(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    """Submit; while the head's job agent is still starting, Ray answers "try again later": do so."""
    for _ in range(12):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in result.stderr:
            return result
        time.sleep(5)
    return result


def test_job_submit_runs_the_same_spec(head_node, tiny_dataset, tmp_path):
    address, env = head_node
    raw = yaml.safe_load((REPO / "configs" / "icp-quick.yaml").read_text())
    raw["stages"] = [
        {"name": "orient", "choices": ["none"]},
        {"name": "enhance", "choices": ["none"]},
        {"name": "channel", "choices": ["gray", "original"]},
        {"name": "ocr", "choices": ["tesseract"]},
    ]
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--",
        "python",
        "jobs/evaluate.py",
        str(spec),
        "--dataset",
        str(tiny_dataset),
        "--out",
        str(out),
    ]
    result = submit_when_ready(cmd, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    configs = pl.read_parquet(out / "configs.parquet")
    assert configs.height == 2 and configs["n_items"].to_list() == [4, 4]
    assert "run directory" in result.stdout
