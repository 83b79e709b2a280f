"""One evaluation run from request to results: data, preflight, the search on Ray, calibration, result files.

The CLI and the job entrypoint both build a `Request` and call `evaluate`; nothing here builds Ray Data
plans (ray.pipeline does). A request saved in a run directory that has no results yet is resumed: items
that already have every configuration's row are kept, the rest run again, and rows are keyed by (item,
configuration), so none is lost or duplicated.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.decide import results, slices
from raypipe.decide.decision import Decision, DecisionSettings
from raypipe.engine import latency
from raypipe.engine.cache import CacheConfig
from raypipe.engine.plan import RunOptions, fuse, group_label, plan_operators, resolve_choices
from raypipe.engine.rundir import (
    CALIBRATION,
    CONFIGS,
    ITEMS,
    MANIFEST,
    REQUEST,
    SEARCH,
    SLICES,
    Request,
    RunDir,
    filesystem,
)
from raypipe.errors import ConfigError, DatasetError, RaypipeError
from raypipe.evaluate.context import ClusterFound, Counters, Note, Progress, RunContext, RunPlan
from raypipe.evaluate.manifest import build_manifest
from raypipe.ray import cluster, pipeline
from raypipe.ray.calibration import calibrate as time_pairs_alone
from raypipe.ray.metrics import LiveMetrics
from raypipe.search.base import Search, SearchOutcome
from raypipe.spec.registry import resolve, resolve_search
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.space import Configuration, expand_configurations
from raypipe.spec.task import Metric, Task
from raypipe.spec.validation import check_components, task_of

CALIBRATION_ITEMS = 6


@dataclass
class RunResult:
    run_dir: RunDir
    configs: pl.DataFrame
    manifest: dict


def resolve_dataset(spec: PipelineSpec, task: Task, override: str | None, limit: int | None) -> pa.Table:
    """Load the dataset, generating the spec's synthetic one first when its file is absent."""
    source = override or spec.dataset.source
    gen = spec.dataset.generate
    if override is None and gen is not None and _absent(source):
        from raypipe.engine.datasets import write_table

        write_table(task.generate(gen.profile, gen.n, gen.seed, **gen.params), source)
    return task.load(source, limit or spec.dataset.limit)


def _absent(source: str) -> bool:
    if ":" in source.split("/", 1)[0] and "://" not in source:
        return False  # a named source such as hf:repo or sklearn:digits
    fs, path = filesystem(source)
    from pyarrow.fs import FileType

    return fs.get_file_info(path).type == FileType.NotFound


def preflight(spec: PipelineSpec, task: Task) -> None:
    """Fail before Ray starts when a choice cannot run here (missing binary, language pack, weights)."""
    for stage in spec.stages:
        for choice in stage.choices:
            check = getattr(resolve(stage.registry_kind, choice.name, task), "preflight", None)
            if check is not None:
                check(**choice.params)


def unwritable_notes(
    spec: PipelineSpec, task: Task, objective: Metric, table: pa.Table, configs: list[Configuration]
) -> list[str]:
    """Up front, for each choice whose text output is limited to an alphabet (`Stage.alphabet`): the
    objective and SLA minimums it scores 0 on every item by construction (`Task.unwritable`), and how many
    of `configs` (the spec's) that rules out. Said, not enforced: the run still runs them."""
    minimums = {metric: bound for metric, side, bound in spec.sla.bounds() if side == "min" and bound > 0}
    notes = []
    for k, stage in enumerate(spec.stages):
        for choice in stage.choices:
            limit = getattr(resolve(stage.registry_kind, choice.name, task), "alphabet", None)  # a plugin
            alphabet = limit(**choice.params) if limit is not None else None
            zero = task.unwritable(alphabet, table) if alphabet is not None else {}
            hit = [m for m in dict.fromkeys((objective.name, *minimums)) if m in zero]
            if not hit:
                continue
            n = sum(1 for c in configs if c.labels[k] == choice.key)
            bounds = [f", and they miss the SLA's {m} >= {minimums[m]:g}" for m in hit if m in minimums]
            misses = "".join(bounds)
            notes.append(
                f"{stage.name} {choice.key} writes only {_alphabet_words(alphabet)}: {zero[hit[0]]}, so "
                f"{' and '.join(hit)} is 0 on every item for its {n} configuration{'s' * (n != 1)} by "
                f"construction{misses}. They still run: leave the choice out, or give it a model that writes "
                "this script"
            )
    return notes


def _alphabet_words(alphabet: str) -> str:
    if all(c.isascii() or not c.isalnum() for c in alphabet):  # signs such as the euro's are not letters
        return "Latin letters, digits and punctuation"
    return f"{len(alphabet)} characters"


def choose_objective(spec: PipelineSpec, task: Task, table: pa.Table) -> Metric:
    """The spec's objective, or the task's default for data with or without truth."""
    has_truth = task.has_truth(table)
    name = spec.objective.metric if spec.objective else task.default_objective(has_truth)
    metric = task.metric(name)
    if metric.needs_truth and not has_truth:
        raise ConfigError(
            [
                f"objective.metric: '{name}' needs truth, and this dataset has none: choose a label-free "
                "metric "
                f"({', '.join(m.name for m in task.metrics if not m.needs_truth)})"
            ]
        )
    return metric


def dataset_fingerprint(task: Task, table: pa.Table) -> str:
    """A short stable hash of the items' ids and encoded inputs."""
    digest = hashlib.sha256()
    for item_id, data in zip(
        table.column("item_id").to_pylist(), task.inputs(table).to_pylist(), strict=True
    ):
        digest.update(str(item_id).encode())
        digest.update(len(data or b"").to_bytes(8, "little"))
        digest.update(data or b"")
    return digest.hexdigest()[:16]


def item_attributes(task: Task, table: pa.Table) -> pl.DataFrame:
    names = [a.name for a in task.slice_attributes if a.name in table.column_names]
    return pl.from_arrow(table.select(["item_id", *names]))


def run_options(request: Request, search: Search | None = None) -> RunOptions:
    cache = CacheConfig(request.cache_dir) if request.cache_dir else None
    cap = search.max_batch_size if search is not None else None
    return RunOptions(
        request.share_prefixes,
        request.reuse_identical,
        cache,
        request.max_actors_per_pool,
        cap,
        request.fuse_light_stages,
    )


def evaluate(request: Request, on_progress: Progress | None = None, release_ray: bool = False) -> RunResult:
    """Run `request`: every configuration its search asks for, over its dataset; returns the results.

    A run directory that holds this request but no results yet (its driver was killed) is resumed.
    `release_ray`: stop the embedded Ray this process started as soon as calibration is done, while the
    result files are written (`cluster.stopping`; for a process that ends with the run)."""
    spec = request.spec
    problems = check_components(spec)
    if problems:
        raise ConfigError(problems, source="spec")
    task = task_of(spec)
    run_dir = RunDir(request.out)
    resuming = run_dir.exists(REQUEST)
    if run_dir.exists(MANIFEST):
        raise RaypipeError(f"{run_dir} already holds a finished run: choose another --out")
    configs = expand_configurations(spec)
    if not configs:
        raise RaypipeError("the exclusions leave no configuration to run")
    search = resolve_search(request.search.name)(**request.search.params)
    if resuming and not search.resumable:
        raise RaypipeError(
            f"{run_dir} was a {request.search.name} search: --resume finishes exhaustive runs only"
        )
    table = resolve_dataset(spec, task, request.dataset, request.limit)
    objective = choose_objective(spec, task, table)
    preflight(spec, task)
    cluster.start(request.address or spec.ray.address, spec.ray.num_cpus)  # the rest overlaps Ray's start
    if on_progress:
        for note in unwritable_notes(spec, task, objective, table, configs):
            on_progress(Note(note))
    if not resuming:
        run_dir.make()
        request.save(run_dir)
    ctx = open_run(request, task, objective, table, run_dir, on_progress, search)
    if resuming:
        ctx.table = remaining_items(ctx)
        # they run again for every configuration: their earlier rows go, so each pair keeps one row
        run_dir.drop_from_parts(set(ctx.table.column("item_id").to_pylist()))
    started = time.perf_counter()
    outcome = search.run(ctx)
    wall_s = time.perf_counter() - started
    return finalize(ctx, request, wall_s, outcome, release_ray)


def remaining_items(ctx: RunContext) -> pa.Table:
    """The items that lack a row for some configuration."""
    rows = ctx.run_dir.read_parts(["item_id", "config_index"])
    done = results.complete_items(rows, len(ctx.configs)) if rows is not None else set()
    keep = pc.invert(pc.is_in(ctx.table.column("item_id"), pa.array(sorted(done), pa.string())))
    return ctx.table.filter(keep)


def open_run(
    request: Request,
    task: Task,
    objective: Metric,
    table: pa.Table,
    run_dir: RunDir,
    on_progress: Progress | None,
    search: Search | None = None,
) -> RunContext:
    """Connect to Ray and plan the operators; says where each choice runs."""
    spec = request.spec
    configs = expand_configurations(spec)
    resolved = resolve_choices(spec, task)  # while Ray starts (`cluster.start`)
    cluster.connect(request.address or spec.ray.address, spec.ray.num_cpus)
    cpus, gpus = cluster.cluster_resources()
    plans = plan_operators(spec, task, cpus, gpus, request.max_actors_per_pool, table.num_rows, resolved)
    if on_progress:
        on_progress(ClusterFound(cpus, gpus))
        on_progress(Note(f"objective {objective.name}: {objective.description}"))
        for group in fuse(plans, request.fuse_light_stages):
            on_progress(Note(f"operator {group_label(group)}"))
    plan = RunPlan(spec, task, objective, configs, plans, run_options(request, search), cpus, gpus)
    counters = Counters(
        next_part=run_dir.next_part_index(),
        rows_total=table.num_rows * len(configs),
        on_progress=on_progress,
        metrics=LiveMetrics(
            spec.name, list(configs[0].stage_names), objective.name, [c.config_id for c in configs]
        ),
    )
    return RunContext(plan, run_dir, table, table, request.dataset, counters)


def calibrate(ctx: RunContext, ran: list[int], attributes: pl.DataFrame) -> pl.DataFrame:
    """Time every choice of every stage alone on a sample of items (`latency.calibration_plan`): the basis
    of service-time latency."""
    plan = latency.calibration_plan(ctx.configs, sorted(ran))
    first = ctx.task.slice_attributes[0].name if ctx.task.slice_attributes else None
    sample = set(latency.sample_items(attributes, CALIBRATION_ITEMS, first))
    ids = ctx.dataset.column("item_id").to_pylist()
    keep = pa.array([i in sample for i in ids])
    chosen_items = ctx.dataset.filter(keep)
    data = dict(
        zip(
            chosen_items.column("item_id").to_pylist(), ctx.task.inputs(chosen_items).to_pylist(), strict=True
        )
    )
    # item by item: a run of the plan starts from what an earlier run of the same item computed
    pairs = [(item, c, ctx.configs[c].labels[:depth]) for item in sorted(sample) for c, depth in plan]
    calls = latency.plan_calls(ctx.configs, plan) * len(sample)
    ctx.counters.say(f"calibrating latency: {calls} stage calls alone over {len(sample)} items")
    stream = pipeline.stream_processes()  # before calibration takes the RunControl over
    table = time_pairs_alone(
        ctx.task,
        ctx.plan.plans,
        list(ctx.configs[0].stage_names),
        list(data.items()),
        pairs,
        stream,
        ctx.counters.say,
    )
    if table.num_rows == 0:
        return pl.DataFrame(schema=latency.CALIBRATION_SCHEMA)
    return pl.from_arrow(table).cast(latency.CALIBRATION_SCHEMA)


def latency_factors(ctx: RunContext, request: Request, items: pl.LazyFrame, attributes: pl.DataFrame):
    """(calibration rows, per-(stage, choice) factors): from calls timed alone; empty without calibration."""
    if not request.calibrate:
        return pl.DataFrame(schema=latency.CALIBRATION_SCHEMA), pl.DataFrame(schema=latency.FACTORS_SCHEMA)
    ran = items.select("config_index").unique().collect(engine="streaming")["config_index"].to_list()
    calibration = calibrate(ctx, ran, attributes)
    stage_names = list(ctx.configs[0].stage_names)
    sampled = items.filter(pl.col("item_id").is_in(calibration["item_id"].unique().implode()))
    sampled = sampled.collect(engine="streaming")
    return calibration, latency.factors(calibration, sampled, stage_names)


def finalize(
    ctx: RunContext, request: Request, wall_s: float, outcome: SearchOutcome, release_ray: bool = False
) -> RunResult:
    """Write items, configs, slices, calibration and the manifest from the streamed parts. Items are streamed
    from the parts into items.parquet; aggregates read back only the columns they need. Calibration is the
    last use of Ray (`release_ray`: `evaluate`)."""
    parts = ctx.run_dir.scan_parts()
    if parts is None:
        raise DatasetError("the run produced no rows")
    stage_names = list(ctx.configs[0].stage_names)
    attributes = item_attributes(ctx.task, ctx.dataset)
    work = results.work_counts(parts, tuple(stage_names))
    items = results.assemble_items(parts, ctx.configs, attributes)
    calibration, factor_table = latency_factors(ctx, request, items, attributes)
    with cluster.stopping() if release_ray else contextlib.nullcontext():  # no Ray from here on
        items = latency.service_latency(items, stage_names, factor_table)
        bins, edges = slices.bin_exprs(attributes, ctx.task, ctx.spec)
        items = pl.scan_parquet(ctx.run_dir.sink_parquet(ITEMS, items.with_columns(bins)))
        config_table = results.aggregate_configs(items, stage_names, ctx.task, ctx.objective, ctx.spec.sla)
        config_table = config_table.join(outcome.drops_frame(), on="config_id", how="left")
        config_table, decision = results.decide_and_rank(
            config_table, items, ctx.task, ctx.objective, ctx.spec.sla, decision_settings(ctx.spec)
        )
        slice_table = slices.slice_table(
            slice_view(items, ctx), config_table, ctx.task, ctx.objective, ctx.spec
        )
        ctx.run_dir.write_parquet(CONFIGS, config_table)
        ctx.run_dir.write_parquet(SLICES, slice_table)
        ctx.run_dir.write_parquet(CALIBRATION, calibration)
        if outcome.looks:
            ctx.run_dir.write_parquet(SEARCH, pl.DataFrame(outcome.looks))
        fingerprint = dataset_fingerprint(ctx.task, ctx.dataset)
        manifest = build_manifest(ctx, work, wall_s, outcome, factor_table, fingerprint)
        manifest["slices"] = {"bin_edges": edges, "min_items": ctx.spec.slices.min_items}
        manifest["decision"] = decision_entry(decision, outcome, ctx.dataset.num_rows)
        ctx.run_dir.write_json(MANIFEST, manifest)
        ctx.run_dir.remove_parts()
        write_report(ctx)
        return RunResult(ctx.run_dir, config_table, manifest)


def write_report(ctx: RunContext) -> None:
    """report.html and pareto.png beside the results. The results are already safe on disk, so a report
    that cannot be drawn is said, not raised: `raypipe report RUN_DIR --html` draws both again."""
    from raypipe.report.html import write_run_report
    from raypipe.report.reading import RunView

    try:
        write_run_report(ctx.run_dir)
        RunView(ctx.run_dir).write_pareto_plot()
    except Exception as exc:  # noqa: BLE001 - any failure of the page must not cost the run
        ctx.counters.say(f"report not written ({exc}); `raypipe report RUN_DIR --html` retries")


def decision_settings(spec: PipelineSpec) -> DecisionSettings:
    return DecisionSettings(spec.decision.epsilon, spec.decision.delta)


def decision_entry(decision: Decision, outcome: SearchOutcome, n_available: int) -> dict:
    """manifest.json's `decision`: the rule's outcome, and for a run that stopped early, on how many items."""
    entry = decision.to_json() | {"headline": decision.headline(), "items_available": n_available}
    stopped = outcome.summary.get("stopped") if outcome.summary else None
    if stopped:
        entry["stopped"] = stopped
    return entry


def slice_view(items: pl.LazyFrame, ctx: RunContext) -> pl.LazyFrame:
    """The columns slicing reads: ids, the objective, latency, the SLA's metrics and the bins (lazy)."""
    names = items.collect_schema().names()
    metrics = {ctx.objective.name, *(m for m, _, _ in ctx.spec.sla.bounds())}
    wanted = [
        "item_id",
        "config_id",
        "latency_total_ms",
        *sorted(metrics),
        *[c for c in names if c.startswith("bin_")],
    ]
    if not any(c.startswith("bin_") for c in names):
        return pl.LazyFrame(schema={c: pl.String for c in ("item_id", "config_id")})
    return items.select([c for c in wanted if c in names])
