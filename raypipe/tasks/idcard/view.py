"""How the HTML report shows an ID card: the image, its labelled OCR boxes, and the fields read against
the truth (compared as the scorer compares them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from raypipe.spec.task import FieldView, ItemBox, ItemView
from raypipe.tasks.idcard.fields import EXACT_FIELDS
from raypipe.tasks.idcard.scoring import _exact


def card_view(image: Any, row: Mapping[str, Any]) -> ItemView:
    """The card with the dataset's OCR annotation (`ocr`: words with quadrilateral boxes) drawn on it."""
    boxes = []
    for entry in row.get("ocr") or []:
        points = tuple((float(x), float(y)) for x, y in (entry.get("box") or []))
        if len(points) >= 3:
            boxes.append(ItemBox(points, str(entry.get("word") or "")))
    return ItemView(image=image, boxes=tuple(boxes))


def card_fields(prediction: str | None, truth: Mapping[str, Any]) -> list[FieldView]:
    """The exactly scored fields: what the extract stage read (the prediction's JSON) against the truth."""
    try:
        read = json.loads(prediction) if prediction else {}
    except ValueError:
        read = {}
    views = []
    for name in EXACT_FIELDS:
        expected = truth.get(f"truth_{name}")
        expected = None if expected is None else str(expected)
        predicted = read.get(name)
        verdict = _exact(predicted, expected)
        views.append(FieldView(name, predicted, expected, None if verdict is None else not verdict))
    return views
