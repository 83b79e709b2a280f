"""`raypipe submit`: a run as a Ray job whose results land where the submitter can open them.

`ray job submit --working-dir .` runs the job in a temporary copy of the working directory, so a relative
`--out runs/job` used to land in that copy and vanish with the Ray session. `raypipe submit` ships the
checkout, and tells the job where and on which machine it was submitted (RAYPIPE_SUBMIT_DIR and
RAYPIPE_SUBMIT_HOST). The job entrypoint (jobs/evaluate.py) calls `prepare_job`: on the submitter's
machine it works in the submitter's directory, so every relative path means what it meant to the
submitter; elsewhere a relative --out is refused (it would be lost), and an absolute path or a URI is asked
for. A plain `ray job submit` carries no submit directory: there too a relative --out is refused.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from raypipe.errors import RaypipeError

SUBMIT_DIR_ENV = "RAYPIPE_SUBMIT_DIR"
SUBMIT_HOST_ENV = "RAYPIPE_SUBMIT_HOST"
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a job's entrypoint process
ENTRYPOINT = "jobs/evaluate.py"
# `raypipe submit SPEC --out runs/x --limit 40 ...`: options it does not know are `raypipe run`'s.
SUBMIT_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
DEFAULT_JOB_SERVER = "http://127.0.0.1:8265"
POLL_S = 2.0


def host_identity() -> str:
    """This machine as a job sees it: host name and machine id (containers on one host differ by name)."""
    machine = Path("/etc/machine-id")
    machine_id = machine.read_text().strip() if machine.is_file() else ""
    return f"{socket.gethostname()}/{machine_id}"


def option_value(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in argv (the last one given), else None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def _is_kept(location: str) -> bool:
    return "://" in location or os.path.isabs(os.path.expanduser(location))


def prepare_job(argv: list[str], environ: Mapping[str, str] = os.environ) -> tuple[list[str], str]:
    """For jobs/evaluate.py: the `raypipe run` arguments to use and a line saying where results go.

    Inside a Ray job submitted from this machine by `raypipe submit`, the process moves to the submitter's
    directory (the spec path, given relative to the shipped working directory, is made absolute first).
    Otherwise a relative or absent --out (the default is relative) raises RaypipeError."""
    if JOB_ENV not in environ:
        return argv, _results_line(argv)
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv[0] = os.path.abspath(argv[0])  # the spec ships with the working directory
    submit_dir, submit_host = environ.get(SUBMIT_DIR_ENV), environ.get(SUBMIT_HOST_ENV)
    if submit_dir and submit_host == host_identity():
        os.chdir(submit_dir)
        return argv, _results_line(argv)
    out = option_value(argv, "--resume") or option_value(argv, "--out")
    if out is None or not _is_kept(out):
        raise RaypipeError(_refusal(out, submit_host))
    return argv, _results_line(argv)


def _refusal(out: str | None, submit_host: str | None) -> str:
    given = f"--out {out} is relative" if out else "no --out was given (the default runs/... is relative)"
    if submit_host:
        where = f"this job runs on {host_identity()}, not on {submit_host} where it was submitted"
    else:
        where = (
            "under `ray job submit` it would land in Ray's temporary copy of the working directory, "
            "deleted with the Ray session"
        )
    return (
        f"{given}, and {where}: give an absolute path on storage you can reach (e.g. a shared file system) "
        "or a URI (s3://bucket/runs/x, gs://..., file:///...); or submit from the head node with "
        "`raypipe submit`, which keeps relative paths relative to your directory"
    )


def _results_line(argv: list[str]) -> str:
    out = option_value(argv, "--resume") or option_value(argv, "--out")
    if out is None:
        return f"results: a new folder under {os.path.abspath('runs')} on {socket.gethostname()}"
    shown = out if "://" in out else os.path.abspath(os.path.expanduser(out))
    return f"results: {shown}" + ("" if "://" in out else f" on {socket.gethostname()}")


def job_entrypoint(spec: Path, run_args: list[str], working_dir: Path) -> str:
    """The job's command line: the spec relative to the shipped working directory when it lies inside."""
    spec = spec.resolve()
    try:
        shown = str(spec.relative_to(working_dir.resolve()))
    except ValueError:
        shown = str(spec)  # outside the shipped folder: found only when the job runs on this machine
    return shlex.join(["python", ENTRYPOINT, shown, *run_args])


def default_working_dir() -> Path:
    """The checkout holding jobs/evaluate.py and this raypipe, else the current directory."""
    checkout = Path(__file__).resolve().parents[2]  # raypipe/evaluate/submit.py -> the checkout
    return checkout if (checkout / ENTRYPOINT).is_file() else Path.cwd()


def submit_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Pipeline spec (YAML); other options are `raypipe run`'s.")],
    address: Annotated[
        str,
        typer.Option(envvar="RAY_ADDRESS", help="The cluster's job server (the dashboard address)."),
    ] = DEFAULT_JOB_SERVER,
    working_dir: Annotated[
        Path | None,
        typer.Option(help="Folder shipped to the cluster (default: the raypipe checkout)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job's output until it ends.")] = True,
) -> None:
    """Run a spec as a Ray job: `raypipe submit SPEC --out runs/x [raypipe run options]`.

    Relative paths (--out, --dataset, the spec's dataset) mean what they mean here when the job runs on
    this machine (submit from the head node); on another machine a relative --out is refused."""
    from raypipe.spec.validation import load_spec

    try:
        load_spec(config)  # fail here, before anything is shipped
    except RaypipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    folder = (working_dir or default_working_dir()).resolve()
    from raypipe.ray.jobs import follow_job, submit_job  # Ray loads only when a job is really sent

    env = {SUBMIT_DIR_ENV: os.getcwd(), SUBMIT_HOST_ENV: host_identity()}
    job_id = submit_job(address, job_entrypoint(config, list(ctx.args), folder), folder, env)
    typer.echo(f"submitted job {job_id} to {address}")
    if not wait:
        typer.echo(f"follow it with: ray job logs --address {address} --follow {job_id}")
        return
    succeeded, status = follow_job(address, job_id, POLL_S, sys.stdout)
    typer.echo(f"job {job_id} {status}")
    raise typer.Exit(code=0 if succeeded else 1)


def main() -> None:
    """`python -m raypipe.evaluate.submit SPEC ...`, the same command outside the `raypipe` CLI."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command(context_settings=SUBMIT_CONTEXT)(submit_command)
    app()


if __name__ == "__main__":
    main()
