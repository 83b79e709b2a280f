"""The `raypipe` command line: thin commands over spec, space, data, evaluation and report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from raypipe.errors import RaypipeError

app = typer.Typer(
    help="Evaluate every configuration of a multi-stage inference pipeline on Ray, and choose the right one.\n\n"
    "Start with: raypipe validate configs/icp-quick.yaml; raypipe configs configs/icp-quick.yaml; "
    "raypipe run configs/icp-quick.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Make and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# Logs and CI are not terminals: give tables room there instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ConfigArg = Annotated[Path, typer.Argument(help="Pipeline spec (YAML), e.g. configs/icp-quick.yaml.")]


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a spec: schema, every choice's name and parameters, exclusions. Lists every problem at once."""
    from raypipe.space import expand_configurations
    from raypipe.spec import load_spec

    try:
        spec = load_spec(config)
    except RaypipeError as exc:
        raise _fail(exc) from exc
    n = len(expand_configurations(spec))
    console.print(f"[green]ok[/] {config}: {len(spec.stages)} stages, {n} configurations")


@app.command()
def configs(
    config: ConfigArg,
    count: Annotated[bool, typer.Option("--count", help="Print only the number of configurations.")] = False,
) -> None:
    """List every configuration with its stable id (a hash of choices and parameters)."""
    from raypipe.space import expand_configurations
    from raypipe.spec import load_spec

    try:
        found = expand_configurations(load_spec(config))
    except RaypipeError as exc:
        raise _fail(exc) from exc
    if count:
        print(len(found))
        return
    for c in found:
        print(f"{c.config_id}  {c.describe()}")


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Parquet file to write (lansinuote/ocr_id_card schema + truth).")],
    profile: Annotated[str, typer.Option(help="clean, rotated, skewed, dark, blurred, noisy, jpeg or mixed.")] = "mixed",
    n: Annotated[int, typer.Option(help="Number of cards.", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same bytes.")] = 0,
) -> None:
    """Generate synthetic Chinese resident ID cards with valid ID numbers under a distribution profile."""
    from raypipe import data

    try:
        table = data.generate_dataset(profile, n, seed)
    except RaypipeError as exc:
        raise _fail(exc) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    data.write_dataset(table, out)
    console.print(f"wrote {table.num_rows} cards ({profile}, seed {seed}) to {out}")


def _progress_printer(progress: Progress):
    task = progress.add_task("evaluating", total=None)

    def on_progress(what: str, done: float, total: float) -> None:
        if what == "plan":
            gpu = f", {total:g} GPU" if total else ", no GPU: GPU choices run on CPU"
            progress.console.print(f"Ray cluster: {done:g} CPU{gpu}")
        elif what == "rows":
            progress.update(task, completed=done, total=total)
        else:
            progress.console.print(f"  {what}")

    return on_progress


@app.command()
def run(
    config: ConfigArg,
    dataset: Annotated[str | None, typer.Option(help="Dataset instead of the spec's: Parquet, folder, hf:REPO.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N items.", min=1)] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (default runs/<name>-<time>).")] = None,
    address: Annotated[str | None, typer.Option(help="Existing Ray cluster ('auto'); default: embedded.")] = None,
    share: Annotated[bool, typer.Option(help="Compute each shared prefix once per item.")] = True,
    reuse: Annotated[bool, typer.Option(help="Compute each byte-identical stage input once per item.")] = True,
    top: Annotated[int, typer.Option(help="Rows of the ranked table to print.")] = 20,
) -> None:
    """Evaluate every configuration over the dataset on Ray; write Parquet results and print the ranking."""
    from raypipe.evaluation import evaluate
    from raypipe.report import pareto_plot, print_ranked
    from raypipe.runner import RunOptions
    from raypipe.spec import load_spec

    try:
        spec = load_spec(config)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
            result = evaluate(spec, dataset, limit, out, address, RunOptions(share, reuse), _progress_printer(progress))
    except RaypipeError as exc:
        raise _fail(exc) from exc
    stage_names = [s.name for s in spec.stages]
    print_ranked(result.configs, stage_names, console, top)
    pareto_plot(result.configs, result.run_dir / "pareto.png", spec.sla.p95_latency_ms)
    work = ", ".join(f"{k} {v['calls']}" for k, v in result.manifest["work"].items())
    console.print(f"stage calls: {work}; wall {result.manifest['wall_seconds']:.1f} s")
    console.print(f"run directory: [bold]{result.run_dir}[/]")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `raypipe run`.")],
    top: Annotated[int | None, typer.Option(help="Rows to print (default all).")] = None,
) -> None:
    """Print a run's ranked table again and write pareto.png beside its results."""
    from raypipe.report import pareto_plot, print_ranked

    path = run_dir / "configs.parquet"
    if not path.is_file():
        raise _fail(RaypipeError(f"{path} not found: is {run_dir} a finished run directory?"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    configs_df = pl.read_parquet(path)
    stage_names = [s["name"] for s in manifest["spec"]["stages"]]
    print_ranked(configs_df, stage_names, console, top)
    plot = pareto_plot(configs_df, run_dir / "pareto.png", manifest["spec"]["sla"]["p95_latency_ms"])
    console.print(f"wrote {plot}")


if __name__ == "__main__":
    app()
