"""A batch checked against a profile: run, test for drift, estimate the mix and the objective, re-recommend.

`check_batch` is the pure part (the benchmark calls it on rows sampled from a pool); `run_check` adds the
run of the deployed configuration on Ray and the files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from raypipe.decide.slices import bin_column
from raypipe.engine.rundir import Request, RunDir
from raypipe.errors import DatasetError, RaypipeError
from raypipe.monitor import drift, estimate
from raypipe.monitor.features import ERROR, compute_features
from raypipe.monitor.mix import (
    MixEstimate,
    MixModel,
    estimate_mix,
    fit_mix_model,
    mix_model_unfit,
    share_test,
)
from raypipe.monitor.reference import StoredReference, load_reference
from raypipe.monitor.rerecommend import rerecommend
from raypipe.spec.schema import PipelineSpec

REPORT, BATCH_FEATURES, RUN = "report.json", "features.parquet", "run"
PIPELINE_ERRORS = "pipeline errors"


@dataclass
class Reference:
    """A profile made ready to check batches against: the slice classifier fitted once."""

    profile: StoredReference
    config_id: str
    mix_model: MixModel | None
    features: pl.DataFrame  # the reference's error-free feature rows
    outputs: pl.DataFrame  # the checked configuration's reference rows
    mix_aside: str = ""  # why the mix test steps aside for this reference (empty: it runs)


def prepare(profile: StoredReference, config_id: str | None = None, seed: int = 0) -> Reference:
    """The reference ready for checks; the slice classifier is fitted here, or the reason it cannot be."""
    config_id = profile.config_id(config_id)
    features = profile.features.filter(pl.col(ERROR).is_null())
    model, aside = None, ""
    if profile.attribute is not None:
        column = bin_column(profile.attribute)
        aside = mix_model_unfit(features[column]) or ""
        if not aside:
            model = fit_mix_model(features, features[column], profile.task.features, seed)
    return Reference(profile, config_id, model, features, profile.outputs_of(config_id), aside)


@dataclass
class CheckReport:
    """What a check found; `as_json` is report.json."""

    tests: list[drift.DriftTest]
    n_items: int
    n_feature_errors: int
    n_pipeline_errors: int | None
    mix: MixEstimate | None
    estimates: list[estimate.Estimate]
    observed: estimate.Estimate | None
    recommendation: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return any(t.drifted for t in self.tests)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.meta,
            "drifted": self.drifted,
            "family_alpha": drift.FAMILY_ALPHA,
            "n_items": self.n_items,
            "n_feature_errors": self.n_feature_errors,
            "n_pipeline_errors": self.n_pipeline_errors,
            "tests": [vars(t) for t in self.tests],
            "stepped_aside": {t.name: t.stepped_aside for t in self.tests if t.stepped_aside},
            "mix": None if self.mix is None else {"attribute": self.mix.attribute, "bins": self.mix.rows()},
            "estimates": [e.as_dict() for e in self.estimates],
            "observed": None if self.observed is None else self.observed.as_dict(),
            "recommendation": self.recommendation,
            "seconds": self.seconds,
        }


def output_columns(profile: StoredReference) -> list[str]:
    """The label-free per-item outputs that are tested: the label-free metric and the task's outputs."""
    return list(dict.fromkeys([profile.label_free.name, *profile.task.outputs]))


def _values(frame: pl.DataFrame, column: str) -> np.ndarray:
    series = frame[column]
    return series.to_numpy() if series.dtype.is_numeric() else np.array(series.to_list(), dtype=object)


def _outcomes(frame: pl.DataFrame) -> np.ndarray:
    return np.array(["error" if e else "ok" for e in frame["error"].is_not_null().to_list()], dtype=object)


def output_tests(ref: Reference, outputs: pl.DataFrame) -> list[drift.DriftTest]:
    """The label-free outputs of the items the pipeline finished, and the error rate over all items (a
    failed item is counted once, as an error, not again as a zero score)."""
    done, reference = outputs.filter(pl.col("error").is_null()), ref.outputs.filter(pl.col("error").is_null())
    tests = [
        drift.univariate_test(c, "output", "continuous", _values(reference, c), _values(done, c))
        for c in output_columns(ref.profile)
        if c in outputs.columns and c in reference.columns
    ]
    errors = drift.univariate_test(
        PIPELINE_ERRORS, "output", "categorical", _outcomes(ref.outputs), _outcomes(outputs)
    )
    return [*tests, errors]


def drift_tests(
    ref: Reference, features: pl.DataFrame, outputs: pl.DataFrame | None
) -> list[drift.DriftTest]:
    """Every test of the family, uncorrected."""
    kinds = ref.profile.task.features
    tests = [
        drift.univariate_test(c, "feature", k, _values(ref.features, c), _values(features, c))
        for c, k in kinds.items()
    ]
    if outputs is not None and not outputs.is_empty():
        tests += output_tests(ref, outputs)
    continuous = [c for c, k in kinds.items() if k == "continuous"]
    reference_matrix = ref.features.select(continuous).drop_nulls().to_numpy()
    batch_matrix = features.select(continuous).drop_nulls().to_numpy()
    name, least = "all continuous features", drift.MIN_ROWS_MMD
    if continuous and min(len(batch_matrix), len(reference_matrix)) < least:
        why = (
            f"{len(reference_matrix)} reference and {len(batch_matrix)} batch rows: "
            f"the MMD needs {least} of each"
        )
        tests.append(drift.stepped_aside(name, "multivariate", why))
    elif continuous:
        statistic, p_value = drift.mmd_test(reference_matrix, batch_matrix)
        tests.append(drift.DriftTest(name, "multivariate", "mmd", statistic, p_value))
    return tests


def check_batch(
    ref: Reference, features: pl.DataFrame, outputs: pl.DataFrame | None, advise: bool = True
) -> CheckReport:
    """Test, estimate and re-recommend for one batch: its features (one row per item, `feature_error` set
    on corrupt items) and the checked configuration's per-item rows on it (None: not run). `advise=False`
    leaves the re-recommendation out (the benchmark's detection cells)."""
    started = time.perf_counter()
    profile, valid = ref.profile, features.filter(pl.col(ERROR).is_null())
    if valid.is_empty():
        raise no_readable_item(features)
    tests = drift_tests(ref, valid, outputs)
    mix = None
    if ref.mix_model is not None:
        predicted = ref.mix_model.predict(valid)
        tests.append(share_test(ref.mix_model, ref.mix_model.predict_whole(valid)))
        mix = estimate_mix(ref.mix_model, predicted)
    elif ref.mix_aside:
        tests.append(drift.stepped_aside(profile.attribute, "mix", ref.mix_aside))
    tests = drift.correct_family(tests)
    estimates = _estimates(ref, mix, outputs)
    observed = None if outputs is None else estimate.observed(outputs, profile.objective)
    recommendation = rerecommend(profile, ref.config_id, mix) if advise else {"message": "not advised"}
    n_errors = None if outputs is None else int(outputs["error"].is_not_null().sum())
    seconds = {"tests_and_estimates": time.perf_counter() - started}
    return CheckReport(
        tests,
        features.height,
        features.height - valid.height,
        n_errors,
        mix,
        estimates,
        observed,
        recommendation,
        seconds,
    )


def no_readable_item(features: pl.DataFrame) -> DatasetError:
    """The one message for a batch none of whose items decode, with the first item's error."""
    first = features[ERROR].drop_nulls()
    example = f" (first: {first[0]})" if len(first) else ""
    return DatasetError(
        f"no item of the batch could be read: all {features.height} failed to decode{example}; "
        "nothing to check"
    )


def _estimates(
    ref: Reference, mix: MixEstimate | None, outputs: pl.DataFrame | None
) -> list[estimate.Estimate]:
    profile, found = ref.profile, []
    if mix is not None:
        per_slice = estimate.slice_means(ref.outputs, bin_column(mix.attribute), profile.objective)
        found.append(estimate.mix_reweighted(per_slice, mix, profile.objective))
    score = profile.label_free.name
    if outputs is not None and score in outputs.columns and profile.label_free != profile.objective:
        scores = outputs[score].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        found.append(estimate.score_calibrated(ref.outputs, scores, score, profile.objective))
    return found


def check_spec(profile: StoredReference, config_id: str, batch: str) -> PipelineSpec:
    """The run's spec narrowed to one configuration, over the batch, ranked by the label-free metric.

    The SLA keeps its latency bound only: metric bounds may need truth the batch lacks."""
    row = profile.configs.filter(pl.col("config_id") == config_id).row(0, named=True)
    raw = profile.spec.model_dump(mode="json")
    for stage in raw["stages"]:
        stage["choices"] = [c for c in stage["choices"] if (c["label"] or c["name"]) == row[stage["name"]]]
    raw.update(
        name=f"{raw['name']}-check",
        exclude=[],
        dataset={"source": batch},
        objective={"metric": profile.label_free.name},
        slices={},
        sla={"p95_latency_ms": raw["sla"]["p95_latency_ms"]},
    )
    return PipelineSpec.model_validate(raw)


def load_batch(profile: StoredReference, batch: str) -> pa.Table:
    """The batch in the profile's task schema; one clear message for a missing, foreign or empty batch."""
    task = profile.task
    try:
        table = task.load(batch)
    except RaypipeError as exc:
        raise DatasetError(
            f"batch {batch} cannot be read as a '{task.name}' dataset (the profile's task): {exc}"
        ) from exc
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        wrong = ", ".join(mistyped_columns(task, batch)) or "a column"
        raise DatasetError(
            f"batch {batch}: {wrong} has the wrong type for a '{task.name}' dataset ({exc}); write the "
            f"batch with the types `raypipe data generate --task {task.name}` writes"
        ) from exc
    if table.num_rows == 0:
        raise DatasetError(f"batch {batch} is empty: it holds no items to check")
    return table


def mistyped_columns(task: Any, batch: str) -> list[str]:
    """The batch's Parquet columns whose type differs from the task's own (a generated item's), as
    `name (found, expected)`; empty where the batch is not local Parquet."""
    import pyarrow.parquet as pq

    path = Path(batch)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path] if path.suffix == ".parquet" else []
    if not files or not task.profiles:
        return []
    found = pq.read_schema(files[0])
    expected = task.generate(task.profiles[0].name, 1, 0).schema
    return [
        f"column '{f.name}' ({f.type}, expected {expected.field(f.name).type})"
        for f in found
        if f.name in expected.names and f.type != expected.field(f.name).type
    ]


def run_check(
    profile_location: str,
    batch: str,
    out: str,
    config: str | None = None,
    address: str | None = None,
    cache_dir: str | None = None,
) -> CheckReport:
    """Run the deployed (or `config`) configuration over `batch` on Ray, check it, write report.json and
    features.parquet into `out` (the run itself goes to out/run)."""
    profile = load_reference(profile_location)
    source = batch if "://" in batch or ":" in batch.split("/", 1)[0] else os.path.abspath(batch)
    table = load_batch(profile, source)
    features = compute_features(profile.task, table)
    if features.n_errors == features.frame.height:
        raise no_readable_item(features.frame)  # before Ray starts: a usage error, not a verdict
    ref = prepare(profile, config)
    store = RunDir(out)
    store.fs.create_dir(store.root, recursive=True)
    store.write_parquet(BATCH_FEATURES, features.frame)
    started = time.perf_counter()
    run_dir = run_batch(ref, source, store.path(RUN), address, cache_dir)
    run_seconds = time.perf_counter() - started
    report = check_batch(ref, features.frame, run_dir.read_parquet("items.parquet"))
    report.seconds.update(features=features.seconds, run=run_seconds)
    report.meta = {
        "created": datetime.now(UTC).isoformat(),
        "reference": str(profile.store),
        "batch": source,
        "task": profile.meta["task"],
        "config_id": ref.config_id,
        "objective": profile.objective.name,
        "run_dir": str(run_dir),
    }
    store.write_json(REPORT, report.as_json())
    return report


def run_batch(ref: Reference, source: str, out: str, address: str | None, cache_dir: str | None) -> RunDir:
    """The checked configuration over the batch, with the same runner as `raypipe run`; its run directory."""
    from raypipe.evaluate.driver import evaluate

    request = Request(
        spec=check_spec(ref.profile, ref.config_id, source),
        out=out,
        address=address,
        cache_dir=cache_dir,
        # The decision reweights the reference's calibrated latencies; the batch's own need no calibration
        # (which would also time a sample alone: seconds per check, and a corrupt item in it fails the run).
        calibrate=False,
    )
    return evaluate(request).run_dir
