"""`python -m raypipe.cli ...`: the same command line as `raypipe ...`."""

from raypipe.cli import main

main()
