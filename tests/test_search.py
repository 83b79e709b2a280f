"""Successive halving: the confidence rules on known numbers, and a real run on the shared Ray cluster."""

from __future__ import annotations

import math

import polars as pl
import pytest

from raypipe.evaluation import evaluate
from raypipe.search import (
    Bounds,
    decide,
    drop_reason,
    look_alpha,
    quantile_bounds,
    round_sizes,
    sign_test_p,
)
from raypipe.spec import SLASpec, parse_spec

SLA = SLASpec(p95_latency_ms=100, min_assertion_accuracy=0.5)


def bounds(cid, acc, lo, hi, p95, p95_lo, p95_hi) -> Bounds:
    return Bounds(cid, 50, acc, lo, hi, p95, p95_lo, p95_hi)


def test_round_sizes_double_up_to_the_dataset():
    assert round_sizes(200, 8) == [8, 16, 32, 64, 128, 200]
    assert round_sizes(8, 8) == [8]
    assert round_sizes(5, 8) == [5]


def test_quantile_bounds_bracket_the_p95():
    values = [float(v) for v in range(1, 1001)]
    low, high = quantile_bounds(values)
    assert 930 <= low < 950 < high <= 970
    assert quantile_bounds([5.0, 6.0])[1] == math.inf  # two samples cannot bound a p95 from above


def test_drop_rules():
    best = bounds("best", 0.9, 0.85, 0.95, 50, 40, 60)
    worse = bounds("worse", 0.6, 0.55, 0.65, 50, 40, 60)
    close = bounds("close", 0.88, 0.80, 0.92, 50, 40, 60)
    slow = bounds("slow", 0.95, 0.9, 0.99, 300, 250, 400)
    hopeless = bounds("hopeless", 0.2, 0.1, 0.3, 10, 5, 20)
    everyone = [best, worse, close, slow, hopeless]
    assert drop_reason(best, everyone, SLA) is None
    assert drop_reason(close, everyone, SLA) is None
    assert drop_reason(worse, everyone, SLA).startswith(
        "accuracy: upper bound 0.650 < 0.850, lower bound of best"
    )
    assert drop_reason(slow, everyone, SLA) == "SLA: p95 lower bound 250 ms > 100 ms"
    assert drop_reason(hopeless, everyone, SLA) == "SLA: accuracy upper bound 0.300 < 0.5"
    relaxed = SLASpec(p95_latency_ms=1000, min_assertion_accuracy=0.0)
    dominated = bounds("dominated", 0.5, 0.45, 0.55, 500, 450, 600)
    assert drop_reason(dominated, [best, dominated], relaxed) is not None


def test_sign_test_is_the_binomial_tail():
    assert sign_test_p(5, 0) == 1 / 32
    assert sign_test_p(4, 0) == 1 / 16  # four items cannot reach 95 %
    assert sign_test_p(7, 1) == pytest.approx(9 / 256)
    assert sign_test_p(0, 0) == 1.0


def test_the_paired_level_is_shared_over_the_deciding_rounds():
    assert look_alpha(len(round_sizes(128, 4))) == pytest.approx(0.01)  # 4, 8, ..., 128: five looks decide
    assert look_alpha(len(round_sizes(32, 4))) == pytest.approx(0.05 / 3)
    assert look_alpha(1) == 0.05  # one round on the whole dataset: no look to share with


def rows(scores: dict[str, list[float]]) -> pl.DataFrame:
    n = len(next(iter(scores.values())))
    return pl.DataFrame(
        {
            "config_id": [c for c in scores for _ in range(n)],
            "item_id": [f"i{k}" for _ in scores for k in range(n)],
            "assertion_score": [v for values in scores.values() for v in values],
            "latency_total_ms": [10.0] * (n * len(scores)),
            "error": pl.Series([None] * (n * len(scores)), dtype=pl.String),
        }
    )


def test_paired_test_drops_a_configuration_worse_on_the_same_items():
    # "eng" misses the name on every card: 0.2 below "chi" on each item, while both intervals still overlap
    chi = [1.0, 0.8, 0.6, 1.0, 0.8, 0.6, 1.0, 0.8]
    eng = [v - 0.2 for v in chi]
    noisy = [1.0, 0.6, 0.8, 0.8, 1.0, 0.6, 0.8, 0.8]  # as good as chi on average, better on some items
    sla = SLASpec(p95_latency_ms=100, min_assertion_accuracy=0.5)
    assert decide(rows({"chi": chi, "eng": eng}), sla).keys() == {"eng"}
    assert decide(rows({"chi": chi, "eng": eng}), sla)["eng"] == (
        "accuracy: below chi on 8 of the same items, above on 0 (sign test p = 0.004)"
    )
    assert decide(rows({"chi": chi, "noisy": noisy}), sla) == {}
    assert decide(rows({"chi": chi, "eng": eng}), sla, alpha=0.003) == {}  # p = 1/256 is not below it
    # five items are too few for the same gap (p = 1/32 passes, four would not)
    assert decide(rows({"chi": chi[:4], "eng": eng[:4]}), sla) == {}
    assert decide(rows({"chi": chi[:5], "eng": eng[:5]}), sla).keys() == {"eng"}
    # no configuration meets the SLA: nothing leads, nothing is dropped on accuracy
    strict = SLASpec(p95_latency_ms=5, min_assertion_accuracy=0.5)
    assert all(
        not why.startswith("accuracy") for why in decide(rows({"chi": chi, "eng": eng}), strict).values()
    )


@pytest.mark.ray
def test_halving_drops_a_slow_configuration_early(ray_cluster, tiny_dataset, tmp_path):
    t = "tests.plugin_stages:"
    raw = {
        "name": "halving",
        "stages": [
            {
                "name": "a",
                "choices": [
                    {"name": t + "Identity", "label": "fast"},
                    {"name": t + "Sleepy", "label": "slow", "params": {"seconds": 0.4}},
                ],
            },
            {"name": "b", "choices": [{"name": t + "Brighten", "label": "bright"}]},
            {"name": "ocr", "choices": [{"name": t + "EchoOCR", "label": "echo"}]},
        ],
        "dataset": {"source": str(tiny_dataset)},
        "sla": {"p95_latency_ms": 200, "min_assertion_accuracy": 0.0},
    }
    result = evaluate(parse_spec(raw), out=str(tmp_path / "run"), search="halving", first_round_items=2)
    configs = result.configs.sort("a")
    assert configs["a"].to_list() == ["fast", "slow"]
    assert configs["n_items"].to_list() == [4, 2]
    assert configs["dropped_round"].to_list() == [None, 0]
    assert configs["drop_reason"][1].startswith("SLA: p95 lower bound")
    assert result.configs["a"][0] == "fast"  # survivors rank first; a dropped one is never on the front
    assert configs["pareto"].to_list() == [True, False]
    rounds = pl.read_parquet(result.run_dir / "search.parquet")
    assert rounds["n_configs"].to_list() == [2, 1] and rounds["n_items"].to_list() == [2, 4]
    search = result.manifest["search"]
    assert search["engine_seconds"] < search["exhaustive_estimate_engine_seconds"]
    assert search["engine_seconds"] == search["rounds"][-1]["engine_seconds"]  # the last round counts all
    assert search["paired_test_alpha"] == 0.05  # one deciding round: Bonferroni over one look
