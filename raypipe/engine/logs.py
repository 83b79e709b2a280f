"""A quiet terminal: Ray's own log lines go to the run directory's run.log, not to the user's screen.

Ray writes from Python loggers and from its C++ core straight to file descriptors 2 and 1 (its error
messages from workers and raylets, "(raylet) Task ... will be retried", reach the driver's stdout), so both
descriptors are pointed at a file for the run (`--verbose` leaves them alone). The progress bar writes to
a duplicate of the terminal's stdout taken before, which this context hands out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import TextIO

from raypipe.engine.rundir import LOG, RunDir


@contextlib.contextmanager
def ray_logs_to(run_location: str, verbose: bool = False) -> Iterator[TextIO | None]:
    """Send everything written to stdout and stderr during the block to `run_location`/run.log (unless
    verbose); yields a stream to the real terminal for the progress bar (None when verbose)."""
    if verbose:
        yield None
        return
    handle, path = tempfile.mkstemp(prefix="raypipe-run-", suffix=".log")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8")
    for fd in (1, 2):
        os.dup2(handle, fd)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        terminal.close()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(handle)
        _keep(path, run_location)


def _keep(path: str, run_location: str) -> None:
    """Append the captured lines to the run's run.log (where the run directory exists by now)."""
    try:
        run_dir = RunDir(run_location)
        if run_dir.exists("run.json"):
            with open(path, "rb") as captured:
                previous = run_dir.read_bytes(LOG) if run_dir.exists(LOG) else b""
                run_dir.write_bytes(LOG, previous + captured.read())
    finally:
        os.unlink(path)
