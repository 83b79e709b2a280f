"""The canonical row schema every dataset source is converted to, and the conversion of its columns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

SLICE_ATTRIBUTES: tuple[str, ...] = (
    "profile",
    "rotation",
    "skew_angle",
    "blur",
    "brightness",
    "noise",
    "jpeg_quality",
)
TRUTH_FIELDS: tuple[str, ...] = ("name", "sex", "ethnicity", "birth_date", "id_number", "address")


def identity_truth(person: Any) -> dict[str, str]:
    """The truth fields of a drawn identity (either renderer's), birth_date as YYYY-MM-DD."""
    return {f: person.birth.isoformat() if f == "birth_date" else getattr(person, f) for f in TRUTH_FIELDS}


BOX_TYPE = pa.list_(pa.list_(pa.float64()))
OCR_TYPE = pa.list_(pa.struct([("word", pa.string()), ("box", BOX_TYPE)]))
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SLICE_TYPES: dict[str, pa.DataType] = {
    "profile": pa.string(),
    "rotation": pa.int32(),
    "skew_angle": pa.float64(),
    "blur": pa.float64(),
    "brightness": pa.float64(),
    "noise": pa.float64(),
    "jpeg_quality": pa.int32(),
}
CANONICAL_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("image", IMAGE_TYPE),
        ("ocr", OCR_TYPE),
        *[(f"truth_{field}", pa.string()) for field in TRUTH_FIELDS],
        ("truth_text", pa.string()),
        *SLICE_TYPES.items(),
    ]
)
REAL_PROFILE = "real"

Point = list[float]


def normalise_box(box: Any) -> list[Point]:
    """Four (x, y) corners from any box encoding: [x1, y1, x2, y2], 8 flat numbers, 2 or 4 points.

    Raises ValueError for anything else, so that a malformed label is reported, not guessed.
    """
    values = list(box)
    if values and all(_is_pair(value) for value in values):
        points = [[float(x), float(y)] for x, y in values]
    elif len(values) in (4, 8) and all(isinstance(value, int | float) for value in values):
        points = [[float(values[i]), float(values[i + 1])] for i in range(0, len(values), 2)]
    else:
        raise ValueError(f"unrecognised box encoding {box!r}: expected [x1,y1,x2,y2] or 4 (x, y) points")
    if len(points) == 2:
        (x1, y1), (x2, y2) = points
        points = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    if len(points) != 4:
        raise ValueError(f"unrecognised box encoding {box!r}: {len(points)} points")
    return points


def _is_pair(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2


def normalise_ocr(entries: Iterable[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The `ocr` list of one row as {word, box} with 4-point boxes; extra keys (such as cls) dropped."""
    words = []
    for entry in entries or []:
        box = entry.get("box")
        words.append(
            {"word": str(entry.get("word") or ""), "box": None if box is None else normalise_box(box)}
        )
    return words


def words_of(ocr: Sequence[dict[str, Any]] | None) -> list[str]:
    """The words of one row's `ocr` list, in reading order."""
    return [str(entry.get("word") or "") for entry in ocr or []]


def truth_text(words: Sequence[str]) -> str:
    """The reference text CER is measured against: the card's words joined by newlines."""
    return "\n".join(words)
