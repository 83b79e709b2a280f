"""The peer benchmark and the racing targets: their arithmetic on known numbers, and `--quick` end to end on
the shared Ray (the echo OCR makes a configuration that misses the SLA, so picks are known)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import yaml

from benchmarks import compare, racing, summary
from benchmarks.tune import running_metrics
from raypipe.spec.schema import SLASpec
from raypipe.spec.space import expand_configurations
from raypipe.spec.task import Metric
from raypipe.spec.validation import load_spec
from tests.conftest import REPO

STAGES = ["pre", "ocr"]
ACCURACY = Metric("accuracy", "correct")
SLA = SLASpec(p95_latency_ms=100, min={"accuracy": 0.5})
METHODS = [
    summary.SEQUENTIAL,
    summary.POOL,
    summary.UNSHARED,
    summary.EXHAUSTIVE,
    summary.RACING,
    summary.REPEAT,
    summary.TUNE_GRID,
    summary.TUNE_ASHA,
]


def test_the_bench_spec_and_its_quick_cut():
    spec = load_spec(REPO / "benchmarks" / "bench.yaml")
    assert len(expand_configurations(spec)) == 24
    assert spec.task == "idcard" and [c.key for c in spec.stage("extract").choices] == ["layout"]
    assert spec.sla.min == {"key_fields_exact": 0.3} and spec.sla.p95_latency_ms == 5000
    quick = expand_configurations(compare.quick_spec(spec))
    assert [c.labels for c in quick] == [
        ("none", "none", "original", "tesseract", "layout"),
        ("none", "none", "original", "tesseract-eng", "layout"),
    ]


def peer_rows() -> pl.DataFrame:
    """A sequential loop's rows: pre=a costs 10 ms, pre=b 30, ocr=x 100, ocr=y 300 (y failed once)."""
    return pl.DataFrame(
        {
            "config_id": ["ax", "ax", "by", "by"],
            "item_id": ["i1", "i2", "i1", "i2"],
            "pre": ["a", "a", "b", "b"],
            "ocr": ["x", "x", "y", "y"],
            "call_pre_ms": [10.0, 10.0, 20.0, 40.0],
            "call_ocr_ms": [100.0, 100.0, 300.0, None],
        }
    )


def test_calls_are_priced_per_choice_and_per_stage():
    prices = summary.choice_prices(peer_rows(), STAGES)
    assert prices.rows() == [("ocr", "x", 100.0), ("ocr", "y", 300.0), ("pre", "a", 10.0), ("pre", "b", 30.0)]
    assert summary.stage_prices(peer_rows(), STAGES) == {"pre": 20.0, "ocr": pytest.approx(500 / 3)}
    calls = summary.peer_calls(peer_rows(), STAGES)
    assert calls.rows() == [("ocr", "x", 2), ("ocr", "y", 1), ("pre", "a", 2), ("pre", "b", 2)]
    # 2 x 100 + 1 x 300 + 2 x 10 + 2 x 30 ms; per stage: 3 x 166.7 + 4 x 20 ms
    assert summary.priced_seconds(calls, prices) == pytest.approx(0.58)
    assert summary.priced_by_stage(calls, {"pre": 20.0, "ocr": 500 / 3}) == pytest.approx(0.58)
    # a mix that calls the dear choice more than the loop did: the per-stage price is wrong by the mix
    skewed = pl.DataFrame({"stage": ["ocr", "ocr"], "choice": ["x", "y"], "calls": [1, 3]})
    assert summary.priced_seconds(skewed, prices) == pytest.approx(1.0)
    assert summary.priced_by_stage(skewed, {"ocr": 500 / 3}) == pytest.approx(2 / 3)
    unknown = pl.DataFrame({"stage": ["ocr"], "choice": ["z"], "calls": [1]})
    with pytest.raises(ValueError, match="no isolated price for ocr=z"):
        summary.priced_seconds(unknown, prices)


def test_raypipe_calls_count_a_shared_call_once():
    # item i1: one pre=a call shared by two configurations, two ocr calls; item i2: ocr=x from the cache
    items = pl.DataFrame(
        {
            "item_id": ["i1", "i1", "i2", "i2"],
            "pre": ["a", "a", "a", "a"],
            "ocr": ["x", "y", "x", "y"],
            "cpu_pre_ms": [5.0, 5.0, 6.0, 6.0],
            "busy_pre_ms": [7.0, 7.0, 8.0, 8.0],
            "cached_pre": [False, False, False, False],
            "cpu_ocr_ms": [50.0, 51.0, 50.0, None],
            "busy_ocr_ms": [60.0, 61.0, 60.0, None],
            "cached_ocr": [False, False, True, False],
        }
    )
    calls = summary.raypipe_calls(items, STAGES)
    assert calls.rows() == [("ocr", "x", 1), ("ocr", "y", 1), ("pre", "a", 2)]


def rows_of(config_id: str, correct: list[bool], latency: float, prediction: str = "p") -> pl.DataFrame:
    n = len(correct)
    return pl.DataFrame(
        {
            "config_id": [config_id] * n,
            "pre": ["a"] * n,
            "ocr": [config_id] * n,
            "item_id": [f"i{k}" for k in range(n)],
            "prediction": [prediction] * n,
            "accuracy": correct,
            "latency_total_ms": [latency] * n,
        }
    )


def run_of(method: str, wall: float, rows: pl.DataFrame, calls: list[int]) -> summary.MethodRun:
    frame = pl.DataFrame({"stage": ["ocr", "ocr"], "choice": ["x", "y"], "calls": calls})
    return summary.MethodRun(method, wall, wall, 0.0, 2**30, 0.5, wall / 2, frame, rows)


def test_table_derives_efficiency_speedups_and_judges_picks():
    # "best" 0.75 at 80 ms, "close" 0.745-like (3 of 4) but slower, "fast" misses the accuracy bound
    everything = pl.concat(
        [
            rows_of("best", [True, True, True, False], 80.0),
            rows_of("fast", [False, False, True, False], 10.0),
        ]
    )
    other = pl.concat(
        [rows_of("best", [True, True, True, False], 80.0, "q"), rows_of("fast", [False] * 4, 10.0, "q")]
    )
    prices = pl.DataFrame({"stage": ["ocr", "ocr"], "choice": ["x", "y"], "mean_ms": [100.0, 1000.0]})
    runs = [
        run_of(summary.SEQUENTIAL, 40.0, everything, [10, 10]),
        run_of(summary.EXHAUSTIVE, 10.0, everything, [10, 4]),
        run_of(summary.RACING, 5.0, rows_of("fast", [False] * 4, 10.0), [2, 2]),
        run_of(summary.TUNE_GRID, 20.0, other, [10, 10]),
    ]
    judge = summary.Judge(ACCURACY, SLA, n_items=4, tolerance=0.01, stage_names=STAGES)
    table = summary.comparison_table(runs, 2, prices, {"ocr": 550.0}, judge)
    assert table["method"].to_list() == [
        summary.SEQUENTIAL,
        summary.EXHAUSTIVE,
        summary.RACING,
        summary.TUNE_GRID,
    ]
    # own calls at isolated prices over 2 cores: (10 x 0.1 + 4 x 1.0) / 2 = 2.5 s for exhaustive
    assert table["ideal_seconds"].to_list() == pytest.approx([5.5, 2.5, 1.1, 5.5])
    assert table["efficiency"].to_list() == pytest.approx([5.5 / 40, 0.25, 1.1 / 5, 5.5 / 20])
    assert table["efficiency_by_stage"].to_list() == pytest.approx([5.5 / 40, 3.85 / 10, 1.1 / 5, 5.5 / 20])
    assert table["speedup_vs_sequential"].to_list() == pytest.approx([1, 4, 8, 2])
    assert table["speedup_vs_pool"].null_count() == 4  # no Pool in this table
    assert table["pick"].to_list() == ["best", "best", None, "best"]  # racing kept only an SLA miss
    assert table["pick_choices"].to_list() == ["a/best", "a/best", None, "a/best"]
    assert table["within_tolerance"].to_list() == [True, True, None, True]
    assert table["same_predictions"].to_list() == [1.0, 1.0, 1.0, 0.0]
    assert table["cores_used"].to_list() == [1.0] * 4 and table["peak_rss_mib"].to_list() == [1024.0] * 4


def test_picks_fronts_and_the_repeat_spread():
    first = summary.config_summary(
        pl.concat(
            [
                rows_of("best", [True, True, True, False], 80.0),
                rows_of("second", [True, True, False, True], 50.0),
                rows_of("third", [True, True, False, False], 20.0),
                rows_of("useless", [False] * 4, 5.0),
            ]
        ),
        ACCURACY,
        SLA,
    )
    assert first["sla_pass"].to_list() == [True, True, True, False]  # sorted by id: useless misses the bound
    # best and second tie on 0.75: the faster one is the pick; third is on the front (fastest passing)
    assert summary.pick(first, 4, ACCURACY) == "second"
    assert summary.front(first, ACCURACY) == {"second", "third"}
    assert summary.gap(first, "second", "third", ACCURACY) == pytest.approx(0.25)
    # the repeat measured third slower than second: same objectives, another front
    second = first.with_columns(
        pl.when(pl.col("config_id") == "third")
        .then(60.0)
        .otherwise(pl.col("latency_p95_ms"))
        .alias("latency_p95_ms")
    )
    spread = summary.repeat_spread(first, second, 4, ACCURACY)
    assert spread["pick"] == spread["pick_repeat"] == "second"
    assert spread["objective_max_abs_change"] == 0.0 and spread["p95_max_rel_change"] == pytest.approx(2.0)
    assert spread["front_repeat"] == ["second"] and spread["front_share_in_repeat"] == 0.5
    assert summary.pick(first, 5, ACCURACY) is None  # nobody ran on 5 items


def test_tune_trials_report_their_running_numbers():
    rows = [
        {"key_fields_exact": True, "latency_total_ms": 100.0},
        {"key_fields_exact": False, "latency_total_ms": 300.0},
        {"key_fields_exact": None, "latency_total_ms": 200.0},
    ]
    report = running_metrics(rows, "key_fields_exact", ["key_fields_exact"])
    assert report == {
        "objective": 0.5,
        "p95_ms": pytest.approx(290.0),
        "items": 3,
        "sla_key_fields_exact": 0.5,
    }


def replay_summary(within: int, fraction: float, share: float | None) -> dict:
    return {
        "summary": {
            "orders": 20,
            "picks_within_tolerance": within,
            "engine_fraction_mean": fraction,
            "engine_fraction_max": fraction + 0.1,
            "pareto_share_mean": share,
            "pareto_share_min": share,
        }
    }


def test_racing_targets_are_marked_met_or_not():
    found = {
        "replay": {"best": replay_summary(19, 0.31, 0.4), "pareto": replay_summary(20, 0.55, 0.8)},
        "live": [{"run": "racing keep=best", "wall_vs_exhaustive": 0.5}],
        "icp": None,
    }
    rows = racing.targets(found)
    assert [t["verdict"] for t in rows] == ["met", "not met", "met", "met", "met"]
    assert rows[0]["measured"] == "19 of 20" and rows[3]["measured"] == "80% on average (at least 80%)"
    found["replay"]["best"] = replay_summary(18, 0.2, 0.4)
    found["live"][0]["wall_vs_exhaustive"] = 0.51
    assert [t["verdict"] for t in racing.targets(found)][:3] == ["not met", "met", "not met"]
    found["icp"] = {
        "configurations": 1050,
        "items": 30,
        "cpu_seconds_spent": 1200.0,
        "exhaustive_cpu_seconds_estimate": 4000.0,
        "engine_fraction": 0.3,
        "pick_labels": "orient=none > ocr=rapidocr",
    }
    icp = racing.targets(found)[-1]
    assert icp["verdict"] == "report only" and "--limit 30" in icp["command"]
    assert icp["measured"] == (
        "1,200 CPU-s of calls against an exhaustive estimate of 4,000 (30%); pick orient=none > ocr=rapidocr"
    )


def echo_bench(tmp_path) -> str:
    """bench.yaml with the English Tesseract replaced by an OCR that reads nothing (fast, scores 0)."""
    spec = yaml.safe_load((REPO / "benchmarks" / "bench.yaml").read_text())
    spec["stages"][3]["choices"][1] = {"name": "tests.plugin_stages:EchoOCR", "label": "echo"}
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(spec))
    return str(config)


@pytest.mark.ray
def test_quick_benchmark_end_to_end(ray_cluster, tmp_path):
    out = tmp_path / "out"
    assert compare.main(["--quick", "--config", echo_bench(tmp_path), "--out", str(out)]) == 0

    table = pl.read_parquet(out / "compare.parquet")
    assert table["method"].to_list() == METHODS
    by = {r["method"]: r for r in table.iter_rows(named=True)}
    alone = 2 * 3 * 5  # configurations x items x stages, nothing shared
    for method in (summary.SEQUENTIAL, summary.POOL, summary.UNSHARED, summary.TUNE_GRID):
        assert by[method]["stage_calls"] == alone, method
    shared = 3 * (1 + 1 + 1 + 2 + 2)  # the first three stages' prefix is shared
    assert by[summary.EXHAUSTIVE]["stage_calls"] == by[summary.REPEAT]["stage_calls"] == shared
    assert by[summary.RACING]["stage_calls"] <= shared and by[summary.TUNE_ASHA]["stage_calls"] <= alone
    details = json.loads((out / "compare.json").read_text())
    assert details["extra"][summary.EXHAUSTIVE]["manifest_calls"] == shared  # rows and manifest agree
    for r in by.values():
        assert r["same_predictions"] == 1.0, r["method"]  # same classes, same inputs: same fields read
        assert r["efficiency"] == pytest.approx(r["ideal_seconds"] / r["wall_seconds"])
        assert r["wall_seconds"] > 0 and r["cpu_seconds"] > 0 and r["peak_rss_mib"] > 50
    # echo reads nothing and misses the SLA's bound: every method that ran Tesseract on every item picks it
    tesseract = details["repeat"]["pick"]
    assert tesseract is not None and details["repeat"]["pick_repeat"] == tesseract
    assert {by[m]["pick"] for m in METHODS if m != summary.TUNE_ASHA} == {tesseract}
    assert details["repeat"]["objective_max_abs_change"] == 0.0
    report = (out / "compare.md").read_text()
    assert "--quick" in report and "2 configurations" in report and "| tune-asha |" in report


@pytest.mark.ray
def test_quick_racing_targets_end_to_end(ray_cluster, tmp_path):
    out = tmp_path / "racing"
    assert racing.main(["--quick", "--config", echo_bench(tmp_path), "--out", str(out)]) == 0
    found = json.loads((out / "racing.json").read_text())
    assert {t["verdict"] for t in found["targets"]} <= {"met", "not met"}
    assert len(found["targets"]) == 5 and found["icp"] is None
    assert {row["run"] for row in found["live"]} == {"racing keep=best", "racing keep=pareto"}
    for row in found["live"]:  # 3 items, one look every 10: nothing to drop, the tesseract path is kept
        assert row["survivors"] == 2 and row["within_tolerance"] and row["stage_calls"] <= 21
    assert found["replay"]["best"]["summary"]["orders"] == 2
    assert "## Replays" in (out / "racing.md").read_text()


def test_a_ranked_run_is_judged_on_its_rank_one_not_the_argmax():
    rows = pl.concat(
        [
            rows_of("best", [True, True, True, False], 80.0),
            rows_of("third", [True, True, False, False], 20.0),
        ]
    )
    table = summary.config_summary(rows, ACCURACY, SLA)
    ranked = pl.DataFrame({"rank": [2, 1], "config_id": ["best", "third"]})  # the rule picked "third"
    assert summary.pick(table, 4, ACCURACY) == "best"  # no ranking: the argmax
    assert summary.pick(table, 4, ACCURACY, ranked) == summary.rank_one(ranked) == "third"
    judge = summary.Judge(ACCURACY, SLA, n_items=4, tolerance=0.01, stage_names=STAGES).fit(rows)
    verdict = judge.judge(rows, ranked)
    assert verdict["pick"] == "third" and verdict["gap_to_best"] == pytest.approx(0.25)
    assert verdict["within_tolerance"] is False
    spread = summary.repeat_spread(table, table, 4, ACCURACY, (ranked, None))
    assert spread["pick"] == "third" and spread["pick_repeat"] == "best"


def digits_replay_run(tmp_path) -> str:
    """A small digits run directory to replay: the spec's run.json and items.parquet of 300 items, where
    deskew/onnx is right 97 % of the time, the other configurations 40-60 %, every call 0.5 ms."""
    from raypipe.engine.rundir import Request, RunDir

    spec = load_spec(REPO / "configs" / "digits.yaml")
    run_dir = RunDir(tmp_path / "digits-run").make()
    Request(spec=spec, out=str(run_dir)).save(run_dir)
    configs = expand_configurations(spec)
    rng = np.random.default_rng(3)
    rows = []
    for c in configs:
        rate = 0.97 if c.labels == ("deskew", "onnx") else rng.uniform(0.4, 0.6)
        correct = rng.random(300) < rate
        rows.append(
            pl.DataFrame(
                {
                    "config_id": c.config_id,
                    "item_id": [f"d{i:03d}" for i in range(300)],
                    "accuracy": correct,
                    "latency_total_ms": np.full(300, 0.5),
                }
            )
        )
    pl.concat(rows).write_parquet(tmp_path / "digits-run" / "items.parquet")
    return str(tmp_path / "digits-run")


def test_the_decision_benchmark_in_a_tiny_mode(tmp_path):
    from benchmarks import decisions

    run = digits_replay_run(tmp_path)
    out = tmp_path / "out"
    argv = ["--run", run, "--label", "tiny", "--sizes", "20", "40", "--draws", "3", "--until", "2"]
    assert decisions.main([*argv, "--out", str(out)]) == 0
    found = json.loads((out / "tiny.json").read_text())
    fixed = found["fixed"]
    assert [(r["rule"], r["n"]) for r in fixed] == [
        (rule, n) for n in (20, 40) for rule in ("decision", "previous", "argmax", "asha")
    ]
    assert all(r["runs"] == 3 for r in fixed)
    draws = pl.read_csv(out / "tiny-draws.csv")
    assert draws.height == 2 * 3 * 4 and set(draws["rule"]) == {"decision", "previous", "argmax", "asha"}
    # 20 items cannot certify at delta 0.05 (the p95 test alone needs ~170): undecided, provisional picks
    # are the best point estimate, which here is the true best
    first = fixed[0]
    assert first["answered"] == 0 and first["undecided"] == 3 and first["mean_regret_undecided"] == 0.0
    # the other rules always answer; their failure rate has an exact interval
    assert fixed[2]["answered"] == 3 and fixed[2]["ci_low"] == 0.0 and 0 < fixed[2]["ci_high"] < 1
    until = {r["rule"]: r for r in found["until"]}
    certified = until["until-decided"]
    assert certified["runs"] == 2 and certified["answered"] == 2  # certified within the 300 items
    assert certified["failures"] == 0 and certified["ci_high"] == pytest.approx(1 - 0.025**0.5)
    assert 20 < certified["mean_items"] < 300 and certified["mean_regret_answered"] == 0.0
    assert found["target"]["smallest_fixed_n_as_certain"] is not None
    truth = pl.read_csv(out / "tiny-truth.csv")
    assert truth.height == 16 and truth["choices"][0] == "deskew/onnx" and truth["regret"][0] == 0.0
    assert "## --until-decided" in (out / "tiny.md").read_text()
    # the tables come back from the committed raw files alone
    assert decisions.main(["--resummarize", "--label", "tiny", "--out", str(out)]) == 0
    again = json.loads((out / "tiny.json").read_text())
    assert again["fixed"] == fixed and again["target"] == found["target"]


def test_the_rules_the_decision_benchmark_compares():
    from benchmarks import decision_rules as rules

    # a: right on 10 of 10, 5 ms; b: 8 of 10 (a sign test at 5 % cannot tell it below a), 1 ms; c: 0, 0.5 ms
    scores = np.array([[1.0, 1.0 if i < 8 else 0.0, 0.0] for i in range(10)])
    latency = np.tile([5.0, 1.0, 0.5], (10, 1))
    pool = rules.Pool(
        ["a", "b", "c"], ACCURACY, SLA, {"accuracy": ACCURACY}, scores, latency, {"accuracy": scores}
    )
    assert rules.argmax_rule(pool).pick == "a"
    assert rules.previous_rule(pool).pick == "b"  # the fastest of the group {a, b}; c misses the SLA
    assert rules.decision_rule(pool, rules.DecisionSettings()).status == "undecided"
    assert rules.asha_milestones(8) == [1, 4] and rules.asha_milestones(4) == [1, 4]
    asha = rules.asha_rule(pool, chunk=1)  # a records first at every rung; c falls below the cutoff at 1
    assert asha.pick == "a" and asha.evaluations < 30
