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


def evaluate(
    spec: PipelineSpec,
    dataset: str | None = None,
    limit: int | None = None,
    out: str | None = None,
    address: str | None = None,
    options: runner.RunOptions = runner.RunOptions(),
    on_progress: Callable[[str, float, float], None] | None = None,
) -> RunResult:
    """Evaluate every configuration of `spec` over the dataset; returns the run directory and its table."""
    configs = expand_configurations(spec)
    if not configs:
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
    }
    results.atomic_write_json(record, run_dir / RUN_FILE)
    return _execute_and_finalize(spec, configs, table, run_dir, address, options, on_progress, 0)


def resume(
    run_dir: Path, address: str | None = None, on_progress: Callable[[str, float, float], None] | None = None
) -> RunResult:
    """Finish a run whose driver died: items with every configuration's row are kept, the rest rerun."""
    if not (run_dir / RUN_FILE).is_file():
        raise RaypipeError(f"{run_dir} is not a run directory ({RUN_FILE} missing): nothing to resume")
    record = json.loads((run_dir / RUN_FILE).read_text())
    spec = parse_spec(record["spec"], source=str(run_dir / RUN_FILE))
    options = runner.RunOptions(**{**record["options"], "cache": _cache_config(record["options"]["cache"])})
    configs = expand_configurations(spec)
    table = resolve_dataset(spec, record["dataset"], record["limit"])
    preflight(spec)
    rows = results.read_parts(run_dir)
    done = results.complete_items(rows, len(configs)) if rows is not None else set()
    remaining = table.filter(
        pc.invert(pc.is_in(table.column("item_id"), pa.array(sorted(done), pa.string())))
    )
    first_part = results.next_part_index(run_dir)
    prior = float(record.get("wall_seconds", 0.0))
    return _execute_and_finalize(
        spec,
        configs,
        table,
        run_dir,
        address or record["address"],
        options,
        on_progress,
        first_part,
        remaining=remaining,
        prior_wall_s=prior,
    )


def _cache_config(raw: dict | None) -> CacheConfig | None:
    return CacheConfig(**raw) if raw else None


def _execute_and_finalize(
    spec: PipelineSpec,
    configs: list[Configuration],
    table: pa.Table,
    run_dir: Path,
    address: str | None,
    options: runner.RunOptions,
    on_progress: Callable[[str, float, float], None] | None,
    first_part: int,
    remaining: pa.Table | None = None,
    prior_wall_s: float = 0.0,
) -> RunResult:
    todo = table if remaining is None else remaining
    runner.connect(address or spec.ray.address, spec.ray.num_cpus)
    cpus, gpus = runner.cluster_resources()
    plans = runner.plan_operators(spec, cpus, gpus)
    if on_progress:
        on_progress("plan", cpus, gpus)
        for p in plans:
            on_progress(f"operator {p.label}", 0, 0)
    started = time.perf_counter()
    total, done = todo.num_rows * len(configs), 0
    if todo.num_rows:
        for index, batch in enumerate(
            runner.execute(stage_inputs(todo), configs, plans, options), first_part
        ):
            results.write_part(run_dir, batch, index)
            done += batch.num_rows
            if on_progress:
                on_progress("rows", done, total)
    wall = prior_wall_s + time.perf_counter() - started
    return finalize(spec, configs, table, run_dir, wall, options, cpus, gpus)


def finalize(
    spec: PipelineSpec,
    configs: list[Configuration],
    table: pa.Table,
    run_dir: Path,
    wall_s: float,
    options: runner.RunOptions,
    cpus: float,
    gpus: float,
) -> RunResult:
    """Write items, configs, slices and the manifest from the streamed parts."""
    rows = results.read_parts(run_dir)
    if rows is None:
        raise DatasetError("the run produced no rows")
    stage_names = configs[0].stage_names
    work = results.work_counts(rows, stage_names)
    items = results.assemble_items(rows, configs, item_attributes(table))
    config_table = results.aggregate_configs(items, stage_names, spec.sla)
    slices = results.best_per_slice(items, config_table, list(data.SLICE_ATTRIBUTES), spec.sla)
    results.atomic_write_parquet(items, run_dir / "items.parquet")
    results.atomic_write_parquet(config_table, run_dir / "configs.parquet")
    results.atomic_write_parquet(slices, run_dir / "slices.parquet")
    manifest = build_manifest(spec, configs, table, work, wall_s, options, cpus, gpus)
    results.atomic_write_json(manifest, run_dir / "manifest.json")
    results.remove_parts(run_dir)
    return RunResult(run_dir, config_table, manifest)


def build_manifest(
    spec: PipelineSpec,
    configs: list[Configuration],
    table: pa.Table,
    work: dict[str, dict[str, int]],
    wall_s: float,
    options: runner.RunOptions,
    cpus: float,
    gpus: float,
) -> dict:
    n_items = table.num_rows
    shared = invocations_per_item(configs, shared=True)
    for k, name in enumerate(configs[0].stage_names):
        work[name]["calls_with_prefix_sharing_only"] = shared[k] * n_items
        work[name]["calls_without_sharing"] = len(configs) * n_items
    return {
        "spec": spec.model_dump(mode="json"),
        "n_configs": len(configs),
        "n_items": n_items,
        "dataset_fingerprint": data.dataset_fingerprint(table),
        "options": asdict(options),
        "work": work,
        "wall_seconds": round(wall_s, 3),
        "created": datetime.now(UTC).isoformat(),
        "versions": package_versions(),
        "hardware": {"platform": platform.platform(), "cluster_cpus": cpus, "cluster_gpus": gpus},
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
