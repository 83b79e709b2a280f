"""A monitoring reference written from a finished run, and read back with its task and version checked.

A profile directory holds:
- profile.json: the task (name and version), raypipe's version, the run it came from, the deployed
  configuration (its id, choices and parameters), the objective and the label-free metric, the features
  and the slice attribute whose mix is estimated;
- features.parquet: each reference item's features and slice bins (`source`: "run", or "reference" for
  the extra items of `--extra-items`, which need the slice attribute but no truth);
- items.parquet and configs.parquet: the run's per-item results of every configuration (metrics, outputs,
  service time, bins): what re-recommendation reweights;
- slices.parquet: per slice bin and configuration, n and the means of the objective and label-free metric;
- outputs.parquet: the deployed configuration's per-item label-free outputs, objective and bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from importlib.metadata import version

import polars as pl
import pyarrow as pa

from raypipe.decide.slices import bin_column, bin_expr
from raypipe.engine.rundir import Request, RunDir
from raypipe.errors import RaypipeError
from raypipe.monitor.features import compute_features
from raypipe.report.reading import RunView
from raypipe.spec.registry import resolve_task
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.task import Metric, Task

REFERENCE_FORMAT = 1
REFERENCE_JSON, FEATURES, ITEMS = "reference.json", "features.parquet", "items.parquet"
LEGACY_JSON = "profile.json"  # what references were called before issue 18; still read
CONFIGS, SLICES, OUTPUTS = "configs.parquet", "slices.parquet", "outputs.parquet"


@dataclass
class StoredReference:
    """A profile directory read back (local path or URI)."""

    store: RunDir
    meta: dict
    task: Task

    @cached_property
    def features(self) -> pl.DataFrame:
        return self.store.read_parquet(FEATURES)

    @cached_property
    def items(self) -> pl.DataFrame:
        return self.store.read_parquet(ITEMS)

    @cached_property
    def configs(self) -> pl.DataFrame:
        return self.store.read_parquet(CONFIGS)

    @cached_property
    def outputs(self) -> pl.DataFrame:
        return self.store.read_parquet(OUTPUTS)

    @property
    def spec(self) -> PipelineSpec:
        return PipelineSpec.model_validate(self.meta["spec"])

    @property
    def objective(self) -> Metric:
        return self.task.metric(self.meta["objective"])

    @property
    def label_free(self) -> Metric:
        return self.task.metric(self.meta["label_free"])

    @property
    def deployed(self) -> str:
        return self.meta["deployed"]["config_id"]

    @property
    def attribute(self) -> str | None:
        return self.meta["mix_attribute"]

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.spec.stages]

    def config_id(self, wanted: str | None) -> str:
        """The deployed configuration, or the run's configuration `wanted` names (an id or its prefix)."""
        return self.deployed if wanted is None else find_config(self.configs, wanted)

    def outputs_of(self, config_id: str) -> pl.DataFrame:
        """Per-item rows of one configuration: label-free outputs, objective, bins, service time."""
        return (
            self.outputs
            if config_id == self.deployed
            else self.items.filter(pl.col("config_id") == config_id)
        )


def find_config(configs: pl.DataFrame, wanted: str) -> str:
    ids = configs["config_id"].to_list()
    found = [c for c in ids if c.startswith(wanted)] if wanted else []
    if len(found) == 1:
        return found[0]
    what = "matches several configurations" if found else "is not a configuration of the run"
    raise RaypipeError(f"--config {wanted} {what} (configurations: {', '.join(c[:12] for c in ids)})")


def load_reference(location: str) -> StoredReference:
    """The reference at `location`; refused when written by another reference format or task version."""
    store = RunDir(location)
    found = next((n for n in (REFERENCE_JSON, LEGACY_JSON) if store.exists(n)), None)
    if found is None:
        raise RaypipeError(
            f"{store} holds no monitoring reference ({REFERENCE_JSON} missing): write one with "
            f"`raypipe monitor reference RUN_DIR --out {location}`"
        )
    meta = store.read_json(found)
    if meta.get("format") != REFERENCE_FORMAT:
        raise RaypipeError(
            f"reference {store} has format {meta.get('format')}; this raypipe reads format "
            f"{REFERENCE_FORMAT}: write the reference again from its run"
        )
    name, written = meta["task"]["name"], str(meta["task"]["version"])
    task = resolve_task(name)
    if str(task.version) != written:
        raise RaypipeError(
            f"reference {store} was written for task '{name}' version {written}, but this raypipe's task "
            f"'{name}' is version {task.version}: its features and metrics may differ; write a new reference "
            "from a run of this version"
        )
    return StoredReference(store, meta, task)


def run_dataset(view: RunView, source: str | None) -> pa.Table:
    """The run's own items: `source` or the run's dataset (regenerated in memory where it was generated and
    its file is gone), checked against the run's dataset fingerprint."""
    from raypipe.evaluate.driver import dataset_fingerprint

    request = Request.load(view.run_dir.location)
    spec, task = request.spec, view.task
    location = source or request.dataset or spec.dataset.source
    limit = request.limit or spec.dataset.limit
    try:
        table = task.load(location, limit)
    except RaypipeError:
        if source or request.dataset or spec.dataset.generate is None:
            raise
        gen = spec.dataset.generate
        table = task.generate(gen.profile, gen.n, gen.seed, **gen.params)
        table = table.slice(0, limit) if limit else table
    expected = view.manifest.get("dataset_fingerprint")
    if expected and dataset_fingerprint(task, table) != expected:
        raise RaypipeError(
            f"the dataset at {location} is not the one run {view.run_dir} evaluated (its fingerprint "
            "differs): pass the run's data with --dataset"
        )
    return table


def reference_features(view: RunView, table: pa.Table, source: str) -> pl.DataFrame:
    """Features of `table`'s items with their slice bins (binned as the run binned its items)."""
    features = compute_features(view.task, table).frame
    edges = view.manifest.get("slices", {}).get("bin_edges", {})
    names = [a for a in edges if a in table.column_names]
    attributes = pl.from_arrow(table.select(["item_id", *names])).with_columns(
        pl.col("item_id").cast(pl.String)
    )
    binned = attributes.select(
        "item_id", *[bin_expr(view.task.slice_attribute(a), edges[a]).alias(bin_column(a)) for a in names]
    )
    return features.join(binned, on="item_id", how="left").with_columns(pl.lit(source).alias("source"))


def default_attribute(items: pl.DataFrame, task: Task) -> str | None:
    """The first of the task's slice attributes whose bins split the run's items in two or more."""
    for attribute in task.slice_attributes:
        column = bin_column(attribute.name)
        if column in items.columns and items[column].drop_nulls().n_unique() >= 2:
            return attribute.name
    return None


def kept_items(view: RunView) -> pl.DataFrame:
    """The run's items without what monitoring never reads (predictions, per-stage timings)."""
    task = view.task
    wanted = {
        "config_id",
        "item_id",
        "error",
        "latency_total_ms",
        *view.stage_names,
        *task.metric_names(),
        *task.outputs,
    }
    columns = [c for c in view.items.columns if c in wanted or c.startswith("bin_")]
    return view.items.select(columns)


def slice_summary(
    items: pl.DataFrame, stage_names: list[str], objective: str, label_free: str
) -> pl.DataFrame:
    """Per slice attribute, bin and configuration: n, objective mean and label-free mean."""
    frames = []
    for column in [c for c in items.columns if c.startswith("bin_")]:
        frames.append(
            items.filter(pl.col(column).is_not_null())
            .group_by(column, "config_id", *stage_names)
            .agg(
                pl.len().alias("n"),
                pl.col(objective).cast(pl.Float64).mean().alias(objective),
                pl.col(label_free).cast(pl.Float64).mean().alias(f"{label_free}_mean"),
            )
            .rename({column: "bin"})
            .with_columns(pl.lit(column.removeprefix("bin_")).alias("attribute"))
        )
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def deployed_meta(view: RunView, config_id: str) -> dict:
    row = view.configs.filter(pl.col("config_id") == config_id).row(0, named=True)
    choices = {s: row[s] for s in view.stage_names}
    params = {s.name: next(c.params for c in s.choices if c.key == choices[s.name]) for s in view.spec.stages}
    return {
        "config_id": config_id,
        "choices": choices,
        "params": params,
        "objective": row["objective"],
        "latency_p95_ms": row["latency_p95_ms"],
    }


def write_reference(
    run: str,
    out: str,
    config: str | None = None,
    attribute: str | None = None,
    dataset: str | None = None,
    reference: str | None = None,
) -> StoredReference:
    """Write the profile of run directory `run` into `out`; see the module docstring for what it holds."""
    view = RunView(run)
    config_id = find_config(view.configs, config) if config else view.configs.sort("rank")["config_id"][0]
    items = kept_items(view)
    attribute = attribute or default_attribute(items, view.task)
    if attribute is not None and bin_column(attribute) not in items.columns:
        raise RaypipeError(f"--attribute {attribute}: the run has no slices of it")
    ids = items["item_id"].unique().implode()
    features = reference_features(view, run_dataset(view, dataset), "run").filter(
        pl.col("item_id").is_in(ids)
    )
    if reference is not None:
        extra = reference_features(view, view.task.load(reference), "reference")
        features = pl.concat([features, extra], how="diagonal_relaxed")
    label_free = view.task.default_objective(False)
    store = RunDir(out)
    store.fs.create_dir(store.root, recursive=True)
    store.write_parquet(FEATURES, features)
    store.write_parquet(ITEMS, items)
    store.write_parquet(CONFIGS, view.configs)
    store.write_parquet(SLICES, slice_summary(items, view.stage_names, view.objective.name, label_free))
    store.write_parquet(OUTPUTS, items.filter(pl.col("config_id") == config_id))
    meta = reference_meta(view, config_id, attribute, label_free, features)
    store.write_json(REFERENCE_JSON, meta)
    return StoredReference(store, meta, view.task)


def reference_meta(
    view: RunView, config_id: str, attribute: str | None, label_free: str, features: pl.DataFrame
) -> dict:
    """profile.json: what the profile was made from and for."""
    task = view.task
    return {
        "format": REFERENCE_FORMAT,
        "created": datetime.now(UTC).isoformat(),
        "run_dir": str(view.run_dir),
        "task": {"name": task.name, "version": str(task.version)},
        "raypipe_version": version("raypipe"),
        "deployed": deployed_meta(view, config_id),
        "objective": view.objective.name,
        "label_free": label_free,
        "outputs": list(task.outputs),
        "features": dict(task.features),
        "mix_attribute": attribute,
        "n_items": int(features.height),
        "n_feature_errors": int(features["feature_error"].is_not_null().sum()),
        "spec": view.spec.model_dump(mode="json"),
    }
