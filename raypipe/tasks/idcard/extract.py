"""Extract stages: from an OCR engine's words to the card's fields (the `extract` stage kind).

`label_value` is the text parser the course uses (labels then values, line by line). `layout` pairs labels
and values by the geometry of the word boxes, so it reads cards whose lines come back in another order.
"""

from __future__ import annotations

from typing import ClassVar

from raypipe.spec.stage import Resources, Stage
from raypipe.tasks.idcard.fields import CardFields, parse_fields
from raypipe.tasks.idcard.stages.words import OcrResult, Word

# Parsing is pure Python on a few dozen words: a small CPU share, so it never holds up the OCR pool.
EXTRACT_RESOURCES = Resources(num_cpus=0.25, batch_size=8)


def mean_confidence(ocr: OcrResult) -> float | None:
    """The mean confidence of the engine's words; None when it read nothing."""
    if not ocr.words:
        return None
    return sum(w.confidence for w in ocr.words) / len(ocr.words)


def as_ocr_result(value: OcrResult | str) -> OcrResult:
    """An OCR result from an engine's output (an OcrResult, or plain text from a user's engine)."""
    if isinstance(value, OcrResult):
        return value
    return OcrResult([Word(line) for line in str(value).splitlines() if line.strip()])


class LabelValue(Stage):
    """The course's parser on the OCR text: lines top to bottom, each label followed by its value."""

    resources: ClassVar[Resources] = EXTRACT_RESOURCES
    version: ClassVar[str] = "1"

    def __call__(self, ocr: OcrResult) -> CardFields:
        ocr = as_ocr_result(ocr)
        text = ocr.text
        return CardFields(parse_fields(text), text, mean_confidence(ocr))


class Layout(Stage):
    """Labels paired with values by where their boxes lie; see `raypipe.tasks.idcard.layout`."""

    resources: ClassVar[Resources] = EXTRACT_RESOURCES
    version: ClassVar[str] = "1"

    def __call__(self, ocr: OcrResult) -> CardFields:
        from raypipe.tasks.idcard.layout import read_fields

        ocr = as_ocr_result(ocr)
        return CardFields(read_fields(ocr.words), ocr.text, mean_confidence(ocr))
