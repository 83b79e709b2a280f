"""`raypipe search replay`: racing simulated on a synthetic exhaustive run's items, with known costs and a
known best, through the Python API and the command line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from raypipe.cli.search import search_app
from raypipe.decide.decision import DecisionSettings
from raypipe.engine.rundir import RunDir
from raypipe.search.racing import Racing
from raypipe.search.replay import replay
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric
from raypipe.spec.validation import parse_spec

ACCURACY = Metric("accuracy", "correct", interval="wilson")
STAGES = ["preprocess", "classify"]
PRE_MS = {"none": 0.1, "blur": 0.2}
CLS_MS = {"linear": 1.0, "onnx": 2.0, "mlp": 5.0}
# (preprocess, classify) -> accuracy: one clear best, one close second that is faster, the rest far below
ACCURACIES = {
    ("none", "linear"): 0.55,
    ("none", "onnx"): 0.70,
    ("none", "mlp"): 0.60,
    ("blur", "linear"): 0.50,
    ("blur", "onnx"): 0.95,
    ("blur", "mlp"): 0.65,
}
SPEC = {
    "name": "synthetic",
    "task": "digits",
    "stages": [
        {"name": "preprocess", "choices": ["none", "blur"]},
        {"name": "classify", "choices": ["linear", "onnx", "mlp"]},
    ],
    "dataset": {"source": "unused.parquet"},
    "objective": {"metric": "accuracy"},
    "sla": {"p95_latency_ms": 10},
}


def synthetic_items(n: int = 300, seed: int = 0) -> pl.DataFrame:
    """items.parquet of an exhaustive run: every configuration on every item, service times per stage."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n)  # an item's difficulty, shared by every configuration
    rows = []
    for (pre, cls), accuracy in ACCURACIES.items():
        noise = 1 + 0.1 * rng.random((n, 2))
        correct = np.where(rng.random(n) < 0.7, hard, rng.random(n)) < accuracy
        for i in range(n):
            pre_ms, cls_ms = PRE_MS[pre] * noise[i, 0], CLS_MS[cls] * noise[i, 1]
            rows.append(
                {
                    "config_id": f"{pre}-{cls}",
                    "preprocess": pre,
                    "classify": cls,
                    "item_id": f"item-{i:04d}",
                    "accuracy": bool(correct[i]),
                    "latency_preprocess_ms": pre_ms,
                    "latency_classify_ms": cls_ms,
                    "latency_total_ms": pre_ms + cls_ms,
                }
            )
    return pl.DataFrame(rows)


def test_replay_spends_less_than_exhaustive_and_picks_the_known_best():
    result = replay(Racing(), synthetic_items(), STAGES, ACCURACY, SLASpec(p95_latency_ms=10), {}, orders=5)
    summary = result["summary"]
    assert summary["exhaustive_best"] == "blur-onnx"
    assert summary["picks_within_tolerance"] == 5
    assert all(o["pick"] == "blur-onnx" for o in result["orders"])
    assert summary["engine_fraction_max"] < 0.6
    assert [o["seed"] for o in result["orders"]] == [0, 1, 2, 3, 4]


def test_a_race_that_drops_nothing_costs_exactly_the_exhaustive_run():
    # a bet gains at most ln(1.75) per item: 300 items cannot reach the ln(1e100) that delta 1e-100 asks
    never = Racing()
    never.settings = replace(never.settings, decision=DecisionSettings(delta=1e-100))
    result = replay(never, synthetic_items(), STAGES, ACCURACY, SLASpec(p95_latency_ms=10), {}, orders=2)
    assert [o["engine_fraction"] for o in result["orders"]] == [1.0, 1.0]
    assert [o["survivors"] for o in result["orders"]] == [6, 6]


def test_keep_pareto_keeps_the_exhaustive_front_that_keep_best_loses():
    items = synthetic_items(600)
    # the front: none-linear (fastest), none-onnx (faster than the best), blur-onnx (the best)
    best = replay(Racing(), items, STAGES, ACCURACY, SLASpec(), {}, orders=3)
    pareto = replay(Racing(keep="pareto"), items, STAGES, ACCURACY, SLASpec(), {}, orders=3)
    assert best["summary"]["exhaustive_pareto_size"] == 3
    assert best["summary"]["pareto_share_mean"] < 0.5
    assert pareto["summary"]["pareto_share_min"] == 1.0
    assert pareto["summary"]["engine_fraction_mean"] < 1.0


@pytest.fixture
def exhaustive_run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "exhaustive").make()
    run.write_parquet("items.parquet", synthetic_items())
    run.write_parquet("configs.parquet", pl.DataFrame({"config_id": pl.Series([], dtype=pl.String)}))
    spec = parse_spec(SPEC)
    manifest = {
        "spec": spec.model_dump(mode="json"),
        "task": {"name": "digits", "version": "1"},
        "objective": {"metric": "accuracy"},
        "search": {"method": "exhaustive"},
    }
    run.write_json("manifest.json", manifest)
    return run


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(search_app, name="search")
    app.command()(lambda: None)  # a second command, so `search` stays a group as in raypipe's app
    return app


def test_the_command_prints_a_table_and_the_summary(exhaustive_run):
    result = CliRunner().invoke(cli(), ["search", "replay", str(exhaustive_run), "--orders", "3"])
    assert result.exit_code == 0, result.output
    assert "racing replayed on 300 items x 6 configurations" in result.output
    assert "pick within tolerance of the exhaustive best (blur-onnx) in 3 of 3 orders" in result.output


def test_the_command_prints_json_with_the_search_params(exhaustive_run):
    args = ["search", "replay", str(exhaustive_run), "--orders", "2", "--json", "--search-param", "seed=7"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert [o["seed"] for o in found["orders"]] == [7, 8]
    assert found["settings"]["keep"] == "best" and found["summary"]["orders"] == 2


def test_the_command_refuses_a_run_that_was_not_exhaustive(exhaustive_run):
    manifest = exhaustive_run.read_json("manifest.json")
    exhaustive_run.write_json("manifest.json", {**manifest, "search": {"method": "racing"}})
    result = CliRunner().invoke(cli(), ["search", "replay", str(exhaustive_run)])
    assert result.exit_code == 2
    assert "is a racing run: replay needs an exhaustive one" in result.output
    result = CliRunner().invoke(cli(), ["search", "replay", str(exhaustive_run), "--search", "halving"])
    assert "replay simulates racing only" in result.output
