"""Print a holdout identity on a card following a layout, recording each printed word's box."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from raypipe.tasks.idcard.holdout.fonts import FontFace, font
from raypipe.tasks.idcard.holdout.identities import HoldoutIdentity
from raypipe.tasks.idcard.holdout.layouts import Layout
from raypipe.tasks.idcard.holdout.surfaces import card_surface, draw_portrait

Corners = tuple[tuple[float, float], ...]
MAX_JITTER = 6  # pixels the text block moves per card, so that no position is exactly fixed


@dataclass(frozen=True)
class PrintedWord:
    """One printed word and its box: four (x, y) corners, clockwise from the word's top-left."""

    word: str
    box: Corners

    def as_row(self) -> dict[str, object]:
        return {"word": self.word, "box": [[round(x, 2), round(y, 2)] for x, y in self.box]}


@dataclass(frozen=True)
class Typefaces:
    """The faces of one card: labels and values may be printed in different fonts, as on real cards."""

    label: FontFace
    value: FontFace


class _Pen:
    """Draws words on one card with its layout's sizes and colours, baseline-aligned."""

    def __init__(self, image: Image.Image, layout: Layout, faces: Typefaces):
        self.draw = ImageDraw.Draw(image)
        self.styles = {
            "label": (font(faces.label, layout.label_size), layout.label_colour),
            "value": (font(faces.value, layout.value_size), layout.value_colour),
            "id": (font(faces.value, layout.id_size), layout.value_colour),
        }

    def put(self, text: str, x: float, baseline: float, role: str) -> PrintedWord:
        typeface, colour = self.styles[role]
        self.draw.text((x, baseline), text, font=typeface, fill=colour, anchor="ls")
        left, top, right, bottom = self.draw.textbbox((x, baseline), text, font=typeface, anchor="ls")
        return PrintedWord(text, ((left, top), (right, top), (right, bottom), (left, bottom)))


def render_card(
    identity: HoldoutIdentity, layout: Layout, faces: Typefaces, rng: np.random.Generator
) -> tuple[Image.Image, list[PrintedWord]]:
    """The card image and its words in reading order (top to bottom, left to right), labels included."""
    image = card_surface(layout.size, layout.surface, layout.watermark, rng)
    draw_portrait(image, layout.portrait, rng)
    jitter = rng.integers(-MAX_JITTER, MAX_JITTER + 1, size=2)
    words = _print_fields(_Pen(image, layout, faces), layout, identity, (int(jitter[0]), int(jitter[1])))
    return image, words


def _print_fields(
    pen: _Pen, layout: Layout, identity: HoldoutIdentity, shift: tuple[int, int]
) -> list[PrintedWord]:
    """Every field, row by row: name; sex and ethnicity; birth date; address lines; ID number."""
    x, y = layout.origin[0] + shift[0], layout.origin[1] + shift[1]
    words = _pair(pen, layout, "姓名", [identity.name], x, y)
    y += layout.row_gap
    words += _pair(pen, layout, "性别", [identity.sex], x, y)
    words += _pair(pen, layout, "民族", [identity.ethnicity], x + layout.second_column, y)
    y += layout.row_gap
    words += _pair(pen, layout, "出生", date_pieces(identity, layout.date_style), x, y)
    y += layout.row_gap
    lines = wrap_address(identity.address, layout.address_chars)
    first = _pair(pen, layout, "住址", lines[:1], x, y)
    words += first
    value_x = next(w for w in first if w.word == lines[0]).box[0][0]
    for index, line in enumerate(lines[1:], start=1):
        words.append(pen.put(line, value_x, y + index * layout.address_gap, "value"))
    id_x, id_y = layout.id_origin[0] + shift[0], layout.id_origin[1] + shift[1]
    return words + _id_row(pen, layout, identity.id_number, id_x, id_y)


def date_pieces(identity: HoldoutIdentity, style: str) -> list[str]:
    """The birth date as printed: one piece, or year/年/month/月/day/日 as separately spaced pieces."""
    birth = identity.birth
    if style == "split":
        return [str(birth.year), "年", str(birth.month), "月", str(birth.day), "日"]
    if style == "padded":
        return [f"{birth.year}年{birth.month:02d}月{birth.day:02d}日"]
    return [f"{birth.year}年{birth.month}月{birth.day}日"]


def wrap_address(address: str, chars_per_line: int) -> list[str]:
    """The address as printed: lines of at most `chars_per_line` characters."""
    return [address[start : start + chars_per_line] for start in range(0, len(address), chars_per_line)]


def _pair(pen: _Pen, layout: Layout, label: str, pieces: list[str], x: float, y: float) -> list[PrintedWord]:
    """A label and its value pieces on one row, in the layout's order; pieces are spaced apart."""
    gap = round(0.4 * layout.value_size)
    if layout.labels == "before":
        label_word = pen.put(label, x, y, "label")
        start = max(x + layout.value_column, label_word.box[1][0] + gap)
        return [label_word, *_pieces(pen, pieces, start, y, gap)]
    values = _pieces(pen, pieces, x, y, gap)
    if layout.labels == "after":
        return [*values, pen.put(label, values[-1].box[1][0] + round(0.6 * layout.value_size), y, "label")]
    return values


def _pieces(pen: _Pen, pieces: list[str], x: float, y: float, gap: int) -> list[PrintedWord]:
    words = []
    for piece in pieces:
        words.append(pen.put(piece, x, y, "value"))
        x = words[-1].box[1][0] + gap
    return words


def _id_row(pen: _Pen, layout: Layout, id_number: str, x: float, y: float) -> list[PrintedWord]:
    gap = round(0.6 * layout.label_size)
    if layout.id_style == "bare":
        return [pen.put(id_number, x, y, "id")]
    if layout.id_style == "after":
        number = pen.put(id_number, x, y, "id")
        return [number, pen.put("公民身份号码", number.box[1][0] + gap, y, "label")]
    label = pen.put("公民身份号码", x, y, "label")
    if layout.id_style == "above":
        return [label, pen.put(id_number, x, y + layout.id_size + 14, "id")]
    return [label, pen.put(id_number, label.box[1][0] + gap, y, "id")]
