"""Unit tests of raypipe.tasks.idcard.fields: parsing noisy OCR text, ID checksums, the course assertion."""

from __future__ import annotations

import random

import pytest

from raypipe.tasks.idcard.fields import (
    ASSERTIONS,
    ETHNICITIES,
    FIELD_NAMES,
    CardFields,
    assertion_score,
    birth_consistent,
    course_assertion,
    id_check_digit,
    id_checksum_valid,
    normalise_line,
    parse_fields,
)

# 11010519491231002X is the worked example of GB 11643-1999; the other two are built from it.
VALID_ID = "11010519491231002X"
CARD_TEXT = (
    "姓名\n张三\n性别\n男\n民族\n汉\n出生\n1949年12月31日\n住址\n北京市朝阳区中山路1号\n公民身份号码\n"
    + VALID_ID
)


def test_parse_fields_reads_a_clean_card_with_labels_on_their_own_lines():
    assert parse_fields(CARD_TEXT) == {
        "name": "张三",
        "sex": "男",
        "ethnicity": "汉",
        "birth_date": "1949-12-31",
        "year": "1949",
        "month": "12",
        "day": "31",
        "id_number": VALID_ID,
    }


def test_parse_fields_returns_exactly_the_declared_field_names():
    assert tuple(parse_fields(CARD_TEXT)) == FIELD_NAMES
    assert tuple(parse_fields("")) == FIELD_NAMES


def test_parse_fields_reads_labels_glued_to_their_values():
    text = "姓名李小龙\n性别女民族蒙古\n出生1990年1月5日\n住址上海市徐汇区\n公民身份号码" + VALID_ID
    fields = parse_fields(text)
    assert (fields["name"], fields["sex"], fields["ethnicity"]) == ("李小龙", "女", "蒙古")
    assert (fields["birth_date"], fields["id_number"]) == ("1990-01-05", VALID_ID)


def test_parse_fields_reads_a_labelled_sex_followed_by_another_field():
    assert parse_fields("性别女出生1990年1月5日")["sex"] == "女"


def test_parse_fields_ignores_spaces_inside_words_and_tesseract_splits():
    text = (
        "姓 名 王 五\n性 别 : 男 民 族 : 土 家\n出 生 1990 年 1 月 5 日\n公民身份号码 1101 0519 4912 3100 2x"
    )
    fields = parse_fields(text)
    assert (fields["name"], fields["sex"], fields["ethnicity"]) == ("王五", "男", "土家")
    assert (fields["birth_date"], fields["id_number"]) == ("1990-01-05", VALID_ID)


def test_parse_fields_reads_full_width_digits_and_colons():
    text = "姓名：赵六\n出生：１９８８年１１月２日\n公民身份号码：１１０１０５１９４９１２３１００２ｘ"
    fields = parse_fields(text)
    assert (fields["name"], fields["birth_date"], fields["id_number"]) == ("赵六", "1988-11-02", VALID_ID)


def test_parse_fields_finds_a_date_split_over_lines_as_sparse_ocr_prints_it():
    fields = parse_fields("出生\n1990年\n\n12月\n\n31日")
    assert (fields["year"], fields["month"], fields["day"]) == ("1990", "12", "31")


def test_parse_fields_returns_nothing_for_garbled_text():
    fields = parse_fields("#@! ~~ 3x9\nIKE lll 0O0\n%%")
    assert all(value is None for value in fields.values()), fields


def test_parse_fields_keeps_a_half_read_date_but_no_impossible_birth_date():
    fields = parse_fields("出生1990年13月5日")
    assert (fields["year"], fields["month"], fields["day"], fields["birth_date"]) == ("1990", "13", "5", None)
    half = parse_fields("出生1990年 ?? 5日")
    assert (half["year"], half["month"], half["day"], half["birth_date"]) == ("1990", None, "5", None)


def test_parse_fields_does_not_cut_an_id_out_of_a_longer_digit_run():
    assert parse_fields("公民身份号码 1101051949123100211")["id_number"] is None
    assert parse_fields("公民身份号码 11010519491231002")["id_number"] is None


def test_parse_fields_keeps_a_house_number_apart_from_the_id_on_the_next_line():
    fields = parse_fields("住址北京市中山路12\n" + VALID_ID)
    assert fields["id_number"] == VALID_ID


def test_parse_fields_takes_an_unlabelled_first_line_as_the_name_only_if_it_looks_like_one():
    assert parse_fields("张三\n男\n汉")["name"] == "张三"
    assert parse_fields("1990年1月5日\n张三")["name"] is None
    assert parse_fields("姓名\n性别男")["name"] is None


def test_parse_fields_reads_sex_and_ethnicity_on_their_own_lines_without_labels():
    fields = parse_fields("张三\n女\n维吾尔族")
    assert (fields["sex"], fields["ethnicity"]) == ("女", "维吾尔")


def test_parse_fields_prefers_the_id_whose_check_digit_is_valid():
    assert parse_fields(VALID_ID[:17] + "3\n" + VALID_ID)["id_number"] == VALID_ID


def test_id_number_next_to_other_digits_on_its_line():
    # OCR lines join words with spaces; a stray code beside the ID must not glue onto it
    text = "'4R54564 370102198512220743"
    assert parse_fields(text)["id_number"] == "370102198512220743"
    assert parse_fields("公民身份号码 3701 0219 8512 2207 43")["id_number"] == "370102198512220743"


def test_normalise_line_folds_full_width_drops_separators_and_upper_cases():
    assert normalise_line(" 公民身份号码：１１０１ ０５|x\t") == "公民身份号码110105X"
    assert normalise_line(" : ; _ ") == ""


def test_the_ethnicity_list_is_the_56_recognised_groups():
    assert len(ETHNICITIES) == len(set(ETHNICITIES)) == 56
    assert {"汉", "蒙古", "维吾尔", "基诺"} <= set(ETHNICITIES)


def test_id_check_digit_matches_the_standard_example():
    assert id_check_digit(VALID_ID[:17]) == "X"
    assert id_check_digit("44052418800101001") == "4"
    with pytest.raises(ValueError, match="exactly 17 digits"):
        id_check_digit("1234")


def test_id_check_digit_satisfies_the_iso_7064_definition():
    # MOD 11-2: with X = 10, the sum of each character times 2^(18 - position) is 1 modulo 11.
    rng = random.Random(1)
    for _ in range(300):
        first17 = "".join(rng.choice("0123456789") for _ in range(17))
        characters = first17 + id_check_digit(first17)
        values = [10 if char == "X" else int(char) for char in characters]
        assert sum(value * pow(2, 17 - index, 11) for index, value in enumerate(values)) % 11 == 1


def test_id_checksum_valid_rejects_a_wrong_check_digit_and_bad_shapes():
    assert id_checksum_valid(VALID_ID)
    assert id_checksum_valid(VALID_ID.lower())
    assert not id_checksum_valid(VALID_ID[:17] + "3")
    assert not id_checksum_valid(VALID_ID[:16])
    assert not id_checksum_valid(None)


def test_birth_consistent_compares_the_birth_date_with_the_id():
    assert birth_consistent({"birth_date": "1949-12-31", "id_number": VALID_ID})
    assert not birth_consistent({"birth_date": "1949-12-30", "id_number": VALID_ID})
    assert not birth_consistent({"birth_date": None, "id_number": VALID_ID})
    assert not birth_consistent({"birth_date": "1949-12-31", "id_number": "garbage"})


@pytest.mark.parametrize(
    ("fields", "failing"),
    [
        ({"name": "张三", "year": "1900", "month": "1", "day": "1", "id_number": VALID_ID}, set()),
        ({"name": "张三", "year": "2025", "month": "12", "day": "31", "id_number": VALID_ID}, set()),
        ({"name": None, "year": "1899", "month": "0", "day": "32", "id_number": None}, "all"),
        (
            {"name": "张三", "year": "2026", "month": "13", "day": "31", "id_number": "123"},
            {"year", "month", "id"},
        ),
    ],
)
def test_course_assertion_checks_each_field_and_its_range(fields, failing):
    checks = course_assertion(fields)
    failed = {name.removeprefix("assert_") for name, passed in checks.items() if not passed}
    assert failed == ({"name", "year", "month", "day", "id"} if failing == "all" else failing)


def test_course_assertion_accepts_an_id_with_a_wrong_check_digit():
    assert course_assertion({"id_number": VALID_ID[:17] + "3"})["assert_id"]


def test_assertion_score_is_the_fraction_of_the_five_checks_that_pass():
    assert tuple(course_assertion({})) == ASSERTIONS
    assert assertion_score(course_assertion({})) == 0.0
    assert assertion_score(course_assertion({"name": "张三", "year": "1990", "id_number": VALID_ID})) == 0.6
    assert assertion_score(course_assertion(parse_fields(CARD_TEXT))) == 1.0


def test_card_fields_get_reads_a_field_and_gives_none_for_a_missing_one():
    fields = CardFields({"name": "张三"}, "张三", 0.9)
    assert (fields.get("name"), fields.get("id_number")) == ("张三", None)
    assert CardFields() == CardFields({}, "", None)
