"""Stages defined outside raypipe, as a user would: loaded by import path and by entry point in the tests."""

from __future__ import annotations

import numpy as np

from raypipe.stages.base import OcrResult, Stage, Word


class Invert(Stage):
    """An image stage with a typed parameter."""

    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return (255 - image).astype(np.uint8)


class EchoOCR(Stage):
    """An 'OCR engine' that reads the mean pixel value: enough to check plumbing without an engine."""

    def __call__(self, image: np.ndarray) -> OcrResult:
        return OcrResult([Word(f"mean {int(image.mean())}")])


class Identity(Stage):
    """Returns its input unchanged (the same bytes), like an orientation fix on an upright card."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


class CopyOf(Stage):
    """Returns a fresh copy: different object, identical bytes."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image.copy()


class Brighten(Stage):
    def __init__(self, by: int = 10):
        self.by = by

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.clip(image.astype(np.int16) + self.by, 0, 255).astype(np.uint8)


class Explode(Stage):
    """Fails on every image: the run must record the error and go on."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise RuntimeError("kaboom")


class Sleepy(Stage):
    """Takes a fixed time per image, so that a run lasts long enough to be killed midway."""

    def __init__(self, seconds: float = 0.5):
        self.seconds = seconds

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import time

        time.sleep(self.seconds)
        return image
