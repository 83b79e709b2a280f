"""Unit tests of the ID-card task as the engine sees it (IdCardTask) and of its extract stage (LabelValue)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from raypipe.engine import codec
from raypipe.errors import DatasetError
from raypipe.spec import registry
from raypipe.tasks.idcard.extract import LabelValue, Layout
from raypipe.tasks.idcard.fields import CardFields, parse_fields
from raypipe.tasks.idcard.generator import generate_dataset, write_dataset
from raypipe.tasks.idcard.profiles import PROFILES
from raypipe.tasks.idcard.schema import CANONICAL_SCHEMA, SLICE_ATTRIBUTES, TRUTH_FIELDS
from raypipe.tasks.idcard.scoring import METRICS, score
from raypipe.tasks.idcard.stages.words import OcrResult, Word, quad_box
from raypipe.tasks.idcard.task import IdCardTask

CHECKS = [m.name for m in METRICS if m.name not in ("assertion_score", "cer")]


@pytest.fixture(scope="module")
def task() -> IdCardTask:
    return IdCardTask()


@pytest.fixture(scope="module")
def cards() -> pa.Table:
    return generate_dataset("clean", 3, seed=6)


def boxed_words(row: dict, confidence: float = 0.8) -> OcrResult:
    """The card's printed words as an engine that read them all would return them."""
    return OcrResult([Word(e["word"], quad_box(e["box"]), confidence) for e in row["ocr"]])


def expected_fields(row: dict) -> dict[str, str]:
    year, month, day = (str(int(part)) for part in row["truth_birth_date"].split("-"))
    return {
        **{f: row[f"truth_{f}"] for f in ("name", "sex", "ethnicity", "birth_date", "id_number")},
        **{"year": year, "month": month, "day": day},
    }


# --- IdCardTask: data ----------------------------------------------------------------------------------


def test_the_registry_resolves_idcard_to_this_task():
    resolved = registry.resolve_task("idcard")
    assert type(resolved) is IdCardTask and resolved.name == "idcard"


def test_generate_is_the_generator_and_load_reads_back_what_it_wrote(task, cards, tmp_path: Path):
    assert task.generate("clean", 3, seed=6).equals(cards)
    path = write_dataset(cards, tmp_path / "cards.parquet")
    loaded = task.load(str(path), limit=2)
    assert loaded.schema == CANONICAL_SCHEMA and loaded.equals(cards.slice(0, 2))


def test_generate_dispatches_on_the_renderer_and_refuses_unknown_options(task):
    assert task.generate("clean", 1, seed=6, renderer="holdout").column("item_id").to_pylist() == [
        "holdout-clean-6-000000"
    ]
    with pytest.raises(DatasetError, match=r"unknown idcard renderer 'fancy': choose standard or holdout"):
        task.generate("clean", 1, seed=0, renderer="fancy")
    with pytest.raises(DatasetError, match=r"unknown idcard generator options: fonts \(known: renderer\)"):
        task.generate("clean", 1, seed=0, fonts="x")


def test_inputs_are_the_encoded_image_bytes_in_table_order(task, cards):
    assert task.inputs(cards).to_pylist() == [image["bytes"] for image in cards.column("image").to_pylist()]


def test_decode_gives_the_rgb_pixels_and_refuses_corrupt_bytes(task, cards):
    data = cards.column("image")[0]["bytes"].as_py()
    decoded = task.decode(data)
    assert decoded.dtype == np.uint8 and decoded.shape == (400, 640, 3)
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        task.decode(data[:50])


def test_has_truth_looks_at_the_key_fields_only(task, cards):
    assert task.has_truth(cards)
    without = cards
    for field in ("name", "birth_date", "id_number"):
        index = without.column_names.index(f"truth_{field}")
        without = without.set_column(index, f"truth_{field}", pa.nulls(cards.num_rows, pa.string()))
    # sex, ethnicity and the text are still there, but no key field can be scored
    assert without.column("truth_sex").null_count == 0 and not task.has_truth(without)
    assert not task.has_truth(cards.drop_columns([f"truth_{f}" for f in TRUTH_FIELDS]))


def test_the_task_declares_what_its_schema_and_generator_hold(task):
    assert task.truth_fields == (*TRUTH_FIELDS, "text")
    assert [a.name for a in task.slice_attributes] == list(SLICE_ATTRIBUTES)
    assert task.profile_names() == list(PROFILES)
    assert registry.resolve("extract", "label_value", task) is LabelValue
    assert registry.resolve("extract", "layout", task) is Layout


# --- IdCardTask: metrics and scoring --------------------------------------------------------------------


def test_default_objective_is_key_fields_with_truth_and_the_assertion_without(task):
    assert task.default_objective(has_truth=True) == "key_fields_exact"
    assert task.default_objective(has_truth=False) == "assertion_score"
    assert not task.metric(task.default_objective(has_truth=False)).needs_truth


def test_metric_lookups_use_the_catalogue(task):
    assert task.metric_names() == [m.name for m in METRICS]
    assert task.metric("cer").higher_is_better is False and task.metric("cer").interval == "normal"
    with pytest.raises(
        KeyError, match=r"task 'idcard' has no metric 'accuracy' \(metrics: key_fields_exact, "
    ):
        task.metric("accuracy")
    assert task.slice_attribute("blur").zero_bin and task.slice_attribute("skew_angle").bins == (-2.0, 2.0)
    assert task.slice_attribute("colour") is None


def test_score_of_extracted_fields_is_the_scoring_functions(task, cards):
    row = cards.to_pylist()[0]
    fields = LabelValue()(boxed_words(row))
    assert task.score(fields, row) == score(fields, row)
    assert task.score(fields, row)["key_fields_exact"] is True


def test_score_of_a_failed_item_fails_every_check(task, cards):
    row = task.score(None, cards.to_pylist()[0])
    assert {name: row[name] for name in CHECKS} == dict.fromkeys(CHECKS, False)
    assert row["assertion_score"] == 0.0 and row["cer"] == 1.0
    assert row["prediction"] == "{}" and row["ocr_confidence"] is None


def test_score_when_the_last_stage_is_ocr_reads_the_fields_with_label_value(task, cards):
    row = cards.to_pylist()[1]
    ocr = boxed_words(row, confidence=0.5)
    assert task.score(ocr, row) == task.score(LabelValue()(ocr), row)
    scored = task.score(ocr, row)
    assert scored["key_fields_exact"] is True and scored["ocr_confidence"] == 0.5


def test_check_stages_wants_fields_or_ocr_words_from_the_last_stage(task):
    assert task.check_stages(["orient", "ocr", "extract"]) == []
    assert task.check_stages(["orient", "ocr"]) == []
    assert task.check_stages(["ocr", "channel"]) == [
        "the idcard scorer reads fields: the last stage must be extract or ocr, not channel"
    ]


# --- the LabelValue extract stage -----------------------------------------------------------------------


def test_label_value_reads_every_field_of_a_card_read_word_by_word(cards):
    for row in cards.to_pylist():
        fields = LabelValue()(boxed_words(row, confidence=0.9))
        assert dict(fields.values) == expected_fields(row), row["item_id"]
        assert fields.text == boxed_words(row).text and fields.confidence == pytest.approx(0.9)


def test_label_value_averages_the_word_confidences_and_has_none_for_no_words():
    words = [Word("姓名张三", None, 1.0), Word("出生1990年1月5日", None, 0.5)]
    assert LabelValue()(OcrResult(words)).confidence == 0.75
    empty = LabelValue()(OcrResult([]))
    assert empty.confidence is None and empty.text == ""
    assert all(value is None for value in empty.values.values())


def test_label_value_takes_plain_text_from_a_users_engine():
    text = "姓名\n张三\n\n出生\n1990年1月5日"
    fields = LabelValue()(text)
    assert fields == CardFields(parse_fields(text), "姓名\n张三\n出生\n1990年1月5日", 1.0)


def test_label_value_output_round_trips_through_the_stage_cache_codec(cards):
    fields = LabelValue()(boxed_words(cards.to_pylist()[0]))
    blob = codec.encode(fields)
    assert blob is not None, "CardFields must be @plain to be cached"
    assert codec.decode(blob)[0] == fields


def test_extract_stages_ask_for_a_small_cpu_share():
    for stage_class in (LabelValue, Layout):
        assert (stage_class.resources.num_cpus, stage_class.resources.num_gpus) == (0.25, 0.0)
        assert stage_class.resources.batch_size == 8 and isinstance(stage_class.version, str)


# -- what an engine's alphabet rules out, up front ---------------------------------------------------------


def test_an_english_only_engine_cannot_score_the_key_fields_of_chinese_names(task):
    from raypipe.evaluate.driver import unwritable_notes
    from raypipe.spec.space import expand_configurations
    from raypipe.spec.validation import load_spec
    from raypipe.tasks.idcard.stages.ocr_easyocr import EasyOCR, english_g2_characters

    english = english_g2_characters()
    assert english is not None and "A" in english and "7" in english and "王" not in english
    assert EasyOCR.alphabet(lang=("en",)) == english and EasyOCR.alphabet(lang=("ch_sim", "en")) is None
    cards = task.generate("mixed", 12, seed=4)
    zero = task.unwritable(english, cards)
    assert set(zero) == {"exact_name", "key_fields_exact"} and "name" in zero["key_fields_exact"]
    # one item whose name the engine can write is enough to score: nothing is 0 by construction then
    names = cards.column("truth_name").to_pylist()
    latin = cards.set_column(
        cards.column_names.index("truth_name"), "truth_name", pa.array(["LI WEI", *names[1:]])
    )
    assert task.unwritable(english, latin) == {}
    assert task.unwritable(english + "".join(set("".join(names))), cards) == {}

    spec = load_spec(Path(__file__).resolve().parent.parent / "configs" / "icp.yaml")
    (note,) = unwritable_notes(
        spec, task, task.metric("key_fields_exact"), cards, expand_configurations(spec)
    )
    assert note.startswith("ocr easyocr writes only Latin letters") and "for its 350 configurations" in note
    assert "miss the SLA's key_fields_exact >= 0.6" in note
    # a metric it can score (the label-free assertion) is no reason for a note, but the SLA's bound still is
    (note,) = unwritable_notes(spec, task, task.metric("assertion_score"), cards, expand_configurations(spec))
    assert "key_fields_exact" in note
    quick = load_spec(Path(__file__).resolve().parent.parent / "configs" / "icp-quick.yaml")
    quick_configs = expand_configurations(quick)
    assert unwritable_notes(quick, task, task.metric("key_fields_exact"), cards, quick_configs) == []
