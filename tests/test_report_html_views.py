"""The tasks' item views for the HTML report, and the engine's choice of wrong items and thumbnails (no
browser needed)."""

from __future__ import annotations

import json

import polars as pl

from raypipe.report.html.items import carried_items, thumbnail, wrong_column
from raypipe.spec.registry import resolve_task
from raypipe.spec.task import FieldView, Metric


def test_a_field_without_truth_is_never_wrong_and_the_tasks_verdict_wins():
    assert not FieldView("x", "a", None).differs
    assert FieldView("x", "a", "b").differs
    assert not FieldView("x", " a", "a", wrong=False).differs


def test_idcard_view_shows_the_card_its_boxes_and_fields_compared_as_the_scorer_does():
    task = resolve_task("idcard")
    table = task.generate("rotated", 1, seed=2)
    row = table.to_pylist()[0]
    view = task.view_input(task.inputs(table)[0].as_py(), row)
    assert view.image.shape[2] == 3 and len(view.boxes) == len(row["ocr"])
    assert {b.label for b in view.boxes} >= {row["truth_name"], row["truth_id_number"]}
    fields = {f.name: f for f in task.view_fields(json.dumps({"name": row["truth_name"]}), row)}
    assert (
        not fields["name"].differs and fields["id_number"].differs and fields["id_number"].predicted is None
    )
    assert all(f.differs for f in task.view_fields("not json", row))


def test_digits_view_is_the_8x8_image_and_the_digit_against_its_label():
    task = resolve_task("digits")
    table = task.generate("clean", 1, seed=1)
    row = table.to_pylist()[0]
    view = task.view_input(task.inputs(table)[0].as_py(), row)
    assert view.image.shape == (8, 8) and view.pixelated
    (field,) = task.view_fields(str(row["truth_label"]), row)
    assert field.name == "digit" and not field.differs
    shown = thumbnail(view)
    assert shown["src"].startswith("data:image/png;base64,") and (shown["w"], shown["h"]) == (8, 8)


def test_wrong_means_failed_or_below_the_best_value_and_the_picks_wrong_items_come_first():
    items = pl.DataFrame(
        {
            "config_id": ["a", "a", "b", "b", "c", "c"],
            "item_id": ["1", "2", "1", "2", "1", "2"],
            "error": [None, None, None, "timeout", None, None],
            "accuracy": [True, True, False, True, False, False],
        }
    )
    wrong = items.select("config_id", "item_id", wrong_column(items, Metric("accuracy", "")).alias("wrong"))
    assert wrong["wrong"].to_list() == [False, False, True, True, True, True]
    assert carried_items(wrong, pick="b") == ["1", "2"]  # item 1: wrong for b and c; 2: for b (error) and c
    errors = pl.DataFrame(
        {"config_id": ["a", "b"], "item_id": ["1", "1"], "error": [None, None], "cer": [0.1, 0.0]}
    )
    lower = wrong_column(errors, Metric("cer", "", higher_is_better=False))
    assert errors.select(lower.alias("wrong"))["wrong"].to_list() == [True, False]
