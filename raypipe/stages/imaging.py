"""Image and word-box helpers shared by the built-in stages: colour conversions, rotations, reading order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from raypipe.stages.base import Resources, Word

Box = tuple[tuple[float, float], ...]

# Image stages are single images through OpenCV: half a CPU each leaves room for the OCR actors and Ray
# Data's own operators on small machines (a pool that takes every CPU can wait forever).
IMAGE_STAGE_RESOURCES = Resources(num_cpus=0.5)


def as_gray(image: np.ndarray) -> np.ndarray:
    """A 2-D uint8 luminance image (ITU-R 601 weights, as OpenCV); gray input comes back as is."""
    import cv2

    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image; RGB input comes back as is."""
    import cv2

    if image.ndim == 3:
        return image
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)


def rotate_expanded(image: np.ndarray, degrees_ccw: float) -> np.ndarray:
    """Rotate counter-clockwise by any angle, growing the canvas so no corner is cut.

    New border pixels repeat the edge, so the rotation adds no strong edges of its own.
    """
    import cv2

    height, width = image.shape[:2]
    center = (width / 2.0, height / 2.0)
    matrix = cv2.getRotationMatrix2D(center, degrees_ccw, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_width = round(height * sin + width * cos)
    new_height = round(height * cos + width * sin)
    matrix[0, 2] += new_width / 2.0 - center[0]
    matrix[1, 2] += new_height / 2.0 - center[1]
    return cv2.warpAffine(
        image,
        matrix,
        (new_width, new_height),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )


def rotate_quarter_turns(image: np.ndarray, degrees_clockwise: int) -> np.ndarray:
    """Rotate clockwise by a multiple of 90 degrees, losslessly."""
    if degrees_clockwise % 90:
        raise ValueError(f"not a multiple of 90 degrees: {degrees_clockwise}")
    turns_ccw = (-degrees_clockwise // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns_ccw))


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
