"""Draw the front of a Chinese resident ID card with a CJK font, recording each word's box."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from raypipe.errors import DatasetError
from raypipe.tasks.idcard.identity import Identity

CARD_SIZE = (640, 400)
BACKGROUND = (236, 241, 246)
LABEL_COLOUR = (38, 92, 158)
VALUE_COLOUR = (20, 20, 20)
LABEL_SIZE, VALUE_SIZE, ID_SIZE = 22, 26, 30
VALUE_X = 118
ADDRESS_CHARS_PER_LINE = 11  # real cards wrap the address after about 11 characters
FONT_ENV_VAR = "RAYPIPE_CJK_FONT"
KNOWN_FONT_PATHS: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)


@dataclass(frozen=True)
class PlacedWord:
    """One printed word and its box: four (x, y) corners, clockwise from top-left."""

    word: str
    box: list[list[float]]

    def as_row(self) -> dict[str, object]:
        return {"word": self.word, "box": self.box}


def find_cjk_font() -> Path:
    """A font file with Chinese glyphs: $RAYPIPE_CJK_FONT, a known Debian path, or fontconfig's pick."""
    candidates = [os.environ.get(FONT_ENV_VAR, ""), *KNOWN_FONT_PATHS, _fontconfig_match()]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise DatasetError(
        "no CJK font found to draw synthetic ID cards (looked at $RAYPIPE_CJK_FONT, "
        f"{', '.join(KNOWN_FONT_PATHS)} and fc-match): install one with "
        "`sudo apt-get install fonts-noto-cjk`, or set RAYPIPE_CJK_FONT to a .ttc/.otf file"
    )


def _fontconfig_match() -> str:
    if shutil.which("fc-match") is None:
        return ""
    result = subprocess.run(
        ["fc-match", "--format=%{file}", ":lang=zh-cn"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else ""


@functools.cache
def cjk_font(size: int) -> ImageFont.FreeTypeFont:
    """The CJK font at `size`, preferring a collection's Simplified Chinese face."""
    path = find_cjk_font()
    fallback = ImageFont.truetype(str(path), size)
    for index in range(8):  # a .ttc holds several faces; Noto's SC face is not the first
        try:
            font = ImageFont.truetype(str(path), size, index=index)
        except OSError:
            break
        if " SC" in font.getname()[0]:
            return font
    return fallback


def draw_card(identity: Identity) -> tuple[Image.Image, list[PlacedWord]]:
    """The card's image and its words in reading order, labels included (see generator's docstring)."""
    image = Image.new("RGB", CARD_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    _draw_portrait(draw)
    words = [
        _place(draw, "姓名", (38, 42), LABEL_SIZE, LABEL_COLOUR),
        _place(draw, identity.name, (VALUE_X, 36), VALUE_SIZE, VALUE_COLOUR),
        _place(draw, "性别", (38, 97), LABEL_SIZE, LABEL_COLOUR),
        _place(draw, identity.sex, (VALUE_X, 91), VALUE_SIZE, VALUE_COLOUR),
        _place(draw, "民族", (200, 97), LABEL_SIZE, LABEL_COLOUR),
        _place(draw, identity.ethnicity, (280, 91), VALUE_SIZE, VALUE_COLOUR),
        _place(draw, "出生", (38, 152), LABEL_SIZE, LABEL_COLOUR),
        _place(draw, identity.birth_text, (VALUE_X, 146), VALUE_SIZE, VALUE_COLOUR),
        _place(draw, "住址", (38, 205), LABEL_SIZE, LABEL_COLOUR),
    ]
    for line_index, line in enumerate(wrap_address(identity.address)):
        words.append(_place(draw, line, (VALUE_X, 199 + 34 * line_index), VALUE_SIZE, VALUE_COLOUR))
    words.append(_place(draw, "公民身份号码", (38, 353), LABEL_SIZE, LABEL_COLOUR))
    words.append(_place(draw, identity.id_number, (218, 346), ID_SIZE, VALUE_COLOUR))
    return image, words


def wrap_address(address: str) -> list[str]:
    """The address as printed: lines of at most ADDRESS_CHARS_PER_LINE characters."""
    step = ADDRESS_CHARS_PER_LINE
    return [address[start : start + step] for start in range(0, len(address), step)]


def _place(
    draw: ImageDraw.ImageDraw, text: str, origin: tuple[int, int], size: int, colour: tuple[int, int, int]
) -> PlacedWord:
    font = cjk_font(size)
    draw.text(origin, text, font=font, fill=colour)
    left, top, right, bottom = draw.textbbox(origin, text, font=font)
    corners = [[left, top], [right, top], [right, bottom], [left, bottom]]
    return PlacedWord(text, [[float(x), float(y)] for x, y in corners])


def _draw_portrait(draw: ImageDraw.ImageDraw) -> None:
    # A plain silhouette where the photo goes: real cards have one, and OCR must ignore it.
    draw.rectangle((440, 40, 600, 250), fill=(214, 222, 232))
    draw.ellipse((485, 70, 555, 150), fill=(160, 170, 184))
    draw.pieslice((455, 150, 585, 300), 180, 360, fill=(160, 170, 184))
