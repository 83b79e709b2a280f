"""An ID card's upright frame (skew and quarter turn) inferred from its word boxes, and boxes turned into it.

A card may come back skewed, turned by 90, 180 or 270 degrees, and with boxes whose corner order says
nothing of the text's direction (RapidOCR orders corners in the image's frame). So the frame is inferred:

- every box edge votes for the text's direction modulo 90 degrees (the skew), weighted by its length;
- of the four quarter turns of that direction, the upright frame is the one where multi-character words
  are wider than tall, and then the one where what is printed higher on a card lies higher: the rows
  姓名 < 性别/民族 < 出生 < 住址 < 公民身份号码, or, without labels, sex/ethnicity < date < ID number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from raypipe.tasks.idcard.fields import ETHNICITIES, SEXES, normalise_line
from raypipe.tasks.idcard.stages.words import Word, rect_box

# The row each label, or each value recognisable by its shape, is printed on (top row 0).
LABEL_ROWS: dict[str, int] = {"姓名": 0, "性别": 1, "民族": 1, "出生": 2, "住址": 3, "身份号": 4}
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_DATE_SHAPE = re.compile(r"[0-9]{4}年|[0-9]{1,2}月[0-9]{1,2}日")
_LONE_ETHNICITY = re.compile("({})族?".format("|".join(ETHNICITIES)))


def upright_words(words: Sequence[Word]) -> list[Word]:
    """The words in the card's upright frame, with axis-aligned boxes, reading left to right and top to
    bottom; words without a box or with no text left after normalisation are dropped."""
    words = [word for word in words if word.box and normalise_line(word.text)]
    skew = skew_degrees(words)
    frames = [(skew + 90 * turn, turn) for turn in range(4)]
    best = max(frames, key=lambda frame: (*frame_votes(to_frame(words, frame[0])), frame[1] == 0))
    return to_frame(words, best[0])


def skew_degrees(words: Sequence[Word]) -> float:
    """The direction of the words' box edges modulo 90 degrees, in (-45, 45]; 0 when there is none."""
    # Angles are quadrupled so that the four sides of a box (and a box's four corner orders) agree.
    sum_cos = sum_sin = 0.0
    for word in words:
        corners = list(word.box)
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
            length, angle = math.hypot(x1 - x0, y1 - y0), 4 * math.atan2(y1 - y0, x1 - x0)
            sum_cos, sum_sin = sum_cos + length * math.cos(angle), sum_sin + length * math.sin(angle)
    if abs(sum_cos) < 1e-9 and abs(sum_sin) < 1e-9:
        return 0.0
    return math.degrees(math.atan2(sum_sin, sum_cos)) / 4


def to_frame(words: Sequence[Word], reading_degrees: float) -> list[Word]:
    """The words with boxes in the frame whose x axis points along `reading_degrees` (image angle, y down)."""
    radians = math.radians(reading_degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    turned = []
    for word in words:
        us = [x * cos + y * sin for x, y in word.box]
        vs = [y * cos - x * sin for x, y in word.box]
        box = rect_box(min(us), min(vs), max(us) - min(us), max(vs) - min(vs))
        turned.append(Word(word.text, box, word.confidence))
    return turned


def frame_votes(words: Sequence[Word]) -> tuple[int, int]:
    """(text direction votes, row order votes) for words already in a candidate frame; higher is likelier."""
    return direction_votes(words), order_votes(words)


def direction_votes(words: Sequence[Word]) -> int:
    """+1 for each word of two characters or more that is wider than tall, -1 for each taller than wide."""
    votes = 0
    for word in words:
        if len(normalise_line(word.text)) >= 2:
            width, height = _extent(word)
            votes += (width > height) - (width < height)
    return votes


def order_votes(words: Sequence[Word]) -> int:
    """+1 for each pair of words on known rows in the card's top-to-bottom order, -1 for each pair not."""
    rows = [(card_row(normalise_line(word.text)), _center_v(word)) for word in words]
    placed = [(row, v) for row, v in rows if row is not None]
    votes = 0
    for index, (row, v) in enumerate(placed):
        for other_row, other_v in placed[index + 1 :]:
            if row != other_row and v != other_v:
                votes += 1 if (row < other_row) == (v < other_v) else -1
    return votes


def card_row(text: str) -> int | None:
    """The row of the card a normalised word is printed on, when its label or its shape tells; else None."""
    for label, row in LABEL_ROWS.items():
        if label in text:
            return row
    if _ID_SHAPE.search(text):
        return LABEL_ROWS["身份号"]
    if _DATE_SHAPE.search(text):
        return LABEL_ROWS["出生"]
    if text in SEXES or _LONE_ETHNICITY.fullmatch(text):
        return LABEL_ROWS["性别"]
    return None


def _extent(word: Word) -> tuple[float, float]:
    us, vs = [u for u, _ in word.box], [v for _, v in word.box]
    return max(us) - min(us), max(vs) - min(vs)


def _center_v(word: Word) -> float:
    vs = [v for _, v in word.box]
    return (min(vs) + max(vs)) / 2
