"""`raypipe monitor`: profile a finished run, then check unlabelled batches against it (exit 0, 1 or 2)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from raypipe.errors import RaypipeError

monitor_app = typer.Typer(
    help="Watch a deployed configuration: profile a finished run, then check unlabelled batches for drift "
    "(exit 0: no drift, 1: drift, 2: bad usage).",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
EXIT_DRIFT, EXIT_USAGE = 1, 2


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=EXIT_USAGE)


@monitor_app.command("profile")
def profile(
    run_dir: Annotated[str, typer.Argument(help="A finished run directory (path or URI).")],
    out: Annotated[str, typer.Option(help="The profile directory to write (path or URI).")],
    config: Annotated[
        str | None,
        typer.Option(
            help="The deployed configuration's id (or a prefix); default: the run's recommendation (rank 1)."
        ),
    ] = None,
    attribute: Annotated[
        str | None,
        typer.Option(
            help="The slice attribute whose mix is estimated (default: the first that "
            "splits the run's items, e.g. profile)."
        ),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="The run's dataset, where it moved.")] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="More items of the same source for the feature reference (they need the "
            "slice attribute, not truth): larger references make the tests stronger."
        ),
    ] = None,
) -> None:
    """Write a reference profile from a finished run: per-item features, the deployed configuration's
    label-free outputs, every configuration's per-slice results, and which configuration is deployed."""
    from raypipe.monitor.profile import write_profile

    try:
        written = write_profile(run_dir, out, config, attribute, dataset, reference)
    except RaypipeError as exc:
        raise _fail(exc) from exc
    meta = written.meta
    deployed = meta["deployed"]
    labels = "/".join(str(deployed["choices"][s]) for s in written.stage_names)
    console.print(
        f"profile of {meta['task']['name']} (version {meta['task']['version']}): {meta['n_items']} items, "
        f"{len(meta['features'])} features, mix of {meta['mix_attribute'] or '(none)'}; deployed "
        f"{deployed['config_id'][:8]} {labels}"
    )
    console.print(f"profile directory: [bold]{written.store}[/]")


@monitor_app.command("check")
def check(
    profile_dir: Annotated[
        str, typer.Argument(help="A profile directory written by `raypipe monitor profile`.")
    ],
    batch: Annotated[
        str, typer.Option(help="The unlabelled batch: any source the task loads (path, URI, hf:REPO).")
    ],
    config: Annotated[
        str | None, typer.Option(help="Check this configuration instead of the deployed one.")
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Where to write report.json, features.parquet and the run.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster ('auto'); default: embedded.")
    ] = None,
    cache: Annotated[bool, typer.Option(help="Read and fill the persistent stage-output cache.")] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache directory (default .raypipe/cache).")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own log lines on the terminal.")] = False,
) -> None:
    """Run the deployed configuration over a batch on Ray, test each feature and output for drift (corrected
    for multiple tests), estimate the slice mix and the objective without labels, and re-recommend."""
    from raypipe.cache import default_cache_dir
    from raypipe.logs import ray_logs_to
    from raypipe.monitor.check import RUN, run_check

    out = out or os.path.join("runs", f"check-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    cache_location = str((cache_dir or default_cache_dir()).resolve()) if cache else None
    try:
        with ray_logs_to(os.path.join(out, RUN), verbose):
            report = run_check(profile_dir, batch, out, config, address, cache_location)
    except RaypipeError as exc:
        raise _fail(exc) from exc
    print_report(report, console)
    console.print(f"report: [bold]{os.path.join(out, 'report.json')}[/]")
    raise typer.Exit(code=EXIT_DRIFT if report.drifted else 0)


def print_report(report, console: Console) -> None:
    """The tests table, the mix, the estimates and the recommendation."""
    console.print(tests_table(report))
    errors = f"{report.n_feature_errors} unreadable"
    if report.n_pipeline_errors is not None:
        errors += f", {report.n_pipeline_errors} pipeline errors"
    console.print(f"{report.n_items} items ({errors})")
    if report.mix is not None:
        console.print(mix_table(report.mix))
    for found in report.estimates:
        console.print(
            f"estimated {report.meta.get('objective', 'objective')} ({found.method}): "
            f"{found.value:.3f} [{found.ci_low:.3f}, {found.ci_high:.3f}]"
        )
    if report.observed is not None:
        console.print(f"observed (the batch has truth): {report.observed.value:.3f}")
    console.print(escape(report.recommendation["message"]))
    verdict = "[bold red]drift[/]" if report.drifted else "[green]no drift[/]"
    console.print(f"{verdict} at family-wise level {report.as_json()['family_alpha']:g}")


def tests_table(report) -> Table:
    table = Table(title="drift tests (weighted Holm across all tests)")
    for header in ("group", "feature", "test", "statistic", "p-value", "corrected p", "drifted"):
        table.add_column(header)
    for t in sorted(report.tests, key=lambda t: t.p_corrected):
        table.add_row(
            t.group,
            t.name,
            t.test,
            f"{t.statistic:.3g}",
            f"{t.p_value:.2g}",
            f"{t.p_corrected:.2g}",
            "[bold red]yes[/]" if t.drifted else "no",
        )
    return table


def mix_table(mix) -> Table:
    table = Table(title=f"estimated mix of {mix.attribute}")
    for header in ("bin", "reference", "batch [95% CI]"):
        table.add_column(header)
    for row in mix.rows():
        table.add_row(
            row["bin"],
            f"{row['reference']:.2f}",
            f"{row['estimated']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]",
        )
    return table
