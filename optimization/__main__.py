"""Entry point of `python -m optimization`."""

from optimization.cli import app

app(prog_name="python -m optimization")
