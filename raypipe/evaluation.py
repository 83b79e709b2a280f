"""One evaluation run from spec to results: data, preflight, Ray execution, then the result files.

The CLI and the job entrypoint both call `evaluate`; nothing here builds Ray Data plans (runner.py does).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from raypipe import data, results, runner
from raypipe.cache import CacheConfig
from raypipe.errors import DatasetError, RaypipeError
from raypipe.registry import resolve
from raypipe.space import Configuration, expand_configurations, invocations_per_item
from raypipe.spec import PipelineSpec, parse_spec

RUN_FILE = "run.json"
SEARCHES = ("exhaustive", "halving")

PACKAGES = (
    "raypipe",
    "ray",
    "polars",
    "pyarrow",
    "numpy",
    "opencv-python-headless",
    "pytesseract",
    "onnxruntime",
    "rapidocr-onnxruntime",
    "easyocr",
    "torch",
    "tensorflow-cpu",
)


@dataclass
class RunResult:
    run_dir: Path
    configs: pl.DataFrame
    manifest: dict


def resolve_dataset(spec: PipelineSpec, override: str | None, limit: int | None) -> pa.Table:
    """Load the dataset, generating the spec's synthetic one first when its file is absent."""
    source = override or spec.dataset.source
    gen = spec.dataset.generate
    if override is None and gen is not None and not source.startswith("hf:") and not Path(source).exists():
        Path(source).parent.mkdir(parents=True, exist_ok=True)
        data.write_dataset(data.generate_dataset(gen.profile, gen.n, gen.seed), Path(source))
    return data.load_dataset(source, limit=limit or spec.dataset.limit)


def preflight(spec: PipelineSpec) -> None:
    """Fail before Ray starts when a choice cannot run here (missing binary, language pack, weights)."""
    for stage in spec.stages:
        for choice in stage.choices:
            check = getattr(resolve(stage.registry_kind, choice.name), "preflight", None)
            if check is not None:
                check(**choice.params)


def stage_inputs(table: pa.Table) -> pa.Table:
    """What flows through the stages: id, encoded image, and the truth the scorer needs."""
    truth = [c for c in table.column_names if c.startswith("truth_")]
    images = pc.struct_field(table.column("image"), "bytes")
    return pa.table(
        {"item_id": table.column("item_id"), "image_bytes": images, **{c: table.column(c) for c in truth}}
    )


def item_attributes(table: pa.Table) -> pl.DataFrame:
    cols = ["item_id", *[a for a in data.SLICE_ATTRIBUTES if a in table.column_names]]
    return pl.from_arrow(table.select(cols))


def new_run_dir(spec: PipelineSpec, out: str | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) if out else Path("runs") / f"{spec.name}-{stamp}"
    if (run_dir / RUN_FILE).exists():
        raise RaypipeError(
            f"{run_dir} already holds a run: `raypipe run --resume {run_dir}` finishes it; "
            "or choose another --out"
        )
    results.parts_dir(run_dir).mkdir(parents=True, exist_ok=True)
    return run_dir


@dataclass
class RunContext:
    """A run in progress: its spec, configurations, data, Ray plan, and where its parts go."""

    spec: PipelineSpec
    configs: list[Configuration]
    table: pa.Table
    run_dir: Path
    options: runner.RunOptions
    plans: list[runner.OperatorPlan]
    cpus: float
    gpus: float
    on_progress: Callable[[str, float, float], None] | None = None
    next_part: int = 0
    rows_done: int = 0
    rows_total: int = 0

    def stream(self, todo: pa.Table, config_indices: list[int]) -> None:
        """Run the given configurations over `todo`, writing each result batch as a part file."""
        if not todo.num_rows or not config_indices:
            return
        subset = [self.configs[i] for i in config_indices]
        to_global = pa.array(config_indices, pa.int64())
        for batch in runner.execute(stage_inputs(todo), subset, self.plans, self.options):
            local = batch.column("config_index")
            batch = batch.set_column(
                batch.column_names.index("config_index"), "config_index", to_global.take(local)
            )
            results.write_part(self.run_dir, batch, self.next_part)
            self.next_part += 1
            self.rows_done += batch.num_rows
            if self.on_progress:
                self.on_progress("rows", self.rows_done, max(self.rows_total, self.rows_done))


def open_run(
    spec: PipelineSpec,
    table: pa.Table,
    run_dir: Path,
    address: str | None,
    options: runner.RunOptions,
    on_progress: Callable[[str, float, float], None] | None,
) -> RunContext:
    """Connect to Ray and plan the operators; says where each choice runs."""
    configs = expand_configurations(spec)
    runner.connect(address or spec.ray.address, spec.ray.num_cpus)
    cpus, gpus = runner.cluster_resources()
    plans = runner.plan_operators(spec, cpus, gpus)
    if on_progress:
        on_progress("plan", cpus, gpus)
        for p in plans:
            on_progress(f"operator {p.label}", 0, 0)
    ctx = RunContext(spec, configs, table, run_dir, options, plans, cpus, gpus, on_progress)
    ctx.next_part = results.next_part_index(run_dir)
    ctx.rows_total = table.num_rows * len(configs)
    return ctx


def evaluate(
    spec: PipelineSpec,
    dataset: str | None = None,
    limit: int | None = None,
    out: str | None = None,
    address: str | None = None,
    options: runner.RunOptions = runner.RunOptions(),
    on_progress: Callable[[str, float, float], None] | None = None,
    search: str = "exhaustive",
    first_round_items: int = 8,
) -> RunResult:
    """Evaluate the configurations of `spec` over the dataset: all of them on every item (exhaustive), or
    successive halving; returns the run directory and its table."""
    if search not in SEARCHES:
        raise RaypipeError(f"unknown search '{search}': choose one of {', '.join(SEARCHES)}")
    if not expand_configurations(spec):
        raise RaypipeError("the exclusions leave no configuration to run")
    table = resolve_dataset(spec, dataset, limit)
    preflight(spec)
    run_dir = new_run_dir(spec, out)
    record = {
        "spec": spec.model_dump(mode="json"),
        "dataset": dataset,
        "limit": limit,
        "options": asdict(options),
        "address": address,
        "search": search,
    }
    results.atomic_write_json(record, run_dir / RUN_FILE)
    ctx = open_run(spec, table, run_dir, address, options, on_progress)
    started = time.perf_counter()
    if search == "halving":
        from raypipe.search import successive_halving

        outcome = successive_halving(ctx, first=first_round_items)
    else:
        ctx.stream(table, list(range(len(ctx.configs))))
        outcome = None
    return finalize(ctx, time.perf_counter() - started, outcome)


def resume(
    run_dir: Path, address: str | None = None, on_progress: Callable[[str, float, float], None] | None = None
) -> RunResult:
    """Finish an exhaustive run whose driver died: items with every configuration's row are kept, the
    rest run again; rows are keyed by (item, configuration), so none is lost or duplicated."""
    if not (run_dir / RUN_FILE).is_file():
        raise RaypipeError(f"{run_dir} is not a run directory ({RUN_FILE} missing): nothing to resume")
    record = json.loads((run_dir / RUN_FILE).read_text())
    if record.get("search", "exhaustive") != "exhaustive":
        raise RaypipeError(f"{run_dir} was a {record['search']} search: resume finishes exhaustive runs only")
    spec = parse_spec(record["spec"], source=str(run_dir / RUN_FILE))
    cache = CacheConfig(**record["options"]["cache"]) if record["options"]["cache"] else None
    options = runner.RunOptions(**{**record["options"], "cache": cache})
    table = resolve_dataset(spec, record["dataset"], record["limit"])
    preflight(spec)
    ctx = open_run(spec, table, run_dir, address or record["address"], options, on_progress)
    rows = results.read_parts(run_dir)
    done = results.complete_items(rows, len(ctx.configs)) if rows is not None else set()
    keep = pc.invert(pc.is_in(table.column("item_id"), pa.array(sorted(done), pa.string())))
    started = time.perf_counter()
    ctx.stream(table.filter(keep), list(range(len(ctx.configs))))
    return finalize(ctx, time.perf_counter() - started, None)


def finalize(ctx: RunContext, wall_s: float, search: dict | None) -> RunResult:
    """Write items, configs, slices and the manifest from the streamed parts."""
    rows = results.read_parts(ctx.run_dir)
    if rows is None:
        raise DatasetError("the run produced no rows")
    stage_names = ctx.configs[0].stage_names
    work = results.work_counts(rows, stage_names)
    items = results.assemble_items(rows, ctx.configs, item_attributes(ctx.table))
    config_table = results.aggregate_configs(items, stage_names, ctx.spec.sla)
    if search:
        dropped = pl.DataFrame(
            search.pop("dropped"),
            schema={"config_id": pl.String, "dropped_round": pl.Int64, "drop_reason": pl.String},
        )
        config_table = results.survivors_first(config_table.join(dropped, on="config_id", how="left"))
        results.atomic_write_parquet(pl.DataFrame(search["rounds"]), ctx.run_dir / "search.parquet")
    slices = results.best_per_slice(items, config_table, list(data.SLICE_ATTRIBUTES), ctx.spec.sla)
    results.atomic_write_parquet(items, ctx.run_dir / "items.parquet")
    results.atomic_write_parquet(config_table, ctx.run_dir / "configs.parquet")
    results.atomic_write_parquet(slices, ctx.run_dir / "slices.parquet")
    manifest = build_manifest(ctx, work, wall_s)
    if search:
        manifest["search"] = search
    results.atomic_write_json(manifest, ctx.run_dir / "manifest.json")
    results.remove_parts(ctx.run_dir)
    return RunResult(ctx.run_dir, config_table, manifest)


def build_manifest(ctx: RunContext, work: dict[str, dict[str, float]], wall_s: float) -> dict:
    n_items, configs = ctx.table.num_rows, ctx.configs
    shared = invocations_per_item(configs, shared=True)
    for k, name in enumerate(configs[0].stage_names):
        work[name]["calls_with_prefix_sharing_only"] = shared[k] * n_items
        work[name]["calls_without_sharing"] = len(configs) * n_items
    return {
        "spec": ctx.spec.model_dump(mode="json"),
        "n_configs": len(configs),
        "n_items": n_items,
        "dataset_fingerprint": data.dataset_fingerprint(ctx.table),
        "options": asdict(ctx.options),
        "work": work,
        "engine_seconds": round(sum(w["engine_seconds"] for w in work.values()), 3),
        "wall_seconds": round(wall_s, 3),
        "created": datetime.now(UTC).isoformat(),
        "versions": package_versions(),
        "hardware": {"platform": platform.platform(), "cluster_cpus": ctx.cpus, "cluster_gpus": ctx.gpus},
        "git_revision": git_revision(),
    }


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
