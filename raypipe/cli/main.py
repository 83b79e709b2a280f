"""The `raypipe` command line: thin commands over validation, space, tasks, evaluation and report."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

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

from raypipe.cli.options import parse_pairs
from raypipe.errors import RaypipeError

if TYPE_CHECKING:
    from raypipe.evaluate.context import ProgressEvent

app = typer.Typer(
    help="Evaluate every configuration of a multi-stage inference pipeline on Ray, and choose the right "
    "one.\n\n"
    "Start with: raypipe validate configs/digits.yaml; raypipe configs configs/icp-quick.yaml; "
    "raypipe run configs/icp-quick.yaml; raypipe recommend RUN_DIR --mix profile=rotated:0.3",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Make and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# Logs and CI are not terminals: give tables room there instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

# A spec may name classes by import path ("package.module:Class"): resolve them from the working directory, as
# `python -m` does (the Ray workers inherit the driver's path).
if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())

ConfigArg = Annotated[Path, typer.Argument(help="Pipeline spec (YAML), e.g. configs/icp-quick.yaml.")]
RunDirArg = Annotated[str, typer.Argument(help="A run directory (path or URI) written by `raypipe run`.")]


def fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a spec: schema, task, every choice's name and parameters, exclusions, objective, SLA, slices.
    Lists every problem at once, each with its YAML path. A choice named 'package.module:Class' is imported
    to check it: a spec is code."""
    from raypipe.spec.space import expand_configurations
    from raypipe.spec.validation import load_spec

    try:
        spec = load_spec(config)
    except RaypipeError as exc:
        raise fail(exc) from exc
    n = len(expand_configurations(spec))
    console.print(f"[green]ok[/] {config}: task {spec.task}, {len(spec.stages)} stages, {n} configurations")


@app.command()
def configs(
    config: ConfigArg,
    count: Annotated[bool, typer.Option("--count", help="Print only the number of configurations.")] = False,
) -> None:
    """List every configuration with its stable id (a hash of choices and parameters)."""
    from raypipe.spec.space import expand_configurations
    from raypipe.spec.validation import load_spec

    try:
        found = expand_configurations(load_spec(config))
    except RaypipeError as exc:
        raise fail(exc) from exc
    if count:
        print(len(found))
        return
    for c in found:
        print(f"{c.config_id}  {c.describe()}")


@data_app.command("generate")
def data_generate(
    out: Annotated[str, typer.Option(help="Parquet file (path or URI) to write.")],
    task: Annotated[
        str,
        typer.Option(
            help="The task whose generator to use (`raypipe tasks` lists them): idcard, digits, ..."
        ),
    ],
    profile: Annotated[
        str, typer.Option(help="Distribution profile (see `raypipe data profiles --task TASK`).")
    ] = "mixed",
    n: Annotated[int, typer.Option(help="Number of items.", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same bytes.", min=0)] = 0,
    param: Annotated[
        list[str] | None, typer.Option(help="Generator option KEY=VALUE, e.g. renderer=holdout.")
    ] = None,
) -> None:
    """Generate synthetic items of a task under a distribution profile."""
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    try:
        chosen = resolve_task(task)
        table = chosen.generate(profile, n, seed, **parse_pairs(param, "--param"))
        write_table(table, out)
    except RaypipeError as exc:
        raise fail(exc) from exc
    console.print(f"wrote {table.num_rows} {task} items ({profile}, seed {seed}) to {out}")


@data_app.command("profiles")
def data_profiles(task: Annotated[str, typer.Option(help="The task (`raypipe tasks` lists them).")]) -> None:
    """List a task's generator profiles."""
    from raypipe.spec.registry import resolve_task

    try:
        chosen = resolve_task(task)
    except RaypipeError as exc:
        raise fail(exc) from exc
    for profile in chosen.profiles:
        console.print(f"{profile.name:12} {profile.description}")


@app.command()
def tasks(
    name: Annotated[str | None, typer.Argument(help="A task to describe; omit to list them.")] = None,
) -> None:
    """List the tasks, or describe one: its metrics (the objective and SLA may name any), slice attributes,
    stage kinds with their built-in choices, and generator profiles."""
    from raypipe.spec.registry import STAGE_BUILTINS, resolve_task, task_names

    try:
        if name is None:
            for task_name in task_names():
                console.print(f"{task_name:10} {resolve_task(task_name).description}")
            return
        task = resolve_task(name)
    except RaypipeError as exc:
        raise fail(exc) from exc
    console.print(f"[bold]{task.name}[/] (version {task.version}): {task.description}")
    console.print(
        f"default objective: {task.default_objective(True)} (with truth), "
        f"{task.default_objective(False)} (without)"
    )
    console.print("metrics:")
    for m in task.metrics:
        flags = (
            ("higher" if m.higher_is_better else "lower")
            + " is better"
            + ("" if m.needs_truth else ", label-free")
        )
        console.print(f"  {m.name:20} {m.description} ({flags}; {m.interval} interval)")
    console.print("slice attributes: " + ", ".join(f"{a.name} ({a.kind})" for a in task.slice_attributes))
    console.print("stage kinds: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in task.stages.items()))
    console.print("task-neutral: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in STAGE_BUILTINS.items()))
    console.print("profiles: " + ", ".join(task.profile_names()))


def progress_printer(progress: Progress) -> Callable[[ProgressEvent], None]:
    from raypipe.evaluate.context import ClusterFound, Note, RowsDone

    task = progress.add_task("evaluating", total=None)

    def on_progress(event: ProgressEvent) -> None:
        match event:
            case ClusterFound(cpus, gpus):
                gpu = f", {gpus:g} GPU" if gpus else ", no GPU: GPU choices run on CPU"
                progress.console.print(f"Ray cluster: {cpus:g} CPU{gpu}")
            case RowsDone(done, total):
                progress.update(task, completed=done, total=total)
            case Note(text):
                progress.console.print(f"  {text}")

    return on_progress


def progress_bar(terminal: TextIO | None = None) -> Progress:
    """A progress bar on the terminal (`terminal`: where the terminal went while Ray's output is captured)."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    shown = (
        console
        if terminal is None
        else Console(file=terminal, width=console.width if not sys.stdout.isatty() else None)
    )
    return Progress(*columns, TimeRemainingColumn(), console=shown)


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="Pipeline spec (YAML); omit with --resume.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset instead of the spec's: path, URI, hf:REPO.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N items.", min=1)] = None,
    out: Annotated[
        str | None, typer.Option(help="Run directory, path or URI (default runs/<name>-<time>).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster ('auto'); default: embedded.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Finish the run in this directory after a crash.")
    ] = None,
    share: Annotated[bool, typer.Option(help="Compute each shared prefix once per item.")] = True,
    reuse: Annotated[
        bool, typer.Option(help="Compute each byte-identical stage input once per item.")
    ] = True,
    cache: Annotated[bool, typer.Option(help="Read and fill the persistent stage-output cache.")] = True,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache directory (default .raypipe/engine/cache).")
    ] = None,
    search: Annotated[
        str,
        typer.Option(
            help="exhaustive: every configuration on every item; racing: stop "
            "configurations once they are out with confidence."
        ),
    ] = "exhaustive",
    search_param: Annotated[list[str] | None, typer.Option(help="Search parameter KEY=VALUE.")] = None,
    until_decided: Annotated[
        bool,
        typer.Option(
            help="Race over the items in a seeded random order, drop what the decision rule excludes, and "
            "stop as soon as the pick is certified (or the data, or --max-items, end); a generated dataset "
            "grows with fresh items until then."
        ),
    ] = False,
    max_items: Annotated[
        int | None, typer.Option(help="With --until-decided: the most items to spend.", min=1)
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="Override the spec's decision.epsilon (how far below the best).")
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="Override the spec's decision.delta (the chance the pick is wrong).")
    ] = None,
    calibrate: Annotated[
        bool, typer.Option(help="Time a sample of calls alone to turn CPU time into service-time latency.")
    ] = True,
    top: Annotated[int, typer.Option(help="Rows of the ranked table to print.")] = 20,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own log lines on the terminal.")] = False,
) -> None:
    """Evaluate every configuration over the dataset on Ray; write Parquet results and print the ranking.

    Results stream to RUN_DIR/parts as items finish; a killed run is finished with --resume RUN_DIR."""
    from raypipe.engine.cache import default_cache_dir
    from raypipe.engine.logs import ray_logs_to
    from raypipe.engine.rundir import Request
    from raypipe.evaluate import driver

    if (config is None) == (resume is None):
        raise fail(RaypipeError("give a spec to run, or --resume RUN_DIR (not both)"))
    options = {
        "out": out,
        "dataset": dataset,
        "limit": limit,
        "address": address,
        "share_prefixes": share,
        "reuse_identical": reuse,
        "cache_dir": str((cache_dir or default_cache_dir()).resolve()) if cache else None,
        "calibrate": calibrate,
    }
    if until_decided:
        search = "racing"
        search_param = [*(search_param or []), "until_decided=true"]
    if max_items is not None:
        if not until_decided:
            raise fail(RaypipeError("--max-items goes with --until-decided"))
        search_param = [*(search_param or []), f"max_items={max_items}"]
    try:
        decision = {k: v for k, v in {"epsilon": epsilon, "delta": delta}.items() if v is not None}
        request = (
            Request.load(resume) if resume else build_request(config, search, search_param, options, decision)
        )
        if resume and address:  # the cluster may have moved since the run started
            request = request.model_copy(update={"address": address})
        with ray_logs_to(request.out, verbose) as terminal, progress_bar(terminal) as progress:
            # this process ends with the run: its embedded Ray stops while the result files are written
            result = driver.evaluate(request, progress_printer(progress), release_ray=True)
    except RaypipeError as exc:
        raise fail(exc) from exc
    print_result(result, top)


def build_request(
    config: Path,
    search: str,
    search_param: list[str] | None,
    options: dict[str, Any],
    decision: dict[str, float] | None = None,
):
    """The typed request `raypipe run` (and jobs/evaluate.py) sends to evaluate; `decision` overrides the
    spec's epsilon and delta (checked as the spec's own are)."""
    from raypipe.engine.rundir import Request, SearchRequest, default_out
    from raypipe.spec.validation import load_spec, parse_spec

    spec = load_spec(config)
    if decision:
        raw = spec.model_dump(exclude_unset=False)
        raw["decision"] = raw["decision"] | decision
        spec = parse_spec(raw, source="--epsilon/--delta")
    params = parse_pairs(search_param, "--search-param")
    options = {**options, "out": options.get("out") or default_out(spec.name)}
    return Request(spec=spec, search=SearchRequest(name=search, params=params), **options)


def print_result(result, top: int | None) -> None:
    from raypipe.report.reading import RunView

    view = RunView(result.run_dir)
    view.print_ranked(console, top)
    work = result.manifest["work"]
    calls = ", ".join(f"{k} {v['calls']}" for k, v in work.items())
    hits = sum(v["cache_hits"] for v in work.values())
    console.print(f"stage calls: {calls}; cache hits {hits}; wall {result.manifest['wall_seconds']:.1f} s")
    search = result.manifest["search"]
    if search.get("stopped"):
        console.print(f"{search['method']}: {search['stopped']}")
    if search.get("engine_fraction") is not None:
        console.print(
            f"{search['method']}: {search['engine_fraction']:.0%} of exhaustive's estimated engine time"
        )
    if result.run_dir.exists("report.html"):
        console.print(f"report: {result.run_dir.path('report.html')}")
    console.print(f"run directory: [bold]{result.run_dir}[/]")


@app.command()
def report(
    run_dir: RunDirArg,
    top: Annotated[int | None, typer.Option(help="Rows to print (default all).")] = None,
    slices: Annotated[bool, typer.Option(help="Also print the best configuration per slice.")] = True,
    html: Annotated[
        bool, typer.Option(help="(Re)write the self-contained report.html (any run, old ones too).")
    ] = False,
    out: Annotated[
        str | None, typer.Option(help="Where to write the HTML (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Print a run's ranked table (and slice winners) again and write pareto.png beside its results."""
    from raypipe.report.reading import RunView

    try:
        view = RunView(run_dir)
        view.print_ranked(console, top)
        if slices:
            view.print_slices(console)
        console.print(f"wrote {view.write_pareto_plot()}")
        if html or out:
            from raypipe.report.html import write_run_report

            console.print(f"wrote {write_run_report(view.run_dir, out)}")
    except RaypipeError as exc:
        raise fail(exc) from exc


@app.command()
def recommend(
    run_dir: RunDirArg,
    mix: Annotated[
        list[str] | None,
        typer.Option(
            help="ATTRIBUTE=BIN:WEIGHT, repeatable, one attribute (e.g. profile=rotated:0.3). A number "
            "names the bin of a continuous attribute that holds it. Bins left out share the rest as in "
            "the run."
        ),
    ] = None,
    sla: Annotated[
        list[str] | None,
        typer.Option(
            help="SLA override: p95_latency_ms=MS, min.METRIC=BOUND or max.METRIC=BOUND (repeatable)."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Rows of the reweighted ranking to print.")] = 10,
) -> None:
    """Recommend a configuration for your production mix: the run's per-slice results reweighted to it.

    Without --mix it recommends for the run's own data. It prints the recommended configuration (the fastest
    of those tied with the best), its expected objective and interval, its p95, the configurations tied with
    it, and what changed against the run's own mix."""
    from raypipe.report.advice import advise

    try:
        advise(run_dir, mix or [], parse_pairs(sla, "--sla"), top, console)
    except RaypipeError as exc:
        raise fail(exc) from exc


from raypipe.cli.monitor import monitor_app  # noqa: E402 - sub-apps and commands of their own modules
from raypipe.cli.search import search_app  # noqa: E402
from raypipe.evaluate.submit import SUBMIT_CONTEXT, submit_command  # noqa: E402

app.add_typer(monitor_app, name="monitor")
app.add_typer(search_app, name="search")
app.command("submit", context_settings=SUBMIT_CONTEXT)(submit_command)

cache_app = typer.Typer(help="Inspect or clear the persistent stage-output cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheDir = Annotated[Path | None, typer.Option(help="Cache directory (default .raypipe/engine/cache).")]


@cache_app.command("info")
def cache_info(cache_dir: CacheDir = None) -> None:
    """Where the cache is, how many stage outputs it holds, and its size against its bound."""
    from raypipe.engine.cache import CacheConfig, StageCache, default_cache_dir

    stats = StageCache(CacheConfig(str((cache_dir or default_cache_dir()).resolve()))).stats()
    console.print(
        f"{stats['directory']}: {stats['entries']} entries, {stats['bytes'] / 2**20:.1f} MiB "
        f"of {stats['size_limit_bytes'] / 2**30:.1f} GiB"
    )


@cache_app.command("clear")
def cache_clear(cache_dir: CacheDir = None) -> None:
    """Remove every cached stage output."""
    from raypipe.engine.cache import CacheConfig, StageCache, default_cache_dir

    removed = StageCache(CacheConfig(str((cache_dir or default_cache_dir()).resolve()))).clear()
    console.print(f"removed {removed} cached stage outputs")
