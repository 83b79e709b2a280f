"""`raypipe monitor`: profile a finished run, then check unlabelled batches against it (exit 0, 1 or 2)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from raypipe.errors import RaypipeError

if TYPE_CHECKING:
    from raypipe.monitor.check import CheckReport

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


@monitor_app.command("reference")
def reference_command(
    run_dir: Annotated[str, typer.Argument(help="A finished run directory (path or URI).")],
    out: Annotated[str, typer.Option(help="The reference directory to write (path or URI).")],
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
    extra_items: Annotated[
        str | None,
        typer.Option(
            "--extra-items",
            help="More items of the same source for the feature reference (they need the "
            "slice attribute, not truth): larger references make the tests stronger.",
        ),
    ] = None,
) -> None:
    """Write the monitoring reference of a finished run: per-item features, the deployed configuration's
    label-free outputs, every configuration's per-slice results, and which configuration is deployed."""
    from raypipe.monitor.reference import write_reference

    try:
        written = write_reference(run_dir, out, config, attribute, dataset, extra_items)
    except RaypipeError as exc:
        raise _fail(exc) from exc
    meta = written.meta
    deployed = meta["deployed"]
    labels = "/".join(str(deployed["choices"][s]) for s in written.stage_names)
    console.print(
        f"reference of {meta['task']['name']} (version {meta['task']['version']}): {meta['n_items']} items, "
        f"{len(meta['features'])} features, mix of {meta['mix_attribute'] or '(none)'}; deployed "
        f"{deployed['config_id'][:8]} {labels}"
    )
    console.print(f"reference directory: [bold]{written.store}[/]")


monitor_app.command("profile", hidden=True, deprecated=True, help="The former name of `monitor reference`.")(
    reference_command
)


@monitor_app.command("check")
def check(
    profile_dir: Annotated[
        str,
        typer.Argument(help="The reference directory written by `raypipe monitor reference`."),
    ],
    batch: Annotated[
        str,
        typer.Option(
            help="The unlabelled batch: any source the task loads (path, URI, hf:REPO); or a folder of "
            "Parquet batch files or a quoted glob ('incoming/*.parquet'): each new batch is checked, "
            "oldest first, and added to the reference's history."
        ),
    ],
    config: Annotated[
        str | None, typer.Option(help="Check this configuration instead of the deployed one.")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Where to write report.json, features.parquet and the run (one folder per batch when "
            "several); default: REFERENCE/checks/<time>-<batch>."
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster ('auto'); default: embedded.")
    ] = None,
    cache: Annotated[bool, typer.Option(help="Read and fill the persistent stage-output cache.")] = True,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache directory (default .raypipe/engine/cache).")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own log lines on the terminal.")] = False,
) -> None:
    """Run the deployed configuration over each batch on Ray, test each feature and output for drift
    (corrected for multiple tests), estimate the slice mix and the objective without labels, re-recommend,
    and append each check to the reference's history (exit 1 when any batch drifted)."""
    from raypipe.engine.cache import default_cache_dir
    from raypipe.monitor.history import already_checked, batch_sources

    cache_location = str((cache_dir or default_cache_dir()).resolve()) if cache else None
    try:
        sources = batch_sources(batch)
        seen = already_checked(profile_dir, sources) if len(sources) > 1 else set()
    except RaypipeError as exc:
        raise _fail(exc) from exc
    for source in seen:
        console.print(f"already in the history, not checked again: {source}")
    todo = [s for s in sources if s not in seen]
    reports = []
    for source in todo:
        target = _check_out(profile_dir, source, out, len(todo) > 1)
        reports.append(_check_one(profile_dir, source, target, config, address, cache_location, verbose))
    if reports:  # the history's page, once for all the batches checked
        from raypipe.monitor.history import read_history
        from raypipe.report.html import write_history_report

        objective = str(reports[-1].meta.get("objective", "the objective"))
        page = write_history_report(profile_dir, read_history(profile_dir), objective)
        console.print(f"history: [bold]{page}[/]")
    raise typer.Exit(code=EXIT_DRIFT if any(r.drifted for r in reports) else 0)


def _check_out(profile_dir: str, source: str, out: str | None, several: bool) -> str:
    """A check's folder: --out (a folder per batch inside it when several), else under the reference."""
    from raypipe.engine.rundir import RunDir
    from raypipe.monitor.history import CHECKS

    stem = Path(source.rstrip("/")).stem or "batch"
    if out is not None:
        return os.path.join(out, stem) if several else out
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return RunDir(profile_dir).path(f"{CHECKS}/{stamp}-{stem}")


def _check_one(
    profile_dir: str,
    source: str,
    out: str,
    config: str | None,
    address: str | None,
    cache_location: str | None,
    verbose: bool,
) -> CheckReport:
    """Check one batch, print it, add it to the history; returns its report."""
    from raypipe.engine.logs import ray_logs_to
    from raypipe.monitor.check import RUN, run_check
    from raypipe.monitor.history import append_history, history_row

    try:
        with ray_logs_to(os.path.join(out, RUN), verbose):
            report = run_check(profile_dir, source, out, config, address, cache_location)
        append_history(profile_dir, history_row(report, out))
    except RaypipeError as exc:
        raise _fail(exc) from exc
    console.print(f"[bold]{escape(source)}[/]")
    print_report(report, console)
    console.print(f"report: [bold]{os.path.join(out, 'report.json')}[/]")
    from raypipe.report.html import write_check_report

    console.print(f"HTML report: [bold]{write_check_report(out)}[/]")
    return report


@monitor_app.command("history")
def history(
    profile_dir: Annotated[str, typer.Argument(help="The reference (profile directory) the checks used.")],
    out: Annotated[
        str | None, typer.Option(help="Where to write the plot (PNG); default: REFERENCE/history.png.")
    ] = None,
    html: Annotated[
        str | None,
        typer.Option(help="Where to write the HTML history; default: REFERENCE/history.html."),
    ] = None,
) -> None:
    """Print the checks of a reference over time (verdicts, label-free estimates, advice), plot them, and
    write them as one HTML page (charts and a sortable table linking each check's report)."""
    from raypipe.engine.rundir import RunDir
    from raypipe.monitor.history import PLOT, plot_history, read_history
    from raypipe.monitor.reference import load_reference
    from raypipe.report.html import write_history_report

    try:
        profile = load_reference(profile_dir)
        found = read_history(profile_dir)
    except RaypipeError as exc:
        raise _fail(exc) from exc
    if found is None or found.is_empty():
        hint = f"`raypipe monitor check {profile_dir} --batch ...` adds to it"
        raise _fail(RaypipeError(f"{profile_dir} has no history yet: {hint}"))
    console.print(history_table(found, profile.objective.name))
    target = out or RunDir(profile_dir).path(PLOT)
    plot_history(found, profile.objective.name, target)
    console.print(f"plot: [bold]{target}[/]")
    console.print(f"HTML: [bold]{write_history_report(profile_dir, found, profile.objective.name, html)}[/]")


def history_table(found, objective: str) -> Table:
    table = Table(title=f"checks over time ({found.height})")
    for header in (
        "checked",
        "batch",
        "items",
        "verdict",
        "fired / stepped aside",
        f"estimated {objective}",
        "advice",
    ):
        table.add_column(header)
    for row in found.iter_rows(named=True):
        estimate = next((m for m in ("mix_reweighted", "score_calibrated") if row.get(m) is not None), None)
        shown = (
            ""
            if estimate is None
            else f"{row[estimate]:.3f} [{row[estimate + '_low']:.3f}, {row[estimate + '_high']:.3f}]"
        )
        verdict = "[bold red]drift[/]" if row["drifted"] else "[green]no drift[/]"
        fired = row["fired"] + (f" (aside: {row['stepped_aside']})" if row["stepped_aside"] else "")
        table.add_row(str(row["checked"])[:19], Path(row["batch"]).name, str(row["n_items"]), verdict,
                      escape(fired), shown, "switch" if row["switch"] else "stay")  # fmt: skip
    return table


def print_report(report, console: Console) -> None:
    """The tests table, the mix, the estimates and the recommendation."""
    console.print(tests_table(report))
    for t in report.tests:
        if t.stepped_aside:
            console.print(f"stepped aside: {t.group} test of {t.name}: {escape(t.stepped_aside)}")
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
    for t in sorted((t for t in report.tests if not t.stepped_aside), key=lambda t: t.p_corrected):
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
