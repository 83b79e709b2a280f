"""The `raypipe` command line: thin Typer commands over the packages below (`main`: run, report, recommend,
tasks, cache, submit; `search`: replay; `monitor`: reference, check, history)."""

from __future__ import annotations

import atexit
import os
import sys
import threading

from raypipe.cli.main import app

__all__ = ["app", "main"]


def main(args: list[str] | None = None) -> None:
    """The `raypipe` console script: `app`, then an exit that skips Python's teardown of the interpreter.

    After a run's last output, tearing down its modules and objects took about 0.5 s. The exit handlers
    still run (Ray's stop, logging's flush) and stdout and stderr are flushed; only the teardown is skipped,
    and not when a thread other than a daemon is still running (Python would wait for it)."""
    try:
        app(args)
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit does with a message
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (raypipe ... | head): nothing left to flush to
            pass
    os._exit(code or 0)
