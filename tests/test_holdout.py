"""Tests of the holdout renderer: schema, determinism, identities, layouts, fonts, geometry, real OCR."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from raypipe.errors import DatasetError
from raypipe.tasks.idcard import identity as main_identity
from raypipe.tasks.idcard.fields import ETHNICITIES, id_checksum_valid
from raypipe.tasks.idcard.generator import generate_dataset
from raypipe.tasks.idcard.holdout import HOLDOUT_PROFILES, generate_holdout, render_holdout_item
from raypipe.tasks.idcard.holdout import fonts as holdout_fonts
from raypipe.tasks.idcard.holdout.card import Typefaces, render_card
from raypipe.tasks.idcard.holdout.degrade import draw_holdout_attributes
from raypipe.tasks.idcard.holdout.geometry import homography, map_points, rotate, warp
from raypipe.tasks.idcard.holdout.identities import HoldoutIdentity, draw_holdout_identity
from raypipe.tasks.idcard.holdout.layouts import LAYOUTS, LAYOUTS_BY_NAME
from raypipe.tasks.idcard.render import find_cjk_font
from raypipe.tasks.idcard.schema import CANONICAL_SCHEMA

LABELS = ("姓名", "性别", "民族", "出生", "住址", "公民身份号码")


@pytest.fixture(scope="module")
def profile_rows() -> dict[str, list[dict]]:
    return {profile: generate_holdout(profile, 6, seed=3).to_pylist() for profile in HOLDOUT_PROFILES}


@pytest.fixture(scope="module")
def identities() -> list[HoldoutIdentity]:
    return [draw_holdout_identity(np.random.default_rng([21, index])) for index in range(400)]


def _image(row: dict) -> Image.Image:
    return Image.open(io.BytesIO(row["image"]["bytes"]))


def _centre(box) -> tuple[float, float]:
    return float(np.mean([p[0] for p in box])), float(np.mean([p[1] for p in box]))


def _word(row: dict, text: str) -> dict:
    return next(entry for entry in row["ocr"] if entry["word"] == text)


def _first_item(profile: str, predicate, limit: int = 60):
    return next(item for index in range(limit) if predicate(item := render_holdout_item(profile, 0, index)))


def test_the_table_has_exactly_the_canonical_schema():
    table = generate_holdout("mixed", 5, seed=0)
    assert table.schema == CANONICAL_SCHEMA
    assert table.num_rows == 5


def test_the_same_arguments_give_the_same_bytes_and_another_seed_does_not():
    first = generate_holdout("mixed", 5, seed=4)
    assert first.equals(generate_holdout("mixed", 5, seed=4))
    other = generate_holdout("mixed", 5, seed=5)
    assert first.column("image").to_pylist() != other.column("image").to_pylist()


def test_item_ids_are_unique_prefixed_and_never_the_main_generators():
    holdout_ids = generate_holdout("clean", 8, seed=2).column("item_id").to_pylist()
    main_ids = generate_dataset("clean", 8, seed=2).column("item_id").to_pylist()
    assert len(set(holdout_ids)) == 8
    assert holdout_ids[3] == "holdout-clean-2-000003"
    assert not set(holdout_ids) & set(main_ids)


def test_unknown_profiles_and_sizes_are_refused():
    with pytest.raises(DatasetError, match=r"unknown holdout profile 'noisy'.*upside_down"):
        generate_holdout("noisy", 2, seed=0)
    with pytest.raises(DatasetError, match="n >= 1"):
        generate_holdout("clean", 0, seed=0)


def test_ids_are_valid_and_embed_the_birth_date_and_sex(identities, profile_rows):
    rows = [row for rows in profile_rows.values() for row in rows]
    cases = [(i.id_number, i.birth.isoformat(), i.sex) for i in identities]
    cases += [(r["truth_id_number"], r["truth_birth_date"], r["truth_sex"]) for r in rows]
    for id_number, birth_date, sex in cases:
        assert id_checksum_valid(id_number), id_number
        assert id_number[6:14] == birth_date.replace("-", "")
        assert (int(id_number[16]) % 2 == 1) == (sex == "男"), id_number
    main_regions = {code for code, _ in main_identity.REGIONS}
    assert not {i.id_number[:6] for i in identities} & main_regions


def test_births_span_the_course_assertions_range(identities):
    years = [identity.birth.year for identity in identities]
    assert min(years) >= 1900 and max(years) <= 2025
    assert sum(year <= 1910 for year in years) >= 3
    assert sum(year >= 2015 for year in years) >= 3


def test_names_use_characters_the_main_generator_never_draws(identities):
    main_chars = set("".join(main_identity.SURNAMES)) | set(main_identity.GIVEN_NAME_CHARS)
    names = [identity.name for identity in identities]
    assert {len(name) for name in names} == {2, 3, 4}
    assert sum(bool(set(name) - main_chars) for name in names) > 0.9 * len(names)
    assert not set("".join(names)) & set("".join(LABELS) + "男女年月日")


def test_ethnicities_cover_nearly_all_56_groups(identities):
    drawn = {identity.ethnicity for identity in identities}
    assert drawn <= set(ETHNICITIES)
    assert len(drawn) >= 50


def test_boxes_are_four_points_inside_the_stored_image(profile_rows):
    for rows in profile_rows.values():
        for row in rows:
            width, height = _image(row).size
            assert max(width, height) <= 1000
            for entry in row["ocr"]:
                assert len(entry["box"]) == 4
                assert all(0 <= x <= width and 0 <= y <= height for x, y in entry["box"]), row["item_id"]


def test_ocr_words_joined_reproduce_truth_text_and_hold_every_field(profile_rows):
    for rows in profile_rows.values():
        for row in rows:
            words = [entry["word"] for entry in row["ocr"]]
            assert row["truth_text"] == "\n".join(words)
            for field in ("name", "sex", "ethnicity", "id_number"):
                assert row[f"truth_{field}"] in words, (field, row["item_id"])
            assert row["truth_address"] in "".join(word for word in words if word != "住址")
            birth = dt.date.fromisoformat(row["truth_birth_date"])
            assert str(birth.year) in row["truth_text"]


def test_quarter_turns_move_pixels_and_boxes_together():
    for index, turns in ((0, 1), (1, 2), (2, 3)):  # a rotated set turns 90, 180, 270 by index
        rotated = render_holdout_item("rotated", 1, index)
        clean = render_holdout_item("clean", 1, index)
        assert rotated.attributes.rotation == 90 * turns
        back = np.rot90(np.asarray(rotated.image), k=-turns)  # np.rot90 turns counter-clockwise
        assert np.array_equal(back, np.asarray(clean.image))
        width, height = clean.image.size
        for moved, original in zip(rotated.words, clean.words, strict=True):
            x, y = _centre(original.box)
            expected = {1: (y, width - x), 2: (width - x, height - y), 3: (height - y, x)}[turns]
            assert _centre(moved.box) == pytest.approx(expected, abs=0.01), moved.word


def test_an_upside_down_card_has_its_name_in_the_lower_half(profile_rows):
    for clean, flipped in zip(profile_rows["clean"], profile_rows["upside_down"], strict=True):
        height = _image(flipped).size[1]
        assert flipped["rotation"] == 180
        assert _centre(_word(clean, clean["truth_name"])["box"])[1] < height / 2
        assert _centre(_word(flipped, flipped["truth_name"])["box"])[1] > height / 2


def test_rotated_sets_have_equal_shares_and_mixed_sets_blend_every_profile():
    assert generate_holdout("rotated", 6, seed=0).column("rotation").to_pylist() == [90, 180, 270] * 2
    draws = [draw_holdout_attributes("mixed", np.random.default_rng([0, i]), i) for i in range(80)]
    assert {attributes.profile for attributes in draws} == set(HOLDOUT_PROFILES) - {"mixed"}
    turns = {attributes.rotation for attributes in draws if attributes.profile == "rotated"}
    assert turns == {90, 180, 270}


@pytest.mark.parametrize("degrees", [7.0, -11.5, 90.0])
def test_rotation_moves_a_marked_pixel_where_its_point_goes(degrees):
    pixels = np.zeros((60, 100), np.uint8)
    pixels[10:14, 20:24] = 255
    turned, matrix = rotate(Image.fromarray(pixels).convert("RGB"), degrees, (0, 0, 0))
    ys, xs = np.nonzero(np.asarray(turned)[..., 0] > 127)
    ((x, y),) = map_points(matrix, [(22.0, 12.0)])
    assert (xs.mean() + 0.5, ys.mean() + 0.5) == pytest.approx((x, y), abs=0.6)


def test_a_homography_warps_pixels_where_it_maps_points():
    pixels = np.zeros((60, 100), np.uint8)
    pixels[10:14, 20:24] = 255
    corners = [(0.0, 0.0), (100.0, 0.0), (100.0, 60.0), (0.0, 60.0)]
    matrix = homography(corners, [(10.0, 5.0), (120.0, 20.0), (110.0, 90.0), (5.0, 70.0)])
    assert np.allclose(map_points(matrix, corners), [(10, 5), (120, 20), (110, 90), (5, 70)])
    ys, xs = np.nonzero(np.asarray(warp(Image.fromarray(pixels), matrix, (140, 100))) > 100)
    ((x, y),) = map_points(matrix, [(22.0, 12.0)])
    assert (xs.mean() + 0.5, ys.mean() + 0.5) == pytest.approx((x, y), abs=0.6)


@pytest.mark.parametrize("profile", ["photo", "skewed"])
def test_boxes_follow_the_warp_the_image_went_through(profile):
    """Map the clean card onto the degraded one through four box corners; the pixels must then match."""
    for index in range(3):
        moved, clean = render_holdout_item(profile, 3, index), render_holdout_item("clean", 3, index)
        corners = [(0, 0), (-1, 3), (-1, 2), (1, 1)]  # (word, corner): spread over the whole card
        source = [tuple(clean.words[w].box[c]) for w, c in corners]
        matrix = homography(source, [tuple(moved.words[w].box[c]) for w, c in corners])
        back = warp(moved.image, np.linalg.inv(matrix), clean.image.size, (0, 0, 0))
        gray = [np.asarray(image.convert("L"), np.float32).ravel() for image in (back, clean.image)]
        assert np.corrcoef(*gray)[0, 1] > 0.6, moved.item_id


def test_photos_are_cards_in_perspective_on_a_larger_jpeg(profile_rows):
    for row in profile_rows["photo"]:
        image = _image(row)
        assert image.format == "JPEG" and image.size == (1000, 750)
        assert row["jpeg_quality"] > 0 and row["noise"] > 0 and row["blur"] > 0
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = _word(row, row["truth_id_number"])["box"]
        top, bottom = np.hypot(x1 - x0, y1 - y0), np.hypot(x2 - x3, y2 - y3)
        assert top != pytest.approx(bottom, abs=1e-3)  # perspective: parallel edges differ in length
        assert abs(row["skew_angle"]) <= 12


def test_a_layout_prints_labels_after_their_values():
    assert LAYOUTS_BY_NAME["values_first"].labels == "after"
    item = _first_item("clean", lambda item: item.layout.labels == "after")
    words = [word.word for word in item.words]
    assert words.index(item.identity.name) + 1 == words.index("姓名")
    name, label = (next(w for w in item.words if w.word == text).box for text in (item.identity.name, "姓名"))
    assert label[0][0] > name[1][0]  # the label starts right of where the name ends
    assert abs(_centre(label)[1] - _centre(name)[1]) < 12  # on the same line


def test_a_layout_splits_the_birth_date_into_spaced_pieces():
    item = _first_item("clean", lambda item: item.layout.date_style == "split")
    birth = item.identity.birth
    words = [word.word for word in item.words]
    start = words.index(str(birth.year))
    assert words[start : start + 6] == [str(birth.year), "年", str(birth.month), "月", str(birth.day), "日"]
    year, nian = item.words[start].box, item.words[start + 1].box
    assert nian[0][0] - year[1][0] >= 8  # a visible space between the year and 年


def test_every_layout_fits_the_longest_values_beside_its_portrait():
    longest = HoldoutIdentity(
        name="慕容璟骞",
        sex="男",
        ethnicity="柯尔克孜",
        birth=dt.date(1999, 12, 28),
        address="内蒙古自治区呼和浩特市新城区金沙江路599号锦绣花园39幢8单元3299室",
        id_number="15010219991228001X",
    )
    faces = holdout_fonts.holdout_fonts()
    for layout in LAYOUTS:
        for face in faces:
            _, words = render_card(longest, layout, Typefaces(face, face), np.random.default_rng(0))
            boxes = [(w.box[0][0], w.box[0][1], w.box[2][0], w.box[2][1]) for w in words]
            for left, top, right, bottom in boxes:
                assert 0 <= left and right <= layout.size[0] and 0 <= top and bottom <= layout.size[1]
                assert not _overlap((left, top, right, bottom), layout.portrait), (layout.name, face.family)
            for i, first in enumerate(boxes):
                assert not any(_overlap(first, second) for second in boxes[i + 1 :]), layout.name


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_cards_are_printed_in_several_fonts_none_of_them_the_main_generators():
    main_font = find_cjk_font().resolve()
    items = [render_holdout_item("clean", 0, index) for index in range(20)]
    used = {face for item in items for face in (item.faces.label, item.faces.value)}
    assert main_font not in {face.path.resolve() for face in used}
    assert "NotoSansCJK" not in " ".join(str(face.path) for face in used)
    assert len({face.family for face in used}) >= 3


def test_no_holdout_font_fails_naming_the_packages_to_install(monkeypatch):
    missing = holdout_fonts.FontCandidate(
        "No Such CJK Family", ("/nonexistent/font.ttc",), "fonts-arphic-ukai"
    )
    monkeypatch.setattr(holdout_fonts, "FONT_CANDIDATES", (missing,))
    holdout_fonts.installed_faces.cache_clear()
    try:
        with pytest.raises(DatasetError, match="apt-get install fonts-arphic-ukai"):
            generate_holdout("clean", 1, seed=0)
    finally:
        monkeypatch.undo()
        holdout_fonts.installed_faces.cache_clear()


def _tesseract_ready() -> bool:
    if shutil.which("tesseract") is None:
        return False
    import pytesseract

    return {"chi_sim", "eng"} <= set(pytesseract.get_languages())


@pytest.mark.skipif(
    not _tesseract_ready(),
    reason="needs Tesseract with chi_sim: apt-get install tesseract-ocr-chi-sim; pip install pytesseract",
)
def test_tesseract_reads_the_id_number_on_clean_holdout_cards(monkeypatch):
    import pytesseract

    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")  # 4-5x faster on 2 cores (NOTES.md)
    rows = generate_holdout("clean", 3, seed=0).to_pylist()
    readings = []
    for row in rows:
        text = pytesseract.image_to_string(_image(row), lang="chi_sim+eng", config="--psm 11 --oem 1")
        readings.append(re.findall(r"[0-9]{17}[0-9X]", re.sub(r"[ \t]", "", text)))
    read = [row["truth_id_number"] in found for row, found in zip(rows, readings, strict=True)]
    assert sum(read) >= 2, readings
    assert os.environ["OMP_THREAD_LIMIT"] == "1"
