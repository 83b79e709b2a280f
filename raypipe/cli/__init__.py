"""The `raypipe` command line: thin Typer commands over the packages below (`main`: run, report, recommend,
tasks, cache, submit; `search`: replay; `monitor`: reference, check, history)."""

from raypipe.cli.main import app

__all__ = ["app"]
