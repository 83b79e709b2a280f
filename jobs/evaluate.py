"""Entrypoint for `ray job submit`: the same spec through the same runner as `raypipe run`.

ray job submit --working-dir . -- python jobs/evaluate.py configs/icp-quick.yaml --out runs/job
"""

import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the package is the working directory, not an installed wheel.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raypipe.cli import app

if __name__ == "__main__":
    # Inside a job, Ray is already there: connect to it rather than starting an embedded one.
    argv = sys.argv[1:]
    if "--address" not in argv:
        argv += ["--address", "auto"]
    app(["run", *argv])
