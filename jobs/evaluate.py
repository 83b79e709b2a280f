"""Entrypoint of a raypipe Ray job: the same spec through the same runner as `raypipe run`.

    raypipe submit configs/icp-quick.yaml --out runs/job          (results in ./runs/job, from the head node)
    ray job submit --working-dir . -- python jobs/evaluate.py configs/icp-quick.yaml --out /shared/runs/job

Under a plain `ray job submit` the job runs in Ray's temporary copy of the working directory, so --out must
be an absolute path or a URI (s3://..., gs://...); a relative one is refused rather than lost.
"""

import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the package is the working directory, not an installed wheel.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raypipe.cli import app
from raypipe.errors import RaypipeError
from raypipe.evaluate.submit import prepare_job

if __name__ == "__main__":
    try:
        argv, where = prepare_job(sys.argv[1:])
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(where, flush=True)
    # Inside a job, Ray is already there: connect to it rather than starting an embedded one.
    if "--address" not in argv:
        argv += ["--address", "auto"]
    app(["run", *argv])
