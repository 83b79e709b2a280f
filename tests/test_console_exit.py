"""The console script (`raypipe.cli.main`) ends the process without Python's teardown, and loses nothing by
it: the exit handlers run, the output is all there and the exit code is the command's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def console(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_the_exit_handlers_run_after_the_command_and_its_output_is_flushed(tmp_path):
    done = console(
        "import atexit, sys\n"
        "from raypipe.cli import main\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "sys.stdout.write('buffered, no newline ')\n"
        "main(['tasks'])\n"
        "print('not reached')\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("buffered, no newline ")
    assert "idcard" in done.stdout and "digits" in done.stdout
    assert done.stdout.rstrip().endswith("handler ran")
    assert "not reached" not in done.stdout  # main ends the process


def test_a_failing_command_keeps_its_exit_code_and_message(tmp_path):
    done = console("from raypipe.cli import main\nmain(['validate', 'missing.yaml'])\n", tmp_path)
    assert done.returncode == 2
    assert "spec file not found: missing.yaml" in done.stderr


def test_a_running_thread_that_is_no_daemon_is_waited_for(tmp_path):
    """Python joins such a thread before it exits; the fast exit must not cut it off."""
    marker = tmp_path / "written"
    done = console(
        "import threading, time\n"
        "from raypipe.cli import main\n"
        "def late():\n"
        "    time.sleep(1.0)\n"
        f"    open({str(marker)!r}, 'w').write('done')\n"
        "threading.Thread(target=late).start()\n"
        "main(['tasks'])\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "done"
