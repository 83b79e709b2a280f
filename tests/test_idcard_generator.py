"""Unit tests of the ID-card task's synthetic generator: validity, profiles, determinism, atomic writes."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from raypipe.errors import DatasetError
from raypipe.tasks.idcard import render
from raypipe.tasks.idcard.fields import birth_consistent, id_checksum_valid
from raypipe.tasks.idcard.generator import generate_dataset, write_dataset
from raypipe.tasks.idcard.identity import Identity, make_id_number
from raypipe.tasks.idcard.profiles import PROFILES
from raypipe.tasks.idcard.schema import CANONICAL_SCHEMA, SLICE_ATTRIBUTES

LABEL_WORDS = ["姓名", "性别", "民族", "出生", "住址", "公民身份号码"]


@pytest.fixture(scope="module")
def clean_rows() -> list[dict]:
    return generate_dataset("clean", 50, seed=11).to_pylist()


@pytest.fixture(scope="module")
def profile_rows() -> dict[str, list[dict]]:
    return {profile: generate_dataset(profile, 6, seed=5).to_pylist() for profile in PROFILES}


def _image(row: dict) -> Image.Image:
    return Image.open(io.BytesIO(row["image"]["bytes"]))


def test_generated_table_has_the_canonical_schema_and_unique_ids():
    table = generate_dataset("mixed", 5, seed=0)
    assert table.schema == CANONICAL_SCHEMA
    assert len(set(table.column("item_id").to_pylist())) == 5


def test_every_id_number_is_valid_and_embeds_the_birth_date_and_sex(clean_rows):
    for row in clean_rows:
        id_number = row["truth_id_number"]
        assert id_checksum_valid(id_number), id_number
        assert birth_consistent({"birth_date": row["truth_birth_date"], "id_number": id_number})
        assert (int(id_number[16]) % 2 == 1) == (row["truth_sex"] == "男"), id_number
        assert 1940 <= int(row["truth_birth_date"][:4]) <= 2005


def test_words_follow_the_documented_reading_order(clean_rows):
    for row in clean_rows:
        words = [entry["word"] for entry in row["ocr"]]
        assert [words[i] for i in (0, 2, 4, 6, 8, -2)] == LABEL_WORDS
        assert (words[1], words[3], words[5], words[-1]) == (
            row["truth_name"],
            row["truth_sex"],
            row["truth_ethnicity"],
            row["truth_id_number"],
        )
        assert "".join(words[9:-2]) == row["truth_address"]
        assert row["truth_text"] == "\n".join(words)


def test_identities_vary(clean_rows):
    assert len({row["truth_name"] for row in clean_rows}) > 35
    assert len({row["truth_ethnicity"] for row in clean_rows}) > 3
    assert {row["truth_sex"] for row in clean_rows} == {"男", "女"}


def test_boxes_are_four_points_inside_the_image(profile_rows):
    for rows in profile_rows.values():
        for row in rows:
            width, height = _image(row).size
            for entry in row["ocr"]:
                assert len(entry["box"]) == 4
                assert all(-1 <= x <= width + 1 and -1 <= y <= height + 1 for x, y in entry["box"]), row[
                    "item_id"
                ]


def _ink_inside_boxes(row: dict) -> float:
    """The share of dark pixels (text) that lie inside a word box grown by 3 pixels."""
    gray = _image(row).convert("L")
    mask = Image.new("L", gray.size, 0)
    draw = ImageDraw.Draw(mask)
    for entry in row["ocr"]:
        draw.polygon([tuple(point) for point in entry["box"]], fill=255, outline=255, width=3)
    ink = np.asarray(gray) < 100
    return float((ink & (np.asarray(mask) > 0)).sum() / ink.sum())


@pytest.mark.parametrize("profile", ["clean", "rotated", "skewed", "jpeg"])
def test_boxes_cover_the_printed_text(profile_rows, profile):
    for row in profile_rows[profile]:
        assert _ink_inside_boxes(row) > 0.97, row["item_id"]


def test_rotated_cards_turn_with_their_boxes(profile_rows):
    for row in profile_rows["rotated"]:
        image = _image(row)
        assert row["rotation"] in (90, 180, 270)
        assert image.size == ((640, 400) if row["rotation"] == 180 else (400, 640))
        id_box = np.array(row["ocr"][-1]["box"])
        name_box = np.array(row["ocr"][1]["box"])
        # Counter-clockwise: the ID line (card bottom) ends up on the right for 90, the top for 180.
        expected = {90: id_box[:, 0].mean() > name_box[:, 0].mean(), 180: id_box[:, 1].mean() < 200}
        assert expected.get(row["rotation"], id_box[:, 0].mean() < name_box[:, 0].mean())


def test_each_profile_records_its_attribute_within_range(profile_rows):
    in_range = {
        "clean": lambda r: r["rotation"] == 0 and r["skew_angle"] == 0 and r["brightness"] == 1.0,
        "skewed": lambda r: 3 <= abs(r["skew_angle"]) <= 10,
        "dark": lambda r: 0.3 <= r["brightness"] <= 0.6,
        "blurred": lambda r: 1.5 <= r["blur"] <= 3,
        "noisy": lambda r: 15 <= r["noise"] <= 35,
        "jpeg": lambda r: 10 <= r["jpeg_quality"] <= 30,
    }
    for profile, check in in_range.items():
        for row in profile_rows[profile]:
            assert row["profile"] == profile and check(row), row


def test_mixed_items_record_the_profile_they_drew():
    rows = generate_dataset("mixed", 60, seed=2).to_pylist()
    drawn = {row["profile"] for row in rows}
    assert "clean" in drawn and len(drawn) >= 5 and "mixed" not in drawn
    assert all(row["item_id"].startswith("mixed-") for row in rows)


def test_degradations_change_the_pixels_as_recorded(profile_rows):
    clean = [np.asarray(_image(row).convert("RGB"), dtype=np.float64) for row in profile_rows["clean"]]
    for index, row in enumerate(profile_rows["dark"]):
        dark = np.asarray(_image(row).convert("RGB"), dtype=np.float64)
        assert dark.mean() == pytest.approx(clean[index].mean() * row["brightness"], rel=0.05)
    for index, row in enumerate(profile_rows["noisy"]):
        difference = np.asarray(_image(row).convert("RGB"), dtype=np.float64) - clean[index]
        # Clipping at white (the card is light) takes some of the noise away, never adds any.
        assert 0.6 * row["noise"] < difference.std() < 1.02 * row["noise"]
    for index, row in enumerate(profile_rows["blurred"]):
        blurred = np.asarray(_image(row).convert("L"), dtype=np.float64)
        sharp = np.asarray(Image.fromarray(clean[index].astype(np.uint8)).convert("L"), dtype=np.float64)
        assert np.abs(np.diff(blurred, axis=1)).mean() < 0.7 * np.abs(np.diff(sharp, axis=1)).mean()


def test_jpeg_items_are_jpeg_and_the_others_png(profile_rows):
    for profile, rows in profile_rows.items():
        for row in rows:
            is_jpeg = row["jpeg_quality"] > 0
            assert _image(row).format == ("JPEG" if is_jpeg else "PNG"), (profile, row["item_id"])
            assert row["image"]["path"].endswith(".jpg" if is_jpeg else ".png")


def test_the_same_seed_shows_the_same_person_in_every_profile(profile_rows):
    for rows in profile_rows.values():
        assert [row["truth_id_number"] for row in rows] == [
            r["truth_id_number"] for r in profile_rows["clean"]
        ]


def test_a_larger_n_only_appends_items():
    assert generate_dataset("mixed", 3, seed=4).equals(generate_dataset("mixed", 5, seed=4).slice(0, 3))


def test_same_arguments_write_byte_identical_parquet(tmp_path: Path):
    first = write_dataset(generate_dataset("mixed", 12, seed=9), tmp_path / "a" / "cards.parquet")
    second = write_dataset(generate_dataset("mixed", 12, seed=9), tmp_path / "b" / "cards.parquet")
    other = write_dataset(generate_dataset("mixed", 12, seed=10), tmp_path / "c" / "cards.parquet")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_slice_attributes_are_all_columns():
    assert set(SLICE_ATTRIBUTES) <= set(CANONICAL_SCHEMA.names)


def test_unknown_profile_and_bad_sizes_are_rejected():
    with pytest.raises(DatasetError, match=r"unknown data profile 'foggy'.*clean, rotated"):
        generate_dataset("foggy", 3, seed=0)
    with pytest.raises(DatasetError, match="n >= 1 and seed >= 0"):
        generate_dataset("clean", 0, seed=0)


def test_missing_cjk_font_names_the_package_to_install(monkeypatch):
    monkeypatch.setenv(render.FONT_ENV_VAR, "/nonexistent/font.ttc")
    monkeypatch.setattr(render, "KNOWN_FONT_PATHS", ("/nonexistent/other.ttc",))
    monkeypatch.setattr(render, "_fontconfig_match", lambda: "")
    with pytest.raises(DatasetError, match="apt-get install fonts-noto-cjk"):
        render.find_cjk_font()


def test_font_env_var_takes_precedence(monkeypatch):
    chosen = render.find_cjk_font()
    monkeypatch.setattr(render, "KNOWN_FONT_PATHS", ())
    monkeypatch.setenv(render.FONT_ENV_VAR, str(chosen))
    assert render.find_cjk_font() == chosen


def test_write_dataset_leaves_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch):
    target = write_dataset(generate_dataset("clean", 2, seed=0), tmp_path / "cards.parquet")
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    import raypipe.engine.datasets

    monkeypatch.setattr(raypipe.engine.datasets.pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(generate_dataset("clean", 3, seed=0), target)
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["cards.parquet"]


def test_written_dataset_reads_back_equal(tmp_path: Path):
    table = generate_dataset("jpeg", 3, seed=1)
    assert pq.read_table(write_dataset(table, tmp_path / "x.parquet")).equals(table)


def test_make_id_number_builds_the_standard_example_and_fixes_the_sex_digit():
    birth = dt.date(1949, 12, 31)
    # GB 11643-1999's worked example: region 110105, born 1949-12-31, sequence 002 (even: female).
    assert make_id_number("110105", birth, 2, "女") == "11010519491231002X"
    male = make_id_number("110105", birth, 2, "男")  # an even sequence is moved to the next odd one
    assert male[14:17] == "003" and id_checksum_valid(male)
    assert make_id_number("110105", birth, 999, "女")[14:17] == "998"  # 999 has no odd successor
    with pytest.raises(ValueError, match="an ID sequence has 3 digits, got 1000"):
        make_id_number("110105", birth, 1000, "男")


def test_identity_prints_the_birth_date_without_leading_zeros_and_wraps_the_address():
    identity = Identity("张三", "男", "汉", dt.date(1990, 1, 5), "北京市朝阳区中山路1号2栋3单元401室", "x")
    assert identity.birth_text == "1990年1月5日"
    assert identity.truth()["birth_date"] == "1990-01-05"
    assert render.wrap_address(identity.address) == ["北京市朝阳区中山路1号", "2栋3单元401室"]
