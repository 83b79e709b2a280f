"""A quiet terminal: Ray's own log lines go to RUN_DIR/run.log; `--verbose` puts them back on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.ray
# Lines this Ray prints on every run (NOTES.md): the token-auth warning, one core_worker.cc error per actor,
# and Ray Data's note that progress bars are off.
RAY_NOISE = ("core_worker", "Token authentication", "Progress bars disabled")


# One configuration over a few digits: what is tested is where an embedded Ray's lines go, not the engine.
SPEC = {
    "name": "quiet",
    "task": "digits",
    "stages": [{"name": "preprocess", "choices": ["none"]}, {"name": "classify", "choices": ["linear"]}],
    "dataset": {"source": "digits-8.parquet", "generate": {"profile": "mixed", "n": 8, "seed": 0}},
}


def run_digits(tmp_path, name: str, limit: int, *extra: str) -> tuple[str, str]:
    """`raypipe run SPEC --limit N` (a one-configuration digits spec) in its own embedded Ray; (terminal
    output, run dir)."""
    out, config = tmp_path / name, tmp_path / "quiet.yaml"
    config.write_text(yaml.safe_dump(SPEC))
    cmd = [sys.executable, "-m", "raypipe.cli", "run", str(config), "--limit", str(limit)]
    cmd += ["--out", str(out), "--no-cache", "--no-calibrate", *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # not the session's cluster
    env["PYTHONPATH"] = str(REPO)
    # in tmp_path: the spec's relative dataset path is generated there, not in the checkout
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal[-3000:]
    assert "run directory" in terminal  # the user's own output is still there
    return terminal, str(out)


def test_ray_lines_go_to_run_log_and_verbose_shows_them(tmp_path):
    terminal, out = run_digits(tmp_path, "quiet", 8)
    assert [noise for noise in RAY_NOISE if noise in terminal] == []
    log = open(os.path.join(out, "run.log"), encoding="utf-8", errors="replace").read()
    assert "core_worker" in log  # Ray's C++ core writes straight to file descriptor 2
    # written while the embedded Ray stopped (`cluster.stopping`), and Ray's stop stayed off the terminal
    assert {"report.html", "pareto.png", "manifest.json"} <= set(os.listdir(out))

    verbose, _ = run_digits(tmp_path, "verbose", 8, "--verbose")
    assert "core_worker" in verbose
