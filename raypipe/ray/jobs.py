"""Ray jobs: submit a run to a cluster's job server and follow its output (`raypipe submit`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO


def submit_job(address: str, entrypoint: str, working_dir: Path, env: dict[str, str]) -> str:
    """Submit a job to Ray's job server with the working directory and the given environment."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    return client.submit_job(
        entrypoint=entrypoint, runtime_env={"working_dir": str(working_dir), "env_vars": env}
    )


def follow_job(address: str, job_id: str, poll_s: float, out: TextIO) -> tuple[bool, str]:
    """Copy the job's output to `out` as it grows until the job ends; (succeeded, final status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client, shown = JobSubmissionClient(address), 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        out.write(logs[shown:])
        out.flush()
        shown = len(logs)
        if status.is_terminal():
            return status == JobStatus.SUCCEEDED, status.value.lower()
        time.sleep(poll_s)
