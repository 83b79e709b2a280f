"""Unit tests of raypipe.tasks.idcard.scoring: per-item scores of read fields, CER, the metric catalogue."""

from __future__ import annotations

import json
import random

import pytest

from raypipe.tasks.idcard.fields import EXACT_FIELDS, CardFields, parse_fields
from raypipe.tasks.idcard.generator import generate_dataset
from raypipe.tasks.idcard.scoring import METRICS, OUTPUTS, cer, levenshtein, score

VALID_ID = "11010519491231002X"  # the worked example of GB 11643-1999
CARD_TEXT = (
    "姓名\n张三\n性别\n男\n民族\n汉\n出生\n1949年12月31日\n住址\n北京市朝阳区中山路1号\n公民身份号码\n"
    + VALID_ID
)
CARD_TRUTH = {
    "name": "张三",
    "sex": "男",
    "ethnicity": "汉",
    "birth_date": "1949-12-31",
    "id_number": VALID_ID,
    "text": CARD_TEXT,
}
METRIC_NAMES = [metric.name for metric in METRICS]
# Every catalogue metric is a pass/fail check except these two fractions.
FRACTIONS = {"assertion_score", "cer"}
CHECKS = [name for name in METRIC_NAMES if name not in FRACTIONS]


def read(text: str, confidence: float | None = None) -> CardFields:
    """What the label_value extract stage makes of `text`."""
    return CardFields(parse_fields(text), text, confidence)


def test_score_of_a_perfect_reading_passes_everything():
    row = score(read(CARD_TEXT), CARD_TRUTH)
    assert set(row) == {*METRIC_NAMES, "prediction", *OUTPUTS}
    assert row["assertion_score"] == 1.0 and row["cer"] == 0.0
    assert all(row[name] is True for name in CHECKS), row


def test_score_of_garbled_text_fails_everything():
    row = score(read("@@##\n!!"), CARD_TRUTH)
    assert row["assertion_score"] == 0.0 and row["cer"] > 0.9
    assert not any(row[name] for name in CHECKS), row


def test_score_of_a_wrong_check_digit_fails_only_the_checksum_and_the_id_matches():
    row = score(read(CARD_TEXT.replace(VALID_ID, VALID_ID[:17] + "3")), CARD_TRUTH)
    assert {name for name in CHECKS if not row[name]} == {
        "id_checksum_valid",
        "exact_id_number",
        "key_fields_exact",
    }
    assert row["assertion_score"] == 1.0


def test_a_fixed_plausible_text_passes_the_course_assertion_but_not_the_key_fields():
    # The reason the default objective is key_fields_exact: a pipeline that printed this for every card
    # would score a perfect assertion_score without reading anything.
    card = generate_dataset("clean", 1, seed=0).to_pylist()[0]
    row = score(read("李四\n2000年1月1日\n000000000000000000"), card)
    assert row["assertion_score"] == 1.0
    assert row["key_fields_exact"] is False and row["exact_name"] is False
    assert not row["id_checksum_valid"] and not row["birth_consistent"]
    assert score(read(card["truth_text"]), card)["key_fields_exact"] is True


def test_key_fields_exact_needs_name_birth_date_and_id_number_all_right():
    for field, wrong in [("name", "李四"), ("birth_date", "1949-12-30"), ("id_number", "x")]:
        fields = CardFields({**parse_fields(CARD_TEXT), field: wrong}, CARD_TEXT, None)
        assert score(fields, CARD_TRUTH)["key_fields_exact"] is False, field
    wrong_sex = CardFields({**parse_fields(CARD_TEXT), "sex": "女"}, CARD_TEXT, None)
    assert score(wrong_sex, CARD_TRUTH)["key_fields_exact"] is True


def test_score_accepts_prefixed_truth_and_leaves_unknown_truth_null():
    row = score(read(CARD_TEXT), {"truth_name": "张三", "truth_sex": None, "truth_ethnicity": "  "})
    assert row["exact_name"] is True
    assert row["exact_sex"] is None and row["exact_ethnicity"] is None and row["exact_id_number"] is None
    assert row["key_fields_exact"] is None and row["cer"] is None


def test_score_values_have_their_types():
    row = score(read(CARD_TEXT, confidence=0.75), CARD_TRUTH)
    assert all(type(row[name]) is bool for name in CHECKS), row
    assert type(row["assertion_score"]) is float and type(row["cer"]) is float
    assert row["ocr_confidence"] == 0.75
    assert score(read(CARD_TEXT), CARD_TRUTH)["ocr_confidence"] is None


def test_prediction_is_the_json_of_the_fields_read():
    row = score(read("姓名张三\n出生1990年1月5日"), CARD_TRUTH)
    assert json.loads(row["prediction"]) == {
        "name": "张三",
        "birth_date": "1990-01-05",
        "year": "1990",
        "month": "1",
        "day": "5",
    }
    assert score(read(""), CARD_TRUTH)["prediction"] == "{}"


def test_the_catalogue_declares_each_metric_once_with_its_direction_and_interval():
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    assert {f"exact_{field}" for field in EXACT_FIELDS} <= set(METRIC_NAMES)
    assert [m.name for m in METRICS if m.headline] == ["key_fields_exact", "assertion_score"]
    assert [m.name for m in METRICS if not m.higher_is_better] == ["cer"]
    assert {m.name: m.interval for m in METRICS if m.interval != "wilson"} == {"cer": "normal"}
    label_free = {m.name for m in METRICS if not m.needs_truth}
    assert label_free == {
        "assertion_score",
        "id_checksum_valid",
        "birth_consistent",
        *(f"assert_{check}" for check in ("name", "year", "month", "day", "id")),
    }


def _textbook_levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def test_levenshtein_agrees_with_the_textbook_dynamic_programme():
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("ab张三1") for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice("ab张三1") for _ in range(rng.randint(0, 70)))
        assert levenshtein(a, b) == _textbook_levenshtein(a, b), (a, b)


def test_cer_counts_edits_per_reference_character_ignoring_whitespace():
    assert cer("张 三\n男", "张三男") == 0.0
    assert cer("张四男", "张三男") == pytest.approx(1 / 3)
    assert cer("张三", "张三男") == pytest.approx(1 / 3)
    assert cer("１２", "12") == 0.0
    assert cer("", "") == 0.0 and cer("x", "") == 1.0
    assert cer("abcdef", "ab") == 2.0  # uncapped: the catalogue gives cer a normal interval for this
