"""What a stage implementation is: a small class, its resources, and the OCR result type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Resources:
    """What one actor holding this implementation asks Ray for, and the batch it prefers."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 1


@dataclass(frozen=True)
class Word:
    """One recognised piece of text; `box` is four (x, y) corners in image pixels, or None."""

    text: str
    box: tuple[tuple[float, float], ...] | None = None
    confidence: float = 1.0


@dataclass
class OcrResult:
    """An OCR engine's reading of one image, words in reading order."""

    words: list[Word] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The words as lines of text. With boxes, words on one line are joined by spaces: Tesseract returns
        a Chinese name one character per word, and a name split over lines is no name."""
        if self.words and all(w.box for w in self.words):
            from raypipe.stages.imaging import group_lines

            return "\n".join(" ".join(w.text for w in line) for line in group_lines(self.words))
        return "\n".join(w.text for w in self.words)


class Stage:
    """Base of stage implementations (subclassing is optional: any class with this shape works).

    An implementation takes its parameters as typed keyword arguments of `__init__` (checked when the
    YAML is loaded, before Ray starts), loads its model there once, and is called on one image:
    an RGB `uint8` array of shape (H, W, 3) or a gray one of shape (H, W). Image stages return an
    image; OCR stages return an `OcrResult`.
    """

    resources: ClassVar[Resources] = Resources()
    # Bump when the implementation's output changes for the same input and parameters.
    version: ClassVar[str] = "1"

    @classmethod
    def preflight(cls, **params) -> None:
        """Raise StageError naming what to install when this implementation cannot run here."""

    def __call__(self, image: np.ndarray):  # pragma: no cover - interface
        raise NotImplementedError
