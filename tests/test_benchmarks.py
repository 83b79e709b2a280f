"""The peer benchmark: its table's arithmetic on known numbers, and `--quick` end to end on the shared Ray."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
import yaml

from benchmarks import compare, summary
from raypipe.evaluation import RunResult
from raypipe.space import expand_configurations
from raypipe.spec import load_spec
from tests.conftest import REPO

METHODS = [summary.SEQUENTIAL, summary.POOL, summary.UNSHARED, summary.EXHAUSTIVE, summary.HALVING]


def method_run(method: str, wall: float, engine: float, predictions: list[str]) -> summary.MethodRun:
    frame = pl.DataFrame({"config_id": ["a", "b"], "item_id": ["x", "x"], "prediction": predictions})
    return summary.MethodRun(
        method, wall, engine, 8, 2**30, 0.5, frame, cpu_seconds=wall, others_cpu_seconds=0.0
    )


def test_the_bench_spec_and_its_quick_cut():
    spec = load_spec(REPO / "benchmarks" / "bench.yaml")
    assert len(expand_configurations(spec)) == 24
    quick = expand_configurations(compare.quick_spec(spec))
    assert [c.labels for c in quick] == [
        ("none", "none", "original", "tesseract"),
        ("none", "none", "original", "tesseract-eng"),
    ]


def test_table_derives_speedups_and_efficiency_from_the_ideal():
    runs = [
        method_run(summary.SEQUENTIAL, 40.0, 20.0, ["p", "q"]),
        method_run(summary.POOL, 20.0, 21.0, ["p", "q"]),
        method_run(summary.UNSHARED, 25.0, 22.0, ["p", "q"]),
        method_run(summary.EXHAUSTIVE, 10.0, 16.0, ["p", "q"]),
        method_run(summary.HALVING, 5.0, 4.0, ["p", "other"]),
    ]
    # the strict ideal: 10 calls of a 100 ms stage and 4 of a 1 s stage over 2 cores
    work = {"a": {"calls": 10}, "b": {"calls": 4}}
    strict = summary.priced_seconds(work, {"a": 100.0, "b": 1000.0}) / 2
    assert strict == pytest.approx(2.5)
    table = summary.comparison_table(runs, cores=2, strict_ideal=strict)
    assert table["method"].to_list() == METHODS
    assert table["ideal_seconds"].to_list() == [8.0] * 5  # 16 unique engine-seconds over 2 cores
    assert table["efficiency"].to_list() == pytest.approx([0.2, 0.4, 0.32, 0.8, 1.6])
    assert table["efficiency_strict"].to_list() == pytest.approx([2.5 / w for w in (40, 20, 25, 10, 5)])
    assert table["cores_used"].to_list() == [1.0] * 5
    assert table["speedup_vs_sequential"].to_list() == pytest.approx([1, 2, 1.6, 4, 8])
    assert table["speedup_vs_pool"].to_list() == pytest.approx([0.5, 1, 0.8, 2, 4])
    assert table["same_predictions"].to_list() == [1.0, 1.0, 1.0, 1.0, 0.5]
    assert table["peak_rss_mib"].to_list() == [1024.0] * 5


def test_halving_only_table_leaves_the_peers_columns_empty():
    runs = [
        method_run(summary.EXHAUSTIVE, 10.0, 16.0, ["p", "q"]),
        method_run(summary.HALVING, 5.0, 4.0, ["p", "q"]),
    ]
    table = summary.comparison_table(runs, cores=2)
    assert table["speedup_vs_sequential"].to_list() == [None, None]
    assert table["efficiency"].to_list() == pytest.approx([0.8, 1.6])
    report = summary.markdown_report(table, None, {"command": "python benchmarks/compare.py --halving-only"})
    assert "| raypipe-halving | 5.000 | 4.000 | 8 | – | – | 1.600 | – |" in report


def configs_frame(rows: list[tuple[str, float, float, bool, int | None]]) -> pl.DataFrame:
    ids, acc, p95, sla, dropped = (list(column) for column in zip(*rows, strict=True))
    frame = pl.DataFrame(
        {"config_id": ids, "assertion_accuracy": acc, "latency_p95_ms": p95, "sla_pass": sla},
        schema_overrides={"latency_p95_ms": pl.Float64},
    )
    return frame.with_columns(pl.Series("dropped_round", dropped, dtype=pl.Int64), pareto=pl.lit(True))


def test_halving_is_judged_on_what_it_kept_to_the_end():
    from raypipe.results import with_pareto

    exhaustive = with_pareto(
        configs_frame(
            [
                ("best", 0.9, 900, True, None),
                ("quick", 0.8, 500, True, None),
                ("useless", 0.1, 100, False, None),
            ]
        ).drop("pareto")
    )
    # "lucky" looked perfect and fast on the first items, then was dropped: it must not knock out "quick"
    halving = configs_frame(
        [
            ("best", 0.9, 950, True, None),
            ("quick", 0.8, 480, True, None),
            ("useless", 0.0, 90, False, 0),
            ("lucky", 1.0, 50, True, 1),
        ]
    )
    # a second full run whose latencies moved: "quick" now looks slower than "best"
    repeat = configs_frame([("best", 0.9, 900, True, None), ("quick", 0.8, 990, True, None)])
    quality = summary.halving_quality(
        RunResult(Path("e"), exhaustive, {"engine_seconds": 100.0, "work": {"ocr": {"calls": 40}}}),
        RunResult(Path("h"), halving, {"search": {"engine_seconds": 30.0}, "work": {"ocr": {"calls": 10}}}),
        repeat=repeat,
        mean_ms={"ocr": 350.0},
    )
    assert quality["found_winner"] and quality["winner_kept"] and quality["halving_winner"] == "best"
    assert quality["winner_accuracy_gap"] == 0.0 and quality["n_survivors"] == 2
    assert quality["exhaustive_pareto"] == 3 and quality["pareto_share"] == pytest.approx(2 / 3)
    assert quality["exhaustive_pareto_sla"] == 2 and quality["pareto_share_sla"] == 1.0
    assert quality["pareto_kept_sla"] == 1.0 and quality["pareto_share_repeat"] == pytest.approx(1 / 3)
    assert quality["engine_fraction"] == pytest.approx(0.3)  # as measured
    assert quality["engine_fraction_strict"] == pytest.approx(0.25)  # as priced at the same time per call


@pytest.mark.ray
def test_quick_benchmark_end_to_end(ray_cluster, tmp_path):
    spec = yaml.safe_load((REPO / "benchmarks" / "bench.yaml").read_text())
    # an OCR choice that reads nothing, so that halving has a configuration to drop after its first round
    spec["stages"][3]["choices"][1] = {"name": "tests.plugin_stages:EchoOCR", "label": "echo"}
    spec["sla"]["min_assertion_accuracy"] = 0.7
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert compare.main(["--quick", "--config", str(config), "--out", str(out)]) == 0

    table = pl.read_parquet(out / "compare.parquet")
    assert table["method"].to_list() == METHODS
    assert (table["engine_seconds"] > 0).all() and (table["wall_seconds"] > 0).all()
    by = {r["method"]: r for r in table.iter_rows(named=True)}
    unshared_calls = 2 * 3 * 4  # configurations x items x stages
    assert [by[m]["stage_calls"] for m in METHODS[:3]] == [unshared_calls] * 3
    assert by[summary.EXHAUSTIVE]["stage_calls"] == 3 * (1 + 1 + 1 + 2)  # the prefix is shared
    manifest = json.loads((out / "runs" / "raypipe" / "manifest.json").read_text())
    ideal = manifest["engine_seconds"] / os.cpu_count()
    for r in by.values():
        assert r["ideal_seconds"] == pytest.approx(ideal)
        assert r["efficiency"] == pytest.approx(ideal / r["wall_seconds"])
        assert r["speedup_vs_sequential"] == pytest.approx(
            by["sequential"]["wall_seconds"] / r["wall_seconds"]
        )
        assert r["same_predictions"] == 1.0  # same implementations, same inputs: same text
        assert r["peak_rss_mib"] > 50 and r["cpu_seconds"] > 0

    quality = json.loads((out / "halving.json").read_text())
    halving = json.loads((out / "runs" / "raypipe-halving" / "manifest.json").read_text())
    assert quality["found_winner"] and quality["n_survivors"] == 1  # echo is out after the first round
    # the exhaustive front is Tesseract (accurate) and echo (fast); halving kept Tesseract only
    assert quality["exhaustive_pareto"] == 2 and quality["pareto_share"] == 0.5
    fraction = halving["search"]["engine_seconds"] / manifest["engine_seconds"]
    assert quality["engine_fraction"] == pytest.approx(fraction)

    report = (out / "compare.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert len(rows) == (2 + 5) + (2 + len(quality))  # the methods' table; the halving measures' table
    assert "--quick" in report and "2 configurations" in report
