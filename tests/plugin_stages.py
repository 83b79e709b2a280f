"""Stages defined outside raypipe, as a user would: loaded by import path and by entry point in the tests."""

from __future__ import annotations

import atexit
import gc
import os
import time
from typing import ClassVar

import numpy as np

from raypipe.spec.stage import Stage
from raypipe.tasks.idcard.stages.words import OcrResult, Word


class Counting(Stage):
    """Counts its calls per class in this process (the pure execution tests read the counts)."""

    calls: ClassVar[dict[str, int]] = {}

    def __call__(self, image: np.ndarray):
        Counting.calls[type(self).__name__] = Counting.calls.get(type(self).__name__, 0) + 1
        return self.apply(image)

    def apply(self, image: np.ndarray):  # pragma: no cover - interface
        raise NotImplementedError


class Invert(Counting):
    """An image stage with a typed parameter."""

    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def apply(self, image: np.ndarray) -> np.ndarray:
        return (255 - image).astype(np.uint8)


class EchoOCR(Counting):
    """An 'OCR engine' that reads the mean pixel value: enough to check plumbing without an engine."""

    def apply(self, image: np.ndarray) -> OcrResult:
        return OcrResult([Word(f"mean {int(image.mean())}")])


class ColdInvert(Invert):
    """Invert, declared to pay nothing on its first call (as Tesseract, a fresh process per call)."""

    warm_up: ClassVar[bool] = False


class Identity(Counting):
    """Returns its input unchanged (the same bytes), like an orientation fix on an upright card."""

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image


class CopyOf(Counting):
    """Returns a fresh copy: different object, identical bytes."""

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image.copy()


class Brighten(Counting):
    def __init__(self, by: int = 10):
        self.by = by

    def apply(self, image: np.ndarray) -> np.ndarray:
        return np.clip(image.astype(np.int16) + self.by, 0, 255).astype(np.uint8)


class Explode(Counting):
    """Fails on every image: the run must record the error and go on."""

    def apply(self, image: np.ndarray) -> np.ndarray:
        raise RuntimeError("kaboom")


class Sleepy(Counting):
    """Takes a fixed time per image, so that a run lasts long enough to be killed midway."""

    def __init__(self, seconds: float = 0.5):
        self.seconds = seconds

    def apply(self, image: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return image


class SlowToExit(Counting):
    """Returns its input, and its process takes `exit_s` to exit (an exit handler sleeps, as the teardown of a
    process with heavy libraries takes time). Each call and each exit's end is appended to the file `log` as
    "pid what time", so that a test can order the stream actors' exits and the calibrator's calls; an exit
    also notes whether the process's heap was frozen then ("frozen" or "unfrozen": `StageActor.__del__`)."""

    def __init__(self, log: str, exit_s: float = 2.0):
        self.log = log
        atexit.register(self._exit, exit_s)

    def _note(self, what: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {what} {time.time()}\n")

    def _exit(self, exit_s: float) -> None:
        time.sleep(exit_s)
        self._note("exited")
        self._note("frozen" if gc.get_freeze_count() else "unfrozen")

    def apply(self, image: np.ndarray) -> np.ndarray:
        self._note("call")
        return image


class HangOn(Counting):
    """Sleeps (practically) forever on inputs whose first value is `value`: a hung engine call."""

    def __init__(self, value: int = 0, hang_s: float = 3600.0):
        self.value, self.hang_s = value, hang_s

    def apply(self, image: np.ndarray) -> np.ndarray:
        if int(np.asarray(image).ravel()[0]) == self.value:
            time.sleep(self.hang_s)
        return image
