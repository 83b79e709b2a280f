"""The ranked table printed by `raypipe run` and `raypipe report`: pure rendering, no Ray."""

from __future__ import annotations

import polars as pl
from rich.console import Console

from raypipe.report import print_ranked


def configs(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "config_id": [f"cfg{k:05d}xyz" for k in range(n)],
            "ocr": [f"engine{k}" for k in range(n)],
            "assertion_accuracy": [0.9 - k / 10 for k in range(n)],
            "assertion_ci_low": [0.8 - k / 10 for k in range(n)],
            "assertion_ci_high": [0.95 - k / 10 for k in range(n)],
            "exact_id_number": [1.0] * n,
            "exact_name": [0.5] * n,
            "latency_p50_ms": [100.0 * (k + 1) for k in range(n)],
            "latency_p95_ms": [1500.0 * (k + 1) for k in range(n)],
            "n_errors": [0] * n,
            "sla_pass": [k == 0 for k in range(n)],
            "pareto": [True] * n,
        }
    )


def render(frame: pl.DataFrame, top: int | None) -> str:
    console = Console(record=True, width=200)
    print_ranked(frame, ["ocr"], console, top)
    return console.export_text()


def test_the_table_says_how_many_rows_it_hides():
    text = render(configs(3), top=2)
    assert "engine1" in text and "engine2" not in text
    assert "2 of 3 shown (1 more: `raypipe report RUN_DIR`)" in text
    assert "0.900 [0.80, 0.95]" in text and "1,500" in text and "pass" in text and "fail" in text


def test_the_whole_table_has_no_hidden_rows_line():
    text = render(configs(3), top=None)
    assert "engine2" in text and "shown" not in text
