"""Monitoring measured the way users meet it: a fresh reference for every replicate, at small sizes too.

    nice -n 10 python benchmarks/monitoring.py [--quick] [--out benchmarks/results/monitoring]
                                               [--doc MONITORING.md] [--pairs 300] [--detect-pairs 100]

Running a pipeline over every replicate's reference and batch would cost hours, so each task's pool is
evaluated once and replicates are drawn from it:

- digits (the cheap task; every false-alarm cell): `--digits-pool` generated `mixed` items, all four
  configurations of DIGITS_SPEC run once on Ray over them, then `raypipe monitor reference` of that run;
- idcard (the flagship; small cells, detection of rotated/dark/blurred, the holdout renderer): `mixed`
  cards, extra `rotated`, `dark` and `blurred` cards (so a batch can hold a risen share), and
  holdout-renderer `mixed` cards, one configuration (IDCARD_SPEC) run once over all of them, profiled the
  same way.

A replicate draws a reference (each item's slice from the profile's mix, then that many items of each
slice, without replacement) and its batches from the items the reference left, so reference and batch
never share an item. The reference becomes an in-memory profile (the pool profile's rows of its items),
`prepare` fits the slice classifier on it, and every batch goes through `check_batch`, the function
`raypipe monitor check` calls after its run. Shifted batches draw each item's slice from the profile's
mix with one slice's share raised by 5, 10 or 20 points (the others shrunk in proportion), as a new
generator seed of a shifted profile would. Holdout batches are holdout-renderer cards (a shift no slice
names). Results: --out/checks.csv (one row per check), --out/cells.csv, --out/monitoring.md, and the block
between the markers in --doc.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from raypipe.decide.stats import wilson_interval
from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import Request
from raypipe.evaluate.driver import evaluate
from raypipe.monitor import drift
from raypipe.monitor.check import Reference, check_batch, prepare
from raypipe.monitor.reference import StoredReference, load_reference, write_reference
from raypipe.spec.registry import resolve_task
from raypipe.spec.validation import parse_spec

DIGITS_SPEC = {
    "name": "monitoring-digits",
    "task": "digits",
    "stages": [
        {"name": "preprocess", "choices": ["none", "deskew"]},
        {"name": "classify", "choices": ["linear", "onnx"]},
    ],
    "sla": {"p95_latency_ms": 50},
}
IDCARD_SPEC = {
    "name": "monitoring-idcard",
    "task": "idcard",
    "stages": [
        {"name": "orient", "choices": [{"name": "cnn", "params": {"variant": "onnx-int8"}}]},
        {"name": "ocr", "choices": [{"name": "tesseract", "params": {"lang": "chi_sim+eng", "psm": 11}}]},
        {"name": "extract", "choices": ["layout"]},
    ],
    "sla": {"p95_latency_ms": 20000},
}
SHIFTS = {"digits": ("rotated", "blurred", "noisy"), "idcard": ("rotated", "dark", "blurred")}
RISES = (0.05, 0.10, 0.20)
MARKERS = ("<!-- monitoring-tables:start -->", "<!-- monitoring-tables:end -->")
FULL = {
    "digits_pool": 3000,
    "idcard_mixed": 700,  # 160 ran slices out: 40 + 100 items drawn took all 15 noisy cards in 90 % of pairs
    "idcard_extra": 30,
    "idcard_holdout": 40,
    "references": [40, 200, 1000],
    "batches": [20, 100, 200, 500],
    "idcard_references": [40],
    "idcard_batches": [20, 100],
    "detect_reference": 200,
    "idcard_detect_reference": 40,
}
QUICK = {
    "digits_pool": 600,
    "idcard_mixed": 40,
    "idcard_extra": 8,
    "idcard_holdout": 10,
    "references": [40, 200],
    "batches": [20, 100],
    "idcard_references": [20],
    "idcard_batches": [10],
    "detect_reference": 40,
    "idcard_detect_reference": 20,
    "pairs": 4,
    "detect_pairs": 3,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300, help="reference/batch pairs per false-alarm cell")
    parser.add_argument("--detect-pairs", type=int, default=100, help="pairs per detection cell")
    parser.add_argument("--advice-pairs", type=int, default=50, help="pairs whose switch advice is measured")
    parser.add_argument("--out", default="benchmarks/results/monitoring", help="pools, runs and results")
    parser.add_argument("--doc", default="MONITORING.md", help="document whose tables to replace ('' none)")
    parser.add_argument("--digits-minutes", type=float, default=25, help="stop drawing digits pairs after")
    parser.add_argument("--idcard-minutes", type=float, default=10, help="stop drawing idcard pairs after")
    parser.add_argument("--tables-only", action="store_true", help="tables from the checks-*.csv written")
    parser.add_argument("--first-replicate", type=int, default=0, help="continue a run from this replicate")
    parser.add_argument("--tag", default="", help="suffix of this invocation's checks-TASK*.csv")
    parser.add_argument("--skip-idcard", action="store_true", help="digits only")
    parser.add_argument("--tasks", default="digits,idcard", help="the pools to run, comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, --doc ignored")
    parser.add_argument(
        "--references", help="digits reference sizes to draw, comma-separated (more pairs for some cells)"
    )
    args = parser.parse_args(argv)
    only = args.references
    vars(args).update(FULL)
    if only:
        args.references = tuple(int(m) for m in only.split(","))
    if args.quick:
        vars(args).update(QUICK, doc="")
    return args


# -- pools ------------------------------------------------------------------------------------------------


@dataclass
class Pool:
    """A task's profiled pool: the full profile and, per item, its slice and where it came from."""

    task: str
    profile: StoredReference
    item_ids: np.ndarray
    slices: np.ndarray
    sources: np.ndarray  # "standard" or "holdout"
    mix: dict[str, float]
    seconds: dict[str, float]


def pool_dataset(task_name: str, args: argparse.Namespace, out: Path) -> Path:
    """The pool's items in one Parquet file, generated once."""
    path = out / f"{task_name}-pool.parquet"
    if path.exists():
        return path
    task = resolve_task(task_name)
    if task_name == "digits":
        tables = [task.generate("mixed", args.digits_pool, 41)]
    else:
        tables = [task.generate("mixed", args.idcard_mixed, 2)]
        tables += [task.generate(s, args.idcard_extra, 3) for s in SHIFTS["idcard"]]
        tables.append(task.generate("mixed", args.idcard_holdout, 4, renderer="holdout"))
    write_table(pa.concat_tables(tables), str(path))
    return path


def own_ray() -> None:
    """A Ray of this process's own: without an address `ray.init` joins the newest cluster already running
    on the machine (seen: another user's test cluster on this shared machine), which the runner's
    embedded mode does not prevent."""
    import ray

    from raypipe.ray.cluster import WORKER_ENV

    if not ray.is_initialized():
        env = {"env_vars": dict(WORKER_ENV)}
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)


def build_pool(task_name: str, spec: dict, args: argparse.Namespace, out: Path) -> Pool:
    """Run the spec once over the pool (on Ray), profile the run; reused when already there."""
    started = time.perf_counter()
    data = pool_dataset(task_name, args, out)
    run, profile_dir = out / f"{task_name}-run", out / f"{task_name}-profile"
    if not (run / "manifest.json").exists():
        own_ray()
        # No latency calibration: it times a sample alone, minutes on a busy machine, and the benchmark
        # measures the tests, not the SLA
        spec_ = parse_spec({**spec, "dataset": {"source": str(data)}})
        request = Request(spec=spec_, out=str(run), calibrate=False)
        evaluate(request)
    if not (profile_dir / "reference.json").exists():
        write_reference(str(run), str(profile_dir))
    profile = load_reference(str(profile_dir))
    features = profile.features.filter(pl.col("feature_error").is_null())
    ids = features["item_id"].to_numpy()
    sources = np.where(np.char.startswith(ids.astype(str), "holdout"), "holdout", "standard")
    mix = _profile_mix(task_name)
    seconds = {"pool": time.perf_counter() - started, "run_wall": _run_wall(run)}
    return Pool(task_name, profile, ids, features["bin_profile"].to_numpy(), sources, mix, seconds)


def _profile_mix(task_name: str) -> dict[str, float]:
    if task_name == "digits":
        from raypipe.tasks.digits.profiles import MIXED_WEIGHTS
    else:
        from raypipe.tasks.idcard.profiles import MIXED_WEIGHTS
    return dict(MIXED_WEIGHTS)


def _run_wall(run: Path) -> float:
    return float(json.loads((run / "manifest.json").read_text()).get("wall_seconds", float("nan")))


def reference_profile(pool: Pool, ids: np.ndarray) -> StoredReference:
    """The pool profile narrowed to the reference's items, in memory (what `monitor reference` would write
    from a run over those items alone; the configurations' summary stays the pool run's)."""
    full, wanted = pool.profile, pl.Series(ids).implode()
    narrowed = StoredReference(full.store, {**full.meta, "n_items": len(ids)}, full.task)
    narrowed.__dict__["features"] = full.features.filter(pl.col("item_id").is_in(wanted))
    narrowed.__dict__["items"] = full.items.filter(pl.col("item_id").is_in(wanted))
    narrowed.__dict__["outputs"] = full.outputs.filter(pl.col("item_id").is_in(wanted))
    narrowed.__dict__["configs"] = full.configs
    return narrowed


# -- draws ------------------------------------------------------------------------------------------------


def shifted_mix(mix: dict[str, float], risen: str | None, rise: float) -> dict[str, float]:
    """The mix with `risen`'s share up by `rise` and the others shrunk in proportion."""
    if risen is None:
        return dict(mix)
    rest = 1 - mix[risen]
    return {k: w * (rest - rise) / rest for k, w in mix.items()} | {risen: mix[risen] + rise}


def draw(
    pool: Pool, available: np.ndarray, mix: dict[str, float], n: int, rng: np.random.Generator
) -> np.ndarray:
    """Row indices of `n` items whose slices are drawn from `mix`, each slice's items without replacement
    among the `available` rows (a slice that runs out is topped up from the others)."""
    counts = rng.multinomial(n, list(mix.values()))
    chosen = []
    for name, count in zip(mix, counts, strict=True):
        members = np.flatnonzero(available & (pool.slices == name))
        chosen.append(rng.choice(members, size=min(count, len(members)), replace=False))
    picked = np.concatenate(chosen).astype(int)
    short = n - len(picked)
    if short > 0:
        rest = np.flatnonzero(available & ~np.isin(np.arange(len(available)), picked))
        picked = np.concatenate([picked, rng.choice(rest, size=min(short, len(rest)), replace=False)])
    return picked


def one_check(pool: Pool, ref: Reference, rows: np.ndarray, advise: bool) -> dict:
    """The figures one check yields (verdict, groups, stepped-aside tests, estimates, advice)."""
    ids = pl.Series(pool.item_ids[rows]).implode()
    features = pool.profile.features.filter(pl.col("item_id").is_in(ids))
    outputs = pool.profile.outputs.filter(pl.col("item_id").is_in(ids))
    report = check_batch(ref, features, outputs, advise)
    row = {
        "drifted": report.drifted,
        **{f"{g}_fired": any(t.drifted for t in report.tests if t.group == g) for g in drift.GROUP_WEIGHTS},
        "stepped_aside": ";".join(t.name for t in report.tests if t.stepped_aside),
        "observed": None if report.observed is None else report.observed.value,
        "switch": bool(report.recommendation.get("changed")) if advise else None,
        "seconds": report.seconds["tests_and_estimates"],
    }
    for e in report.estimates:
        row |= {e.method: e.value, f"{e.method}_low": e.ci_low, f"{e.method}_high": e.ci_high}
    return row


def scenarios(pool: Pool, args: argparse.Namespace, m: int, replicate: int) -> list[tuple[int, str, float]]:
    """(batch size, scenario, rise) checked against one reference of `m` items in this replicate."""
    sizes = args.batches if pool.task == "digits" else args.idcard_batches
    found = [(n, "unshifted", 0.0) for n in sizes] if replicate < args.pairs else []
    detect_at = args.detect_reference if pool.task == "digits" else args.idcard_detect_reference
    if m == detect_at and replicate < args.detect_pairs:
        detect_sizes = [n for n in sizes if n >= 100] or sizes[-1:]
        found += [(n, s, r) for n in detect_sizes for s in SHIFTS[pool.task] for r in RISES]
        if pool.task == "idcard":
            found += [(min(sizes[0], 20), "holdout", 0.0)]
    return found


def check_replicate(pool: Pool, args: argparse.Namespace, m: int, replicate: int) -> list[dict]:
    """One fresh reference of `m` items and every batch this replicate checks against it."""
    rng = np.random.default_rng([len(pool.task), m, replicate])
    standard = pool.sources == "standard"
    chosen = draw(pool, standard, pool.mix, m, rng)
    started = time.process_time()
    ref = prepare(reference_profile(pool, pool.item_ids[chosen]), seed=replicate)
    fit_s = time.process_time() - started
    left = standard & ~np.isin(np.arange(len(standard)), chosen)
    rows = []
    for n, scenario, rise in scenarios(pool, args, m, replicate):
        if scenario == "holdout":
            picked = rng.choice(np.flatnonzero(pool.sources == "holdout"), size=n, replace=False)
        else:
            mix = shifted_mix(pool.mix, None if scenario == "unshifted" else scenario, rise)
            picked = draw(pool, left, mix, n, rng)
        # The advice costs a third of a check: measured where it matters, on unshifted batches
        advise = scenario == "unshifted" and replicate < args.advice_pairs
        labels = {"task": pool.task, "reference": m, "batch": n, "scenario": scenario, "rise": rise}
        rows.append(labels | {"replicate": replicate, "fit_s": fit_s} | one_check(pool, ref, picked, advise))
    return rows


def run_all(pool: Pool, args: argparse.Namespace, out: Path, minutes: float) -> pl.DataFrame:
    """Replicate after replicate over every reference size of the pool, so that every cell fills evenly;
    stops drawing new replicates after `minutes` (the tables say how many pairs each cell got)."""
    deadline = time.perf_counter() + minutes * 60
    sizes = args.references if pool.task == "digits" else args.idcard_references
    rows: list[dict] = []
    for replicate in range(args.first_replicate, max(args.pairs, args.detect_pairs)):
        for m in sizes:
            rows += check_replicate(pool, args, m, replicate)
        if replicate % 10 == 9:
            print(f"{pool.task} replicate {replicate + 1}: {len(rows)} checks", flush=True)
            pl.DataFrame(rows).write_csv(out / f"checks-{pool.task}{args.tag}.csv", float_precision=4)
        if time.perf_counter() > deadline:
            print(f"{pool.task}: time is up after {replicate + 1} replicates", flush=True)
            break
    results = pl.DataFrame(rows)
    results.write_csv(out / f"checks-{pool.task}{args.tag}.csv", float_precision=4)
    return results


# -- tables -----------------------------------------------------------------------------------------------


def rate(values: pl.Series) -> tuple[float, float, float]:
    """The share of true values with its Wilson interval; nulls (not measured: no advice asked) left out,
    NaN when none was measured."""
    values = values.drop_nulls()
    if values.is_empty():
        return float("nan"), float("nan"), float("nan")
    hits, n = int(values.sum()), values.len()
    low, high = wilson_interval(hits, n)
    return hits / n, low, high


def shown(values: pl.Series) -> str:
    value, low, high = rate(values)
    return f"{value:.1%} [{low:.1%}, {high:.1%}]"


def cells(results: pl.DataFrame) -> pl.DataFrame:
    """Per (task, reference, batch, scenario, rise): n and each rate with its Wilson interval."""
    out = []
    keys = ["task", "reference", "batch", "scenario", "rise"]
    for key, g in results.group_by(keys, maintain_order=True):
        row = dict(zip(keys, key, strict=True)) | {"n": g.height}
        for column in (
            "drifted",
            "mix_fired",
            "feature_fired",
            "multivariate_fired",
            "output_fired",
            "switch",
        ):
            row[column], row[f"{column}_low"], row[f"{column}_high"] = rate(g[column])
        row["stepped_aside"] = ";".join(sorted({s for v in g["stepped_aside"] for s in v.split(";") if s}))
        out.append(row)
    return pl.DataFrame(out)


def false_alarm_table(results: pl.DataFrame) -> str:
    lines = [
        "| task | reference | batch | pairs | false alarms [95% CI] | met (<= 5 %, upper <= 7 %) | mix "
        "| feature | multivariate | output | switch advised | stepped aside |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    null = results.filter(pl.col("scenario") == "unshifted")
    for (task, m, n), g in null.group_by(["task", "reference", "batch"], maintain_order=True):
        value, _, high = rate(g["drifted"])
        met = "yes" if value <= 0.05 and high <= 0.07 else "**no**"
        aside = sorted({s for v in g["stepped_aside"] for s in v.split(";") if s})
        groups = " | ".join(
            f"{rate(g[f'{k}_fired'])[0]:.1%}" for k in ("mix", "feature", "multivariate", "output")
        )
        lines.append(
            f"| {task} | {m} | {n} | {g.height} | {shown(g['drifted'])} | {met} | {groups} | "
            f"{_switch_rate(g)} | {', '.join(aside) or '-'} |"
        )
    return "\n".join(lines)


def _switch_rate(g: pl.DataFrame) -> str:
    advised = g["switch"].drop_nulls()
    return "-" if advised.is_empty() else f"{rate(advised)[0]:.1%} of {advised.len()}"


def detection_table(results: pl.DataFrame) -> str:
    lines = [
        "| task | reference | batch | shift | rise | pairs | detected [95% CI] | mix test | other tests |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    shifted = results.filter(pl.col("scenario") != "unshifted")
    keys = ["task", "reference", "batch", "scenario", "rise"]
    for (task, m, n, scenario, rise), g in shifted.group_by(keys, maintain_order=True):
        others = g["feature_fired"] | g["multivariate_fired"] | g["output_fired"]
        label = "holdout renderer" if scenario == "holdout" else scenario
        points = "-" if scenario == "holdout" else f"+{rise * 100:.0f}"
        lines.append(
            f"| {task} | {m} | {n} | {label} | {points} | {g.height} | {shown(g['drifted'])} | "
            f"{rate(g['mix_fired'])[0]:.0%} | {rate(others)[0]:.0%} |"
        )
    return "\n".join(lines)


def estimate_table(results: pl.DataFrame) -> str:
    lines = [
        "| task | batches | checks | true objective (mean) | mix-reweighted error (coverage) "
        "| score-calibrated error (coverage) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    labelled = results.filter(pl.col("observed").is_not_null())
    grouped = labelled.with_columns(
        pl.when(pl.col("scenario") == "unshifted")
        .then(pl.lit("unshifted"))
        .otherwise(pl.col("scenario"))
        .alias("kind")
    )
    for (task, kind), g in grouped.group_by(["task", "kind"], maintain_order=True):
        cells_ = [f"{g['observed'].mean():.3f}"]
        for method in ("mix-reweighted", "score-calibrated"):
            if method not in g.columns or g[method].null_count() == g.height:
                cells_.append("-")
                continue
            h = g.filter(pl.col(method).is_not_null())
            covered = (h[f"{method}_low"] <= h["observed"]) & (h["observed"] <= h[f"{method}_high"])
            cells_.append(f"{(h[method] - h['observed']).abs().mean():.3f} ({covered.mean():.0%})")
        lines.append(f"| {task} | {kind} | {g.height} | " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def header(args: argparse.Namespace, pools: list[Pool], results: pl.DataFrame, wall_s: float) -> str:
    parts = []
    for pool in pools:
        deployed = pool.profile.meta["deployed"]
        labels = "/".join(str(deployed["choices"][s]) for s in pool.profile.stage_names)
        holdout = int((pool.sources == "holdout").sum())
        parts.append(
            f"{pool.task}: a pool of {len(pool.item_ids) - holdout} standard items"
            + (f" and {holdout} holdout-renderer cards" if holdout else "")
            + f", {pool.profile.configs.height} configuration(s) run once (deployed {labels}; pipeline wall "
            f"{pool.seconds['run_wall']:.0f} s)"
        )
    cpu = results["seconds"].sum() + results.unique(["task", "reference", "replicate"])["fit_s"].sum()
    return (
        f"Measured by `nice -n 10 python benchmarks/monitoring.py --pairs {args.pairs} --detect-pairs "
        f"{args.detect_pairs} --advice-pairs {args.advice_pairs} --digits-minutes {args.digits_minutes:g} "
        f"--idcard-minutes {args.idcard_minutes:g}` "
        f"({wall_s / 60:.0f} min wall on the shared 2-core machine; tests, fits and "
        f"estimates {cpu / 60:.1f} min of check time). Pools: "
        + "; ".join(parts)
        + ". Every pair draws a fresh "
        f"reference and a disjoint batch from its pool; family-wise level {drift.FAMILY_ALPHA:g}."
    )


def tables(args: argparse.Namespace, pools: list[Pool], results: pl.DataFrame, wall_s: float) -> str:
    return "\n\n".join(
        [
            header(args, pools, results, wall_s),
            "False alarms (unshifted batches; per test group, how often it fired):",
            false_alarm_table(results),
            "Detection (each item's slice drawn from the shifted mix):",
            detection_table(results),
            "Label-free estimates against the batch's true objective (error: mean absolute difference; "
            "coverage: how often the 95 % interval holds the true value):",
            estimate_table(results),
        ]
    )


def splice(doc: Path, block: str) -> None:
    text = doc.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    doc.write_text(text[:start] + "\n" + block + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tasks = [("digits", DIGITS_SPEC, args.digits_minutes), ("idcard", IDCARD_SPEC, args.idcard_minutes)]
    tasks = [
        t for t in tasks if t[0] in args.tasks.split(",") and not (args.skip_idcard and t[0] == "idcard")
    ]
    for task_name, _, _ in tasks:
        pool_dataset(task_name, args, out)  # before Ray starts in this process
    pools, frames = [], []
    for task_name, spec, minutes in tasks:
        pools.append(build_pool(task_name, spec, args, out))
        if args.tables_only:  # every invocation's checks (--tag), e.g. more false-alarm pairs
            types = {"switch": pl.Boolean, "stepped_aside": pl.String, "observed": pl.Float64}
            files = sorted(out.glob(f"checks-{task_name}*.csv")) or [out / "checks.csv"]
            found = [pl.read_csv(f, schema_overrides=types) for f in files]
            frames += [f.filter(pl.col("task") == task_name) for f in found]
        else:
            frames.append(run_all(pools[-1], args, out, minutes))
    results = pl.concat(frames, how="diagonal_relaxed").with_columns(pl.col("stepped_aside").fill_null(""))
    results.write_csv(out / "checks.csv", float_precision=4)
    cells(results).write_csv(out / "cells.csv", float_precision=4)
    block = tables(args, pools, results, time.perf_counter() - started)
    (out / "monitoring.md").write_text(block + "\n")
    if args.doc:
        splice(Path(args.doc), block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
