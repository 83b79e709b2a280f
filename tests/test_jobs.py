"""Ray jobs: `ray job submit ... python jobs/evaluate.py` and `raypipe submit`; results land where the
submitter can open them, and a relative --out that would be lost is refused."""

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

from raypipe.engine.datasets import write_table
from raypipe.errors import RaypipeError
from raypipe.evaluate.submit import (
    ENTRYPOINT,
    JOB_ENV,
    SUBMIT_DIR_ENV,
    SUBMIT_HOST_ENV,
    default_working_dir,
    host_identity,
    option_value,
    prepare_job,
)
from raypipe.spec.registry import resolve_task
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(env: dict, temp_dir: str) -> tuple[subprocess.Popen, str, Path]:
    """`ray start --head --block` on fresh free ports; (process, dashboard address, its output file)."""
    dashboard = free_port()
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
    output = Path(tempfile.mkstemp(prefix="ray-start-", suffix=".log", dir=temp_dir)[1])
    with output.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{dashboard}", output


def stop_head(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=3)  # `ray start --block` rarely exits sooner than 10 s: its group is killed below
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything it started and left behind
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def head_node():
    """A loopback-only head node of our own, stopped by its process id (never `ray stop`).

    A port found free can be taken before Ray binds it (this machine's other Ray processes bind ports all
    the time; seen once: a head whose dashboard never answered, its log folder empty), so a head that exits
    or stays silent while starting is started again on other ports, up to three times."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="rpj-", dir="/tmp")
    for attempt in range(3):
        proc, address, output = start_head(env, temp_dir)
        if wait_for_dashboard(address, env, proc):
            break
        stop_head(proc)
        if attempt == 2:
            last = output.read_text()[-3000:]
            raise RuntimeError(f"`ray start --head` never answered, three times; the last said:\n{last}")
    try:
        yield address, env
    finally:
        stop_head(proc)


def wait_for_dashboard(address: str, env: dict, proc: subprocess.Popen) -> bool:
    """True once the head answers; False if its `ray start` exits first or it is silent for 90 s."""
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        probe = subprocess.run(
            [str(BIN / "ray"), "job", "list", "--address", address], env=env, capture_output=True, text=True
        )
        if probe.returncode == 0:
            return True
        time.sleep(2)
    return False


def submit_when_ready(cmd: list[str], env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Submit; while the head's job agent is still starting, Ray answers "try again later": do so."""
    for _ in range(12):
        result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in result.stderr:
            return result
        time.sleep(5)
    return result


@pytest.fixture(scope="module")
def digits_job(tmp_path_factory) -> Path:
    """A folder holding a two-configuration digits spec and its 12 items, as a submitter's would."""
    folder = tmp_path_factory.mktemp("submitter")
    write_table(resolve_task("digits").generate("clean", 12, seed=2), str(folder / "digits.parquet"))
    spec = {
        "name": "job",
        "task": "digits",
        "stages": [
            {"name": "preprocess", "choices": ["none", "threshold"]},
            {"name": "classify", "choices": ["linear"]},
        ],
        "dataset": {"source": "digits.parquet"},
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(spec))
    return folder


def ray_job_submit(address: str, *job_args: str) -> list[str]:
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO)]
    return [*cmd, "--", "python", "jobs/evaluate.py", *job_args]


def check_results(out: Path) -> None:
    configs = pl.read_parquet(out / "configs.parquet")
    assert configs.height == 2 and configs["n_items"].to_list() == [12, 12]
    items = pl.read_parquet(out / "items.parquet")
    assert items.height == 24 and items.select("item_id", "config_id").n_unique() == 24


@pytest.mark.ray
def test_job_with_an_absolute_out_writes_there(head_node, digits_job, tmp_path):
    address, env = head_node
    out = tmp_path / "absolute"
    cmd = ray_job_submit(
        address, str(digits_job / "job.yaml"), "--dataset", str(digits_job / "digits.parquet")
    )
    result = submit_when_ready([*cmd, "--out", str(out), "--no-calibrate"], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    assert f"results: {out}" in result.stdout and "run directory" in result.stdout
    check_results(out)


@pytest.mark.ray
def test_raypipe_submit_keeps_relative_paths_relative_to_the_submitter(head_node, digits_job):
    address, env = head_node
    cmd = [
        sys.executable,
        "-m",
        "raypipe.evaluate.submit",
        "job.yaml",
        "--address",
        address,
        "--out",
        "runs/job",
    ]
    cmd += ["--dataset", "digits.parquet", "--no-calibrate", "--no-cache"]
    result = submit_when_ready(cmd, {**env, "PYTHONPATH": str(REPO)}, cwd=digits_job)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = digits_job / "runs" / "job"
    assert f"results: {out}" in result.stdout
    check_results(out)


@pytest.mark.ray
def test_plain_job_submit_refuses_a_relative_out(head_node, digits_job):
    address, env = head_node
    cmd = ray_job_submit(address, str(digits_job / "job.yaml"), "--out", "runs/job")
    result = submit_when_ready(cmd, env)
    assert result.returncode != 0
    assert "--out runs/job is relative" in result.stdout
    assert "give an absolute path" in result.stdout and "s3://" in result.stdout


# -- where a job puts its results (no Ray) ----------------------------------------------------------------


def test_option_value_reads_both_spellings():
    assert option_value(["spec.yaml", "--out", "a", "--limit", "3"], "--out") == "a"
    assert option_value(["spec.yaml", "--out=b"], "--out") == "b"
    assert option_value(["spec.yaml"], "--out") is None


def test_outside_a_job_arguments_pass_unchanged(tmp_path):
    argv, where = prepare_job(["spec.yaml", "--out", "runs/x"], environ={})
    assert argv == ["spec.yaml", "--out", "runs/x"]
    assert where.startswith(f"results: {os.path.abspath('runs/x')} on ")


def test_a_job_from_this_machine_works_in_the_submitters_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # a job starts in its copy of the working directory
    env = {JOB_ENV: "{}", SUBMIT_DIR_ENV: str(tmp_path), SUBMIT_HOST_ENV: host_identity()}
    argv, where = prepare_job(["configs/digits.yaml", "--out", "runs/x"], env)
    assert os.getcwd() == str(tmp_path)
    assert argv == [str(REPO / "configs" / "digits.yaml"), "--out", "runs/x"]
    assert where.startswith(f"results: {tmp_path / 'runs' / 'x'} on ")


def test_a_job_elsewhere_refuses_a_relative_out_but_takes_absolute_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {JOB_ENV: "{}", SUBMIT_DIR_ENV: "/home/someone", SUBMIT_HOST_ENV: "laptop/0"}
    with pytest.raises(
        RaypipeError, match=r"--out runs/x is relative, and this job runs on .* not on laptop/0"
    ):
        prepare_job(["spec.yaml", "--out", "runs/x"], env)
    with pytest.raises(RaypipeError, match=r"no --out was given"):
        prepare_job(["spec.yaml"], env)
    assert os.getcwd() == str(tmp_path)
    for out in ("/shared/runs/x", "s3://bucket/runs/x?endpoint_override=h:9000", "file:///shared/x"):
        argv, where = prepare_job(["spec.yaml", "--out", out], env)
        assert argv[-1] == out and out in where


def test_a_plain_ray_job_submit_refuses_a_relative_out():
    with pytest.raises(RaypipeError, match=r"Ray's temporary copy of the working directory"):
        prepare_job(["spec.yaml", "--out", "runs/x"], {JOB_ENV: "{}"})


def test_the_default_working_dir_is_the_checkout_with_the_entrypoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: the shipped folder must not depend on where one stands
    assert default_working_dir() == REPO and (REPO / ENTRYPOINT).is_file()
