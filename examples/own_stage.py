"""Write your own stage: a digits preprocess step that thickens strokes (a grey-level dilation)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from raypipe.errors import StageError
from raypipe.spec.registry import register
from raypipe.spec.stage import Resources, Stage


@register("preprocess", "dilate")  # the spec can now say `choices: [none, dilate]`
class Dilate(Stage):
    """Each pixel becomes the brightest of its neighbourhood: thin strokes get thicker."""

    # What one actor asks Ray for, and how many items it takes per call: a cheap NumPy step.
    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=64)
    # Part of the stage-cache key: bump it when the output changes for the same input and parameters.
    version: ClassVar[str] = "1"

    def __init__(self, size: int = 3):  # typed keyword parameters, checked when the YAML is loaded
        self.size = size  # load models here, once per actor

    @classmethod
    def preflight(cls, size: int = 3, **_: object) -> None:
        """Runs before Ray starts: refuse what cannot work here, and say what to do."""
        if size < 1 or size % 2 == 0:
            raise StageError(f"dilate: size must be a positive odd number, got {size}")

    @classmethod
    def cache_identity(cls, **params: object) -> dict[str, object]:
        """Anything else that decides the output (model file hashes, library versions)."""
        return {"numpy": np.__version__}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        # The input is read-only (every configuration that reached it shares it): return a new array.
        pad = self.size // 2
        padded = np.pad(image, pad, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (self.size, self.size))
        return windows.max(axis=(-1, -2)).astype(image.dtype)
