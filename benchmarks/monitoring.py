"""Monitoring on the idcard `mixed` profile: false alarms, detection, label-free estimate error and cost.

    python benchmarks/monitoring.py [--reference-n 600] [--extra-reference 3000] [--pool 3000]
                                    [--batches 100] [--batch-size 200] [--more-sizes 300]
                                    [--out benchmarks/results/monitoring] [--doc MONITORING.md] [--quick]

The reference is a run of the spec below over `--reference-n` mixed cards (seed 0), profiled with
`--extra-reference` more mixed cards (seed 1) for the features. The pool is `--pool` further mixed cards
(seed 2): their features are computed once and the deployed configuration runs over them once, on Ray,
with the stage cache on (a second invocation reuses every stage result and generated file under --out).
Each batch is a seeded draw from the pool's per-item rows and goes through `check_batch`, the same pure
function `raypipe monitor check` calls after its run. Shifted batches raise one slice's share by 10
points and shrink the others in proportion; two ways to draw them are reported:

- expected share: each item's slice is drawn from the shifted mix (a new seed of a shifted profile), so a
  batch's realised rise varies around 10 points;
- exact share: the risen slice holds exactly round(n x (share + 0.10)) items, the rest drawn from the others.

Unshifted batches draw each item's slice from the profile's mix; --more-sizes repeats the unshifted and
expected-share batches at other sizes. The tables go to --out/monitoring.md and replace the block between
the markers in --doc.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import stats

from raypipe.datasets import write_table
from raypipe.evaluation import evaluate
from raypipe.monitor import drift
from raypipe.monitor.check import Reference, check_batch, check_spec, prepare
from raypipe.monitor.features import compute_features
from raypipe.monitor.profile import load_profile, write_profile
from raypipe.run import Request
from raypipe.stats import wilson_interval
from raypipe.tasks.idcard.generator import generate_item
from raypipe.tasks.idcard.profiles import MIXED_WEIGHTS
from raypipe.tasks.idcard.schema import CANONICAL_SCHEMA
from raypipe.validation import parse_spec

SPEC = {
    "name": "monitoring-reference",
    "task": "idcard",
    "stages": [
        {"name": "orient", "choices": ["none", {"name": "cnn", "params": {"variant": "onnx-int8"}}]},
        {"name": "ocr", "choices": [{"name": "tesseract", "params": {"lang": "chi_sim+eng", "psm": 11}}]},
        {"name": "extract", "choices": ["layout"]},
    ],
    "sla": {"p95_latency_ms": 5000},
}
SHIFTED = ("rotated", "dark", "blurred")
RISE = 0.10
MARKERS = ("<!-- monitoring-tables:start -->", "<!-- monitoring-tables:end -->")
QUICK = {
    "reference_n": 24,
    "extra_reference": 40,
    "pool": 60,
    "batches": 3,
    "batch_size": 30,
    "more_sizes": [40],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-n", type=int, default=600, help="cards in the reference run")
    parser.add_argument("--extra-reference", type=int, default=3000, help="extra cards for the features")
    parser.add_argument("--pool", type=int, default=3000, help="cards the batches are drawn from")
    parser.add_argument("--batches", type=int, default=100, help="batches per scenario and draw")
    parser.add_argument("--batch-size", type=int, default=200, help="items per batch")
    parser.add_argument(
        "--more-sizes", type=int, nargs="*", default=[300], help="more batch sizes (expected shares only)"
    )
    parser.add_argument("--out", default="benchmarks/results/monitoring", help="runs, data and tables")
    parser.add_argument("--doc", default="MONITORING.md", help="document whose tables to replace ('' none)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, --doc ignored")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK, doc="")
    return args


def generated(out: Path, profile: str, n: int, seed: int) -> str:
    """A generated dataset under --out, made once, its items drawn by one process per CPU (the same rows as
    `raypipe data generate`: item i depends only on (profile, seed, i))."""
    path = out / f"idcard-{profile}-{n}-{seed}.parquet"
    if not path.exists():
        with ProcessPoolExecutor(os.cpu_count(), mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(generate_item, repeat(profile), repeat(seed), range(n), chunksize=16))
        write_table(pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA), str(path))
    return str(path)


def evaluated(request: Request) -> tuple[Path, float]:
    """The run directory of `request` (run once; a finished one is reused) and its wall seconds."""
    run = Path(request.out)
    if not (run / "manifest.json").exists():
        evaluate(request)
    return run, json.loads((run / "manifest.json").read_text())["wall_seconds"]


def build_reference(args: argparse.Namespace, out: Path) -> Reference:
    data = generated(out, "mixed", args.reference_n, 0)
    spec = parse_spec({**SPEC, "dataset": {"source": data}})
    cache = str((out / "cache").resolve())
    run, _ = evaluated(Request(spec=spec, out=str(out / "reference-run"), cache_dir=cache))
    profile_dir = out / "profile"
    if not (profile_dir / "profile.json").exists():
        extra = generated(out, "mixed", args.extra_reference, 1)
        write_profile(str(run), str(profile_dir), reference=extra)
    return prepare(load_profile(str(profile_dir)))


def build_pool(args: argparse.Namespace, out: Path, ref: Reference) -> dict:
    """The pool's features, the deployed configuration's rows on it, each item's slice, and the costs."""
    data = generated(out, "mixed", args.pool, 2)
    task, cached = ref.profile.task, out / "pool-features.parquet"
    if not cached.exists():
        found = compute_features(task, task.load(data))
        found.frame.write_parquet(cached)
        (out / "pool-features.json").write_text(json.dumps({"seconds": found.seconds}))
    features = pl.read_parquet(cached)
    feature_s = json.loads((out / "pool-features.json").read_text())["seconds"]
    request = Request(
        spec=check_spec(ref.profile, ref.config_id, os.path.abspath(data)),
        out=str(out / "pool-run"),
        cache_dir=str((out / "cache").resolve()),
        calibrate=False,
    )
    run, run_s = evaluated(request)
    outputs = pl.read_parquet(run / "items.parquet")
    order = features["item_id"].to_list()
    outputs = outputs.join(pl.DataFrame({"item_id": order}).with_row_index("_at"), on="item_id").sort("_at")
    if outputs.height != features.height:
        raise RuntimeError(f"the pool run has {outputs.height} rows for {features.height} items")
    slices = pl.read_parquet(data, columns=["item_id", "profile"])
    labels = features.select("item_id").join(slices, on="item_id", how="left")["profile"].to_numpy()
    return {
        "features": features,
        "outputs": outputs.drop("_at"),
        "labels": labels,
        "feature_s": feature_s,
        "run_s": run_s,
        "n": features.height,
    }


def shifted_mix(risen: str | None) -> dict[str, float]:
    """The profile's mix with `risen`'s share up by RISE and the others shrunk in proportion."""
    if risen is None:
        return dict(MIXED_WEIGHTS)
    rest = 1 - MIXED_WEIGHTS[risen]
    mix = {k: w * (rest - RISE) / rest for k, w in MIXED_WEIGHTS.items()}
    return mix | {risen: MIXED_WEIGHTS[risen] + RISE}


def slice_counts(risen: str | None, draw: str, size: int, rng: np.random.Generator) -> dict[str, int]:
    mix = shifted_mix(risen)
    names = list(mix)
    if draw == "exact" and risen is not None:
        fixed = round(size * mix[risen])
        others = [k for k in names if k != risen]
        weights = np.array([mix[k] for k in others])
        counts = rng.multinomial(size - fixed, weights / weights.sum())
        return {risen: fixed, **dict(zip(others, counts.tolist(), strict=True))}
    return dict(zip(names, rng.multinomial(size, list(mix.values())).tolist(), strict=True))


def draw_batch(pool: dict, counts: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """Row indices of the pool: `counts[slice]` distinct items of each slice."""
    chosen = []
    for name, count in counts.items():
        members = np.flatnonzero(pool["labels"] == name)
        chosen.append(rng.choice(members, size=min(count, len(members)), replace=False))
    return np.concatenate(chosen)


def one_check(ref: Reference, pool: dict, rows: np.ndarray) -> dict:
    report = check_batch(ref, pool["features"][rows], pool["outputs"][rows])
    fired = {g: any(t.drifted for t in report.tests if t.group == g) for g in drift.GROUP_WEIGHTS}
    found = {e.method: e for e in report.estimates}
    row = {
        "drifted": report.drifted,
        **{f"{g}_drifted": v for g, v in fired.items()},
        "observed": None if report.observed is None else report.observed.value,
        "seconds": report.seconds["tests_and_estimates"],
        "changed": report.recommendation["changed"],
        "recommended": report.recommendation["recommended"],
    }
    for method, e in found.items():
        row |= {f"{method}": e.value, f"{method}_low": e.ci_low, f"{method}_high": e.ci_high}
    return row


def scenarios(args: argparse.Namespace) -> list[tuple[int, str | None, str]]:
    """(batch size, risen slice or None, draw): both draws at --batch-size, expected ones at --more-sizes."""
    found = [(args.batch_size, None, "expected")]
    found += [(args.batch_size, s, d) for s in SHIFTED for d in ("expected", "exact")]
    for size in args.more_sizes:
        found += [(size, None, "expected")] + [(size, s, "expected") for s in SHIFTED]
    return found


def run_batches(args: argparse.Namespace, ref: Reference, pool: dict) -> pl.DataFrame:
    rows = []
    for index, (size, risen, draw) in enumerate(scenarios(args)):
        for b in range(args.batches):
            rng = np.random.default_rng([index, b])
            picked = draw_batch(pool, slice_counts(risen, draw, size, rng), rng)
            labels = {"size": size, "scenario": risen or "unshifted", "draw": draw, "batch": b}
            rows.append(labels | one_check(ref, pool, picked))
    return pl.DataFrame(rows)


def perfect_classifier_bound(ref: Reference, risen: str | None, size: int, trials: int = 4000) -> float:
    """How often the mix test would fire on expected-share batches if the slice classifier never erred,
    at the level weighted Holm gives it at least (its weight x alpha): what the batch size allows."""
    rng = np.random.default_rng(0)
    names = list(MIXED_WEIGHTS)
    bins = ref.profile.features["bin_profile"]
    reference = np.array([(bins == k).sum() for k in names], dtype=float)
    mix, weights = shifted_mix(risen), drift.GROUP_WEIGHTS
    level = weights["mix"] / sum(weights.values()) * drift.FAMILY_ALPHA
    fired = 0
    for _ in range(trials):
        batch = rng.multinomial(size, list(mix.values())).astype(float)
        pooled = (batch + reference) / (batch.sum() + reference.sum())
        se = np.sqrt(pooled * (1 - pooled) * (1 / batch.sum() + 1 / reference.sum()))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.nan_to_num(np.abs(batch / batch.sum() - reference / reference.sum()) / se)
        fired += min(1.0, 2 * float(np.min(stats.norm.sf(z))) * len(names)) <= level
    return fired / trials


def rate(values: pl.Series) -> str:
    hits, n = int(values.sum()), values.len()
    low, high = wilson_interval(hits, n)
    return f"{hits / n:.0%} [{low:.0%}, {high:.0%}]"


def alarm_table(results: pl.DataFrame, ref: Reference) -> str:
    lines = [
        "| batches | items | draw | n | alarm rate [95% CI] | mix test fired | other tests fired "
        "| perfect-classifier bound |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (size, scenario, draw), group in results.group_by(["size", "scenario", "draw"], maintain_order=True):
        label = "unshifted" if scenario == "unshifted" else f"{scenario} +{RISE * 100:.0f} points"
        others = group["feature_drifted"] | group["multivariate_drifted"] | group["output_drifted"]
        risen = None if scenario == "unshifted" else scenario
        bound = f"{perfect_classifier_bound(ref, risen, size):.0%}" if draw == "expected" else ""
        lines.append(
            f"| {label} | {size} | {draw} | {group.height} | {rate(group['drifted'])} | "
            f"{rate(group['mix_drifted'])} | {rate(others)} | {bound} |"
        )
    return "\n".join(lines)


def estimate_table(results: pl.DataFrame, reference_value: float) -> str:
    lines = [
        "| batches | draw | true objective (mean) | unadjusted error | mix-reweighted error (coverage) "
        "| score-calibrated error (coverage) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (scenario, draw), g in results.group_by(["scenario", "draw"], maintain_order=True):
        g = g.filter(pl.col("size") == g["size"].min())  # the main batch size
        cells = [f"{g['observed'].mean():.3f}", f"{(g['observed'] - reference_value).abs().mean():.3f}"]
        for method in ("mix-reweighted", "score-calibrated"):
            if method not in g.columns:
                cells.append("")
                continue
            covered = (g[f"{method}_low"] <= g["observed"]) & (g["observed"] <= g[f"{method}_high"])
            cells.append(f"{(g[method] - g['observed']).abs().mean():.3f} ({covered.mean():.0%})")
        lines.append(f"| {scenario} | {draw} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(results: pl.DataFrame, pool: dict, size: int) -> str:
    features_s = pool["feature_s"] / pool["n"] * size
    pipeline_s = pool["run_s"] / pool["n"] * size
    tests_s = float(results.filter(pl.col("size") == size)["seconds"].mean())
    return "\n".join(
        [
            f"| per {size}-item batch | seconds |",
            "| --- | --- |",
            f"| features (decode + task features, one process) | {features_s:.1f} |",
            f"| tests, mix and objective estimates, re-recommendation | {tests_s:.2f} |",
            f"| the deployed configuration on Ray (the pool's run, wall) | {pipeline_s:.1f} |",
        ]
    )


def command(args: argparse.Namespace) -> str:
    return (
        f"python benchmarks/monitoring.py --reference-n {args.reference_n} --extra-reference "
        f"{args.extra_reference} --pool {args.pool} --batches {args.batches} --batch-size {args.batch_size} "
        f"--more-sizes {' '.join(str(s) for s in args.more_sizes)}"
    )


def tables(args: argparse.Namespace, ref: Reference, pool: dict, results: pl.DataFrame, wall_s: float) -> str:
    meta = ref.profile.meta
    deployed = "/".join(str(meta["deployed"]["choices"][s]) for s in ref.profile.stage_names)
    objective = ref.profile.objective.name
    reference_value = float(ref.outputs[objective].cast(pl.Float64).mean())
    header = (
        f"Measured by `{command(args)}` ({wall_s / 60:.0f} min). Reference: {args.reference_n} cards run "
        f"and {args.extra_reference} for features only, all mixed; deployed "
        f"{meta['deployed']['config_id'][:8]} ({deployed}); slice classifier out-of-fold accuracy "
        f"{ref.mix_model.accuracy:.2f}; family-wise level {drift.FAMILY_ALPHA:g}."
    )
    estimates = (
        f"Objective `{objective}`, {reference_value:.3f} on the reference. Error: mean absolute difference "
        "from the batch's true value; coverage: how often the 95 % interval holds it."
    )
    return "\n\n".join(
        [
            header,
            alarm_table(results, ref),
            estimates,
            estimate_table(results, reference_value),
            cost_table(results, pool, args.batch_size),
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
    for n, seed in ((args.reference_n, 0), (args.extra_reference, 1), (args.pool, 2)):
        generated(out, "mixed", n, seed)  # before Ray starts in this process
    ref = build_reference(args, out)
    pool = build_pool(args, out, ref)
    results = run_batches(args, ref, pool)
    results.write_parquet(out / "batches.parquet")
    block = tables(args, ref, pool, results, time.perf_counter() - started)
    (out / "monitoring.md").write_text(block + "\n")
    if args.doc:
        splice(Path(args.doc), block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
