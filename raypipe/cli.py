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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from raypipe.errors import RaypipeError

app = typer.Typer(
    help="Evaluate every configuration of a multi-stage inference pipeline on Ray, and choose the right "
    "one.\n\n"
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
    profile: Annotated[
        str, typer.Option(help="clean, rotated, skewed, dark, blurred, noisy, jpeg or mixed.")
    ] = "mixed",
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
    config: Annotated[Path | None, typer.Argument(help="Pipeline spec (YAML); omit with --resume.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset instead of the spec's: Parquet, folder, hf:REPO.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N items.", min=1)] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (default runs/<name>-<time>).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster ('auto'); default: embedded.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Finish the run in this directory after a crash.")
    ] = None,
    share: Annotated[bool, typer.Option(help="Compute each shared prefix once per item.")] = True,
    reuse: Annotated[
        bool, typer.Option(help="Compute each byte-identical stage input once per item.")
    ] = True,
    cache: Annotated[bool, typer.Option(help="Read and fill the persistent stage-output cache.")] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache directory (default .raypipe/cache).")] = None,
    search: Annotated[
        str, typer.Option(help="exhaustive: every configuration on every item; halving: successive halving.")
    ] = "exhaustive",
    first_round: Annotated[int, typer.Option(help="Items in halving's first round.", min=1)] = 8,
    top: Annotated[int, typer.Option(help="Rows of the ranked table to print.")] = 20,
) -> None:
    """Evaluate every configuration over the dataset on Ray; write Parquet results and print the ranking."""
    from raypipe import evaluation
    from raypipe.cache import CacheConfig, default_cache_dir
    from raypipe.runner import RunOptions
    from raypipe.spec import load_spec

    if (config is None) == (resume is None):
        raise _fail(RaypipeError("give a spec to run, or --resume RUN_DIR (not both)"))
    caching = CacheConfig(str((cache_dir or default_cache_dir()).resolve())) if cache else None
    try:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
            printer = _progress_printer(progress)
            if resume is not None:
                result = evaluation.resume(resume, address, printer)
            else:
                spec = load_spec(config)
                options = RunOptions(share_prefixes=share, reuse_identical=reuse, cache=caching)
                result = evaluation.evaluate(
                    spec,
                    dataset,
                    limit,
                    out,
                    address,
                    options,
                    printer,
                    search=search,
                    first_round_items=first_round,
                )
    except RaypipeError as exc:
        raise _fail(exc) from exc
    _print_result(result, top)


def _print_result(result, top: int | None) -> None:
    from raypipe.report import pareto_plot, print_ranked

    spec = result.manifest["spec"]
    print_ranked(result.configs, [s["name"] for s in spec["stages"]], console, top)
    pareto_plot(result.configs, result.run_dir / "pareto.png", spec["sla"]["p95_latency_ms"])
    work = result.manifest["work"]
    calls = ", ".join(f"{k} {v['calls']}" for k, v in work.items())
    hits = sum(v["cache_hits"] for v in work.values())
    console.print(f"stage calls: {calls}; cache hits {hits}; wall {result.manifest['wall_seconds']:.1f} s")
    if "search" in result.manifest:
        s = result.manifest["search"]
        share = s["engine_seconds"] / max(s["exhaustive_estimate_engine_seconds"], 1e-9)
        console.print(
            f"halving: {len(s['rounds'])} rounds; engine {s['engine_seconds']:.1f} s, "
            f"{share:.0%} of the ~{s['exhaustive_estimate_engine_seconds']:.1f} s an exhaustive search takes"
        )
    console.print(f"run directory: [bold]{result.run_dir}[/]")


cache_app = typer.Typer(help="Inspect or clear the persistent stage-output cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheDir = Annotated[Path | None, typer.Option(help="Cache directory (default .raypipe/cache).")]


@cache_app.command("info")
def cache_info(cache_dir: CacheDir = None) -> None:
    """Where the cache is, how many stage outputs it holds, and its size against its bound."""
    from raypipe.cache import CacheConfig, StageCache, default_cache_dir

    stats = StageCache(CacheConfig(str((cache_dir or default_cache_dir()).resolve()))).stats()
    console.print(
        f"{stats['directory']}: {stats['entries']} entries, {stats['bytes'] / 2**20:.1f} MiB "
        f"of {stats['size_limit_bytes'] / 2**30:.1f} GiB"
    )


@cache_app.command("clear")
def cache_clear(cache_dir: CacheDir = None) -> None:
    """Remove every cached stage output."""
    from raypipe.cache import CacheConfig, StageCache, default_cache_dir

    removed = StageCache(CacheConfig(str((cache_dir or default_cache_dir()).resolve()))).clear()
    console.print(f"removed {removed} cached stage outputs")


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
    print_ranked(configs_df, [s["name"] for s in manifest["spec"]["stages"]], console, top)
    plot = pareto_plot(configs_df, run_dir / "pareto.png", manifest["spec"]["sla"]["p95_latency_ms"])
    console.print(f"wrote {plot}")


if __name__ == "__main__":
    app()
