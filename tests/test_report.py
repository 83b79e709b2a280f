"""The tables printed by `raypipe run` and `raypipe report`: pure rendering, no Ray."""

from __future__ import annotations

import polars as pl
from rich.console import Console

from raypipe.report.terminal import print_ranked, slice_summary_table
from raypipe.spec.task import Metric

OBJECTIVE = Metric("accuracy", "the label predicted right")
HEADLINE = [Metric("confidence", "top probability", needs_truth=False)]


def configs(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "config_id": [f"cfg{k:05d}xyz" for k in range(n)],
            "ocr": [f"engine{k}" for k in range(n)],
            "objective": [0.9 - k / 10 for k in range(n)],
            "objective_ci_low": [0.8 - k / 10 for k in range(n)],
            "objective_ci_high": [0.95 - k / 10 for k in range(n)],
            "confidence": [0.5] * n,
            "latency_p50_ms": [100.0 * (k + 1) for k in range(n)],
            "latency_p95_ms": [1500.0 * (k + 1) for k in range(n)],
            "busy_p95_ms": [3000.0 * (k + 1) for k in range(n)],
            "n_errors": [0] * n,
            "sla_pass": [k == 0 for k in range(n)],
            "pareto": [True] * n,
            "tied": [k < 2 for k in range(n)],
        }
    )


def render(frame: pl.DataFrame, top: int | None) -> str:
    console = Console(record=True, width=250)
    print_ranked(frame, ["ocr"], OBJECTIVE, HEADLINE, console, top)
    return console.export_text()


def test_the_table_says_how_many_rows_it_hides():
    text = render(configs(3), top=2)
    assert "engine1" in text and "engine2" not in text
    assert "2 of 3 shown (1 more: `raypipe report RUN_DIR`)" in text
    assert "0.900 [0.80, 0.95]" in text and "1,500" in text and "3,000" in text and "pass" in text
    assert "fail" in text and "confidence" in text and "decision order, by accuracy" in text


def test_an_older_runs_tied_group_is_marked_and_the_whole_table_hides_nothing():
    text = render(configs(3), top=None)
    assert "engine2" in text and "shown" not in text
    lines = [line for line in text.splitlines() if "engine" in line]
    assert [" = " in line for line in lines] == [True, True, False]


def test_the_decision_marks_the_pick_its_group_and_dropped_rows_come_unranked():
    frame = configs(4).with_columns(
        pl.Series("rank", [1, 2, 3, None], dtype=pl.UInt32),
        pl.Series("decision", ["pick", "candidate", "excluded", "dropped"]),
        pl.Series("sla_status", ["undecided", "undecided", "misses", None]),
    )
    text = render(frame, top=None)
    lines = [line for line in text.splitlines() if "engine" in line]
    assert ">>" in lines[0] and "?" in lines[1] and " x " in lines[3]
    assert lines[3].startswith("│ - │")  # a dropped configuration has no rank
    assert "misses (fail)" in lines[2] and "? (pass)" in lines[0]


def test_slice_table_names_winners_or_says_why_not():
    summary = pl.DataFrame(
        {
            "dimension": ["profile", "profile"],
            "cell": ["clean", "rotated"],
            "cell_items": [40, 3],
            "winner": ["cfg00000xyz", None],
            "n_tied": [2, None],
            "note": [None, "too few items (3 < 20)"],
            "winner_objective": [0.95, None],
            "ci_low": [0.83, None],
            "ci_high": [0.99, None],
            "latency_p95_ms": [120.0, None],
        }
    )
    console = Console(record=True, width=250)
    console.print(slice_summary_table(summary, configs(1), ["ocr"]))
    text = console.export_text()
    assert "cfg00000 engine0" in text and "0.950 [0.83, 0.99]" in text and "too few items (3 < 20)" in text
