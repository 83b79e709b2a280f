"""`raypipe search ...`: commands about search strategies (replay a race on a finished exhaustive run)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from raypipe.cli.options import parse_pairs
from raypipe.errors import RaypipeError

search_app = typer.Typer(help="Simulate and tune search strategies on finished runs.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


@search_app.command()
def replay(
    run_dir: Annotated[str, typer.Argument(help="A finished exhaustive run (path or URI).")],
    search: Annotated[str, typer.Option(help="The strategy to replay (racing).")] = "racing",
    orders: Annotated[int, typer.Option(help="Seeded item orders to replay.", min=1)] = 20,
    search_param: Annotated[
        list[str] | None, typer.Option(help="Search parameter KEY=VALUE (alpha, tolerance, keep, ...).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON instead of a table.")
    ] = False,
) -> None:
    """Replay a racing search on an exhaustive run's per-item results over seeded item orders, without
    running any engine: the fraction of engine-seconds it would spend, whether its pick lands within
    tolerance of the exhaustive best, and the share of the exhaustive Pareto set it keeps."""
    try:
        result = replay_run(run_dir, search, orders, parse_pairs(search_param, "--search-param"))
    except RaypipeError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from exc
    if as_json:
        console.print_json(json.dumps(result))
    else:
        console.print(replay_table(result))
        console.print(summary_line(result["summary"]))


def replay_run(run_dir: str, search: str, orders: int, params: dict[str, Any]) -> dict[str, Any]:
    """Read an exhaustive run and replay `search` on it (what the command prints)."""
    from raypipe.report.reading import RunView
    from raypipe.search.racing import Racing, sla_metrics
    from raypipe.search.replay import replay as replay_items

    if search != "racing":
        raise RaypipeError(f"--search {search}: replay simulates racing only")
    view = RunView(run_dir)
    method = view.manifest["search"]["method"]
    if method != "exhaustive":
        raise RaypipeError(
            f"{view.run_dir} is a {method} run: replay needs an exhaustive one "
            "(every configuration on every item)"
        )
    racing, sla = Racing(**params), view.spec.sla
    result = replay_items(
        racing, view.items, view.stage_names, view.objective, sla, sla_metrics(view.task, sla), orders
    )
    result["settings"] = {**asdict(racing.settings), "seed": racing.seed, "run": str(view.run_dir)}
    return result


def replay_table(result: dict[str, Any]) -> Table:
    s = result["settings"]
    table = Table(
        title=f"racing replayed on {result['summary']['n_items']} items x {result['summary']['n_configs']} "
        f"configurations (alpha {s['alpha']:g}, tolerance {s['tolerance']:g}, keep {s['keep']}, "
        f"look every {s['look_every']})"
    )
    for header in (
        "seed",
        "engine",
        "survivors",
        "pick",
        "gap to best",
        "within tol",
        "Pareto kept",
        "last drop",
    ):
        table.add_column(header, justify="left" if header == "pick" else "right")
    for o in result["orders"]:
        table.add_row(
            str(o["seed"]),
            f"{o['engine_fraction']:.0%}",
            str(o["survivors"]),
            (o["pick"] or "-")[:12],
            "-" if o["gap_to_best"] is None else f"{o['gap_to_best']:.3f}",
            "[green]yes[/]" if o["within_tolerance"] else "[red]no[/]",
            "-" if o["pareto_share"] is None else f"{o['pareto_share']:.0%}",
            "-" if o["last_drop_after_items"] is None else f"{o['last_drop_after_items']} items",
        )
    return table


def summary_line(summary: dict[str, Any]) -> str:
    share = summary["pareto_share_mean"]
    return (
        f"engine-seconds: {summary['engine_fraction_mean']:.0%} of exhaustive on average "
        f"(at most {summary['engine_fraction_max']:.0%}); pick within tolerance of the exhaustive best "
        f"({summary['exhaustive_best']}) in {summary['picks_within_tolerance']} of {summary['orders']} "
        "orders; "
        f"Pareto set kept: {'-' if share is None else f'{share:.0%}'} on average "
        f"(of {summary['exhaustive_pareto_size']})"
    )
