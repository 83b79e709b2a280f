"""A quiet terminal: Ray's own log lines go to the run directory's run.log, not to the user's screen.

Ray writes from Python loggers and from its C++ core straight to file descriptor 2, so the descriptor itself
is pointed at a file for the run (`--verbose` leaves it alone). The progress bar and tables use stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

from raypipe.run import LOG, RunDir


@contextlib.contextmanager
def ray_logs_to(run_location: str, verbose: bool = False) -> Iterator[str | None]:
    """Send everything written to stderr during the block to `run_location`/run.log (unless verbose)."""
    if verbose:
        yield None
        return
    handle, path = tempfile.mkstemp(prefix="raypipe-run-", suffix=".log")
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(handle, 2)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
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
