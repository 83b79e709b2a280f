"""The decision the framework issue is about: on upside-down cards, reading fields by layout makes the
orientation step unnecessary, and raypipe must rank the faster configuration first.

RapidOCR (with its direction classifier) reads turned cards word for word but returns the lines of an
upside-down card in reverse order, each label after its value; the course's label-then-value parser then
finds no name. The layout extractor pairs labels and values by geometry. Cards come from both generators:
the standard one, and the differently rendered holdout set that raypipe never tunes on.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from raypipe.datasets import write_table
from raypipe.evaluation import evaluate
from raypipe.registry import resolve_task
from tests.conftest import request_for

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def upside_down_run(ray_cluster, tmp_path_factory):
    task = resolve_task("idcard")
    standard = task.generate("rotated", 24, seed=21)
    standard = standard.filter(pc.equal(standard.column("rotation"), 180))
    holdout = task.generate("upside_down", 12, seed=21, renderer="holdout")
    cards = pa.concat_tables([standard, holdout])
    folder = tmp_path_factory.mktemp("upside-down")
    write_table(cards, str(folder / "cards.parquet"))
    raw = {
        "name": "upside-down",
        "task": "idcard",
        "stages": [
            {"name": "orient", "choices": ["none", {"name": "osd", "params": {"min_confidence": 1.0}}]},
            {"name": "ocr", "choices": ["rapidocr"]},
            {"name": "extract", "choices": ["label_value", "layout"]},
        ],
        "dataset": {"source": str(folder / "cards.parquet")},
        "sla": {"p95_latency_ms": 10000},
    }
    return cards.num_rows, evaluate(request_for(raw, folder / "run"))


def test_the_fastest_configuration_tied_with_the_best_ranks_first(upside_down_run):
    n_cards, result = upside_down_run
    configs = result.configs
    assert n_cards >= 16
    first = configs.row(0, named=True)
    assert (first["orient"], first["extract"]) == ("none", "layout")
    assert first["tied"] and first["objective"] >= 0.9
    twin = configs.filter((pl.col("orient") == "osd") & (pl.col("extract") == "layout")).row(0, named=True)
    assert twin["rank"] > first["rank"]
    assert twin["latency_p95_ms"] > first["latency_p95_ms"]  # OSD costs a Tesseract call per card
    best = configs["objective"].max()
    assert first["objective_ci_low"] <= best <= first["objective_ci_high"]  # within the best's interval


def test_the_course_parser_scores_the_fixed_assertion_but_not_the_fields(upside_down_run):
    _, result = upside_down_run
    parser = result.configs.filter((pl.col("orient") == "none") & (pl.col("extract") == "label_value"))
    row = parser.row(0, named=True)
    # the course assertion still passes 4 of its 5 checks; the default objective sees the missing name
    assert row["assertion_score"] >= 0.7 and row["objective"] <= 0.2 and not row["tied"]
