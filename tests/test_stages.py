"""Unit tests of the generic image stages (orient, enhance, channel) and their word and image helpers."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from raypipe.spec import registry
from raypipe.tasks.idcard.generator import generate_dataset
from raypipe.tasks.idcard.stages import channel, enhance, imaging, orient
from raypipe.tasks.idcard.stages.imaging import rotate_quarter_turns
from raypipe.tasks.idcard.stages.words import (
    OcrResult,
    Word,
    group_lines,
    quad_box,
    rect_box,
    sort_reading_order,
)

IDCARD = registry.resolve_task("idcard")  # its image and OCR stage kinds resolve with the task

CJK_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
SEED = 0
requires_tesseract = pytest.mark.skipif(not shutil.which("tesseract"), reason="apt-get install tesseract-ocr")


def read_only(image: np.ndarray) -> np.ndarray:
    """The image made read-only, as the runner hands images to stages."""
    image.flags.writeable = False
    return image


def decode(row: dict) -> np.ndarray:
    return read_only(np.array(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")))


@pytest.fixture(scope="module")
def cards() -> dict[str, list[dict]]:
    """Five cards per profile (the rotated ones cover 90, 180 and 270); item i is the same person in each."""
    profiles = ("clean", "rotated", "skewed", "dark", "noisy")
    return {p: generate_dataset(p, 5, seed=SEED).to_pylist() for p in profiles}


def clean_images(cards) -> list[np.ndarray]:
    return [decode(row) for row in cards["clean"]]


def card_on_background(skew_degrees: float) -> np.ndarray:
    """A card drawn here (not by the generator), turned counter-clockwise on a dark background."""
    card = Image.new("RGB", (640, 400), (245, 240, 225))
    draw = ImageDraw.Draw(card)
    font = ImageFont.truetype(CJK_FONT, 28)
    for row, text in enumerate(["姓名  张三", "性别  男    民族  汉", "出生  1990 年 1 月 5 日"]):
        draw.text((40, 40 + 60 * row), text, font=font, fill=(20, 20, 20))
    draw.text((40, 300), "公民身份号码  11010519900105002X", font=font, fill=(20, 20, 20))
    canvas = Image.new("RGB", (760, 520), (70, 70, 70))
    canvas.paste(card, (60, 60))
    return np.asarray(canvas.rotate(skew_degrees, resample=Image.Resampling.BICUBIC, fillcolor=(70, 70, 70)))


# --- orient -------------------------------------------------------------------------------------------


def test_no_orient_returns_the_input_itself(cards):
    image = clean_images(cards)[0]
    assert orient.NoOrient()(image) is image


@pytest.mark.parametrize("skew", [7.0, -7.0, 3.0, -12.0])
def test_hough_corrects_a_skewed_card_to_within_1_5_degrees(skew):
    deskew = orient.HoughDeskew()
    skewed = card_on_background(skew)
    # The card is turned counter-clockwise by `skew`, which the estimator reports as a clockwise -skew.
    assert deskew.estimate_skew(skewed) == pytest.approx(-skew, abs=1.5)
    corrected = deskew(skewed)
    assert corrected.dtype == np.uint8 and corrected.ndim == 3
    assert abs(deskew.estimate_skew(corrected)) < 1.5


def test_hough_estimates_the_generator_skew_on_every_skewed_card(cards):
    deskew = orient.HoughDeskew()
    for row in cards["skewed"]:
        assert deskew.estimate_skew(decode(row)) == pytest.approx(-row["skew_angle"], abs=1.5), row["item_id"]


def test_hough_sees_through_noise(cards):
    deskew = orient.HoughDeskew()
    rng = np.random.default_rng(0)
    for row in cards["skewed"]:
        image = decode(row)
        noisy = np.clip(image + rng.normal(0, 30, image.shape), 0, 255).astype(np.uint8)
        assert deskew.estimate_skew(noisy) == pytest.approx(-row["skew_angle"], abs=1.5), row["item_id"]
    noisy_upright = decode(cards["noisy"][0])
    assert deskew(noisy_upright) is noisy_upright


def test_hough_works_on_gray_images():
    gray = read_only(card_on_background(7.0)[:, :, 1].copy())
    corrected = orient.HoughDeskew()(gray)
    assert corrected.ndim == 2 and corrected.dtype == np.uint8
    assert abs(orient.HoughDeskew().estimate_skew(corrected)) < 1.5


def test_hough_leaves_upright_cards_byte_identical(cards):
    deskew = orient.HoughDeskew()
    for image in [*clean_images(cards), card_on_background(0.0)]:
        before = image.tobytes()
        corrected = deskew(image)
        assert corrected is image and corrected.tobytes() == before


def test_hough_without_any_line_is_a_no_op():
    blank = np.full((400, 640, 3), 200, np.uint8)
    assert orient.HoughDeskew()(blank) is blank


@requires_tesseract
def test_osd_turns_90_180_270_cards_back_to_the_exact_upright_card(cards):
    osd = orient.TesseractOSD()
    seen = set()
    for rotated_row, clean_row in zip(cards["rotated"], cards["clean"], strict=True):
        seen.add(rotated_row["rotation"])
        corrected = osd(decode(rotated_row))
        np.testing.assert_array_equal(corrected, decode(clean_row), err_msg=rotated_row["item_id"])
    assert seen == {90, 180, 270}, "the fixture must cover every quarter turn"


@requires_tesseract
def test_osd_leaves_upright_and_unreadable_images_byte_identical(cards):
    osd = orient.TesseractOSD()
    blank = np.full((400, 640, 3), 255, np.uint8)  # OSD raises "too few characters": not an error
    for image in [*clean_images(cards)[:2], blank]:
        before = image.tobytes()
        corrected = osd(image)
        assert corrected is image and corrected.tobytes() == before


def test_quarter_turns_are_clockwise_and_lossless():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(rotate_quarter_turns(image, 90), [[3, 0], [4, 1], [5, 2]])
    np.testing.assert_array_equal(rotate_quarter_turns(rotate_quarter_turns(image, 270), 90), image)
    with pytest.raises(ValueError, match="multiple of 90"):
        rotate_quarter_turns(image, 45)


# --- enhance ------------------------------------------------------------------------------------------

ENHANCERS = [enhance.Sharpen, enhance.BrightnessContrast, enhance.Clahe, enhance.Denoise]


@pytest.mark.parametrize("stage_class", ENHANCERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("as_gray", [False, True], ids=["rgb", "gray"])
def test_enhancers_keep_shape_and_dtype_and_change_the_image(cards, stage_class, as_gray):
    image = decode(cards["noisy"][0])
    if as_gray:
        image = read_only(np.ascontiguousarray(image[:, :, 1]))
    out = stage_class()(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert out is not image


def test_no_enhance_returns_the_input_itself(cards):
    image = clean_images(cards)[0]
    assert enhance.NoEnhance()(image) is image


def test_sharpen_raises_edge_contrast(cards):
    image = clean_images(cards)[0]
    gradient = lambda a: np.abs(np.diff(a.astype(np.int16), axis=1)).mean()  # noqa: E731
    assert gradient(enhance.Sharpen(amount=1.5)(image)) > 1.2 * gradient(image)


def test_brightness_contrast_brings_a_dark_card_to_the_target_mean(cards):
    dark = decode(cards["dark"][0])
    out = enhance.BrightnessContrast(target_mean=200)(dark)
    assert dark.mean() < 110
    assert out.mean() == pytest.approx(200, abs=10)
    assert np.percentile(out, 99) - np.percentile(out, 1) > np.percentile(dark, 99) - np.percentile(dark, 1)


def test_clahe_raises_local_contrast_of_a_dark_card(cards):
    dark = decode(cards["dark"][0])
    out = enhance.Clahe(clip_limit=3.0)(dark)
    assert out.std() > dark.std()


def test_denoise_brings_a_noisy_card_closer_to_the_clean_one(cards):
    noisy, clean = decode(cards["noisy"][0]), decode(cards["clean"][0])
    error = lambda a: np.abs(a.astype(np.int16) - clean).mean()  # noqa: E731
    assert error(enhance.Denoise()(noisy)) < 0.7 * error(noisy)


# --- channel ------------------------------------------------------------------------------------------


def test_channels_have_the_right_shapes_and_values(cards):
    image = clean_images(cards)[0]
    height, width = image.shape[:2]
    assert channel.Original()(image) is image
    assert channel.Gray()(image).shape == (height, width)
    for stage_class, index in [(channel.Red, 0), (channel.Green, 1), (channel.Blue, 2)]:
        out = stage_class()(image)
        assert out.shape == (height, width) and out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, image[:, :, index])


def test_gray_input_passes_every_channel_stage_unchanged(cards):
    gray = read_only(np.ascontiguousarray(clean_images(cards)[0][:, :, 0]))
    for stage_class in [channel.Original, channel.Gray, channel.Red, channel.Green, channel.Blue]:
        assert stage_class()(gray) is gray


# --- shared pieces ------------------------------------------------------------------------------------


def test_reading_order_is_top_to_bottom_then_left_to_right():
    words = [
        Word("ID", rect_box(10, 300, 60, 30)),
        Word("三", rect_box(120, 42, 30, 30)),  # same line as 姓名, a little lower
        Word("姓名", rect_box(10, 40, 60, 30)),
        Word("nobox"),
    ]
    assert [w.text for w in sort_reading_order(words)] == ["姓名", "三", "ID", "nobox"]
    assert [[w.text for w in line] for line in group_lines(words)] == [["姓名", "三"], ["ID"]]


def test_ocr_text_joins_a_lines_boxed_words_with_spaces_and_lines_with_newlines():
    boxed = [
        Word("1990", rect_box(10, 80, 50, 20)),
        Word("三", rect_box(90, 12, 20, 20)),
        Word("张", rect_box(60, 10, 20, 20)),
    ]
    assert OcrResult(boxed).text == "张 三\n1990"
    # Without boxes there is no geometry: each word is a line, in the engine's order.
    assert OcrResult([Word("张三"), Word("男")]).text == "张三\n男"
    assert OcrResult().text == ""


def test_boxes_are_four_float_corners_clockwise_from_top_left():
    assert rect_box(1, 2, 3, 4) == ((1.0, 2.0), (4.0, 2.0), (4.0, 6.0), (1.0, 6.0))
    corners = quad_box(np.array([[1, 2], [4, 2], [4, 6], [1, 6]]))
    assert corners == rect_box(1, 2, 3, 4) and all(type(x) is float for point in corners for x in point)


def test_gray_and_rgb_conversions_use_itu_601_weights_and_pass_their_own_kind_through():
    rgb = read_only(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8))
    gray = imaging.as_gray(rgb)
    np.testing.assert_array_equal(gray, [[76, 150, 29]])
    assert imaging.as_gray(gray) is gray and imaging.as_rgb(rgb) is rgb
    np.testing.assert_array_equal(imaging.as_rgb(gray), np.repeat(gray[:, :, None], 3, axis=2))


def test_rotate_expanded_turns_counter_clockwise_and_grows_the_canvas():
    image = np.zeros((20, 40, 3), np.uint8)
    image[0:5, 35:40] = 255  # a block in the top-right corner
    turned = imaging.rotate_expanded(read_only(image), 90)
    assert turned.shape == (40, 20, 3)
    assert turned[0:5, 0:5].min() == 255  # counter-clockwise: top-right goes to top-left
    # 30 degrees: width 20 sin 30 + 40 cos 30 = 44.6, height 20 cos 30 + 40 sin 30 = 37.3
    assert imaging.rotate_expanded(read_only(image), 30).shape == (37, 45, 3)


def test_decode_image_gives_rgb_and_names_empty_and_corrupt_data():
    pixels = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    np.testing.assert_array_equal(imaging.decode_image(buffer.getvalue()), pixels)
    with pytest.raises(ValueError, match="empty image"):
        imaging.decode_image(b"")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        imaging.decode_image(buffer.getvalue()[:20])


BUILT_IN_IMAGE_STAGES = {
    "orient": ["none", "hough", "osd"],
    "enhance": ["none", "sharpen", "brightness_contrast", "clahe", "denoise"],
    "channel": ["original", "gray", "red", "green", "blue"],
}


@pytest.mark.parametrize("kind", sorted(BUILT_IN_IMAGE_STAGES))
def test_every_built_in_image_stage_resolves_with_default_params(kind):
    for name in BUILT_IN_IMAGE_STAGES[kind]:
        stage_class = registry.resolve(kind, name, IDCARD)
        registry.params_model(stage_class)()  # the defaults validate
        assert stage_class.resources.num_gpus == 0


def test_the_mark_stage_copies_its_image_and_marks_one_pixel():
    from raypipe.engine.noop import Mark

    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = Mark(value=7)(image)
    assert out[0, 0] == 7 and out.shape == image.shape and (out.ravel()[1:] == image.ravel()[1:]).all()
    assert image[0, 0] == 0  # a copy: the input is not changed
