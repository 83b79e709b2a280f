"""Per-item scores of an ID-card prediction against its truth, and the task's metric catalogue."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from raypipe.spec.task import Metric
from raypipe.tasks.idcard.fields import (
    ASSERTIONS,
    EXACT_FIELDS,
    FIELD_NAMES,
    KEY_FIELDS,
    CardFields,
    assertion_score,
    birth_consistent,
    course_assertion,
    id_checksum_valid,
    normalise_line,
)

METRICS: tuple[Metric, ...] = (
    Metric(
        "key_fields_exact",
        "name, birth date and ID number all exactly right (the default objective when the data has truth)",
        headline=True,
    ),
    Metric(
        "assertion_score",
        "the course assertion, label-free: the fraction of its 5 checks that pass (a name; a year 1900-2025; "
        "a month 1-12; a day 1-31; an 18-character ID); the default objective without truth",
        needs_truth=False,
        headline=True,
    ),
    *(Metric(f"exact_{f}", f"the {f.replace('_', ' ')} read exactly right") for f in EXACT_FIELDS),
    Metric("id_checksum_valid", "the ID read passes its ISO 7064 MOD 11-2 check digit", needs_truth=False),
    Metric("birth_consistent", "the birth date read equals the date inside the ID read", needs_truth=False),
    *(Metric(a, f"course check {a.removeprefix('assert_')} passes", needs_truth=False) for a in ASSERTIONS),
    Metric(
        "cer",
        "character error rate of all the card's text (edit distance / reference length, uncapped)",
        higher_is_better=False,
        interval="normal",
    ),
)
OUTPUTS: tuple[str, ...] = ("ocr_confidence",)


def score(output: CardFields | None, truth: Mapping[str, Any]) -> dict[str, Any]:
    """Every catalogue metric for one item, plus `prediction` (the fields read, as JSON) and the OCR
    confidence. `output` None means the pipeline failed on the item: every check fails.

    `truth` holds "name", "sex", "ethnicity", "birth_date", "id_number" and "text" (a `truth_` prefix is
    accepted too). Where the truth of a field is unknown, its exact_* value and cer are None, not False.
    """
    fields = output if output is not None else CardFields({}, "", None)
    values = {name: fields.get(name) for name in FIELD_NAMES}
    checks = course_assertion(values)
    row: dict[str, Any] = {**checks, "assertion_score": assertion_score(checks)}
    for name in EXACT_FIELDS:
        row[f"exact_{name}"] = _exact(values[name], _truth_value(truth, name))
    key = [row[f"exact_{name}"] for name in KEY_FIELDS]
    row["key_fields_exact"] = None if any(k is None for k in key) else all(key)
    row["id_checksum_valid"] = id_checksum_valid(values["id_number"])
    row["birth_consistent"] = birth_consistent(values)
    reference = _truth_value(truth, "text")
    row["cer"] = None if reference is None else cer(fields.text, reference)
    row["prediction"] = json.dumps({k: v for k, v in values.items() if v}, ensure_ascii=False, sort_keys=True)
    row["ocr_confidence"] = fields.confidence
    return row


def _truth_value(truth: Mapping[str, Any], field: str) -> str | None:
    value = truth.get(field, truth.get(f"truth_{field}"))
    return None if value is None else str(value)


def _exact(predicted: str | None, expected: str | None) -> bool | None:
    if expected is None or not expected.strip():
        return None
    return predicted is not None and normalise_line(predicted) == normalise_line(expected)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute) between two strings.

    Myers' bit-parallel algorithm (Hyyrö's formulation) on Python integers: one pass over `b` with
    a few big-int operations per character, ~50x faster than the textbook DP, which matters when
    every item of every configuration is scored.
    """
    if not a:
        return len(b)
    mask = (1 << len(a)) - 1
    last = 1 << (len(a) - 1)
    peq: dict[str, int] = {}
    for index, char in enumerate(a):
        peq[char] = peq.get(char, 0) | (1 << index)
    pv, mv, distance = mask, 0, len(a)
    for char in b:
        eq = peq.get(char, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        distance += 1 if ph & last else -1 if mh & last else 0
        ph = (ph << 1) | 1
        mh <<= 1
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv & mask
    return distance


def cer(prediction: str, reference: str) -> float:
    """Character error rate: edit distance / reference length, whitespace ignored, both NFKC-normalised.

    An empty reference gives 0.0 for an empty prediction and 1.0 otherwise. CER is not capped:
    a prediction much longer than the reference can score above 1.
    """
    predicted = _without_whitespace(prediction)
    expected = _without_whitespace(reference)
    if not expected:
        return 0.0 if not predicted else 1.0
    return levenshtein(expected, predicted) / len(expected)


def _without_whitespace(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))
