"""What OCR engines return: words with boxes and confidences, and the reading order of boxed words."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from raypipe.engine.codec import plain

Box = tuple[tuple[float, float], ...]


@plain
@dataclass(frozen=True)
class Word:
    """One recognised piece of text; `box` is four (x, y) corners in image pixels, or None."""

    text: str
    box: tuple[tuple[float, float], ...] | None = None
    confidence: float = 1.0


@plain
@dataclass
class OcrResult:
    """An OCR engine's reading of one image, words in reading order."""

    words: list[Word] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The words as lines of text. With boxes, words on one line are joined by spaces: Tesseract returns
        a Chinese name one character per word, and a name split over lines is no name."""
        if self.words and all(w.box for w in self.words):
            return "\n".join(" ".join(w.text for w in line) for line in group_lines(self.words))
        return "\n".join(w.text for w in self.words)


def rect_box(left: float, top: float, width: float, height: float) -> Box:
    """Four corners (clockwise from top-left) of an axis-aligned rectangle."""
    left, top = float(left), float(top)
    right, bottom = left + float(width), top + float(height)
    return ((left, top), (right, top), (right, bottom), (left, bottom))


def quad_box(points: Iterable[Sequence[float]]) -> Box:
    """Four corners as a tuple of float pairs, from any nested sequence or array of points."""
    return tuple((float(x), float(y)) for x, y in points)


def sort_reading_order(words: Iterable[Word]) -> list[Word]:
    """Words top to bottom, then left to right within a line; words without a box go last."""
    words = list(words)
    return [w for line in group_lines(words) for w in line] + [w for w in words if not w.box]


def group_lines(words: Iterable[Word]) -> list[list[Word]]:
    """The boxed words as text lines, top to bottom, each left to right.

    A word joins the current line when its vertical centre lies within half a word height of the
    line's first word, so small skews and mixed font sizes still keep a line together.
    """
    lines: list[list[Word]] = []
    for word in sorted((w for w in words if w.box), key=_center_y):
        if lines and abs(_center_y(word) - _center_y(lines[-1][0])) <= _line_tolerance(lines[-1][0], word):
            lines[-1].append(word)
        else:
            lines.append([word])
    return [sorted(line, key=_left_x) for line in lines]


def _center_y(word: Word) -> float:
    return sum(y for _, y in word.box) / len(word.box)


def _left_x(word: Word) -> float:
    return min(x for x, _ in word.box)


def _height(word: Word) -> float:
    ys = [y for _, y in word.box]
    return max(ys) - min(ys)


def _line_tolerance(first: Word, word: Word) -> float:
    return 0.5 * min(_height(first), _height(word))
