"""What a stage implementation is: a small class and the resources its actors ask for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Resources:
    """What one actor holding this implementation asks Ray for, and the batch it prefers."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 1


class Stage:
    """Base of stage implementations (subclassing is optional: any class with this shape works).

    An implementation takes its parameters as typed keyword arguments of `__init__` (checked when the
    YAML is loaded, before Ray starts), loads its model there once, and is called on one input: for
    image stages an RGB `uint8` array of shape (H, W, 3) or a gray one of shape (H, W). The input is
    read-only (it is shared by every configuration that reached it): return a new array, or the input
    itself when nothing changes. Image stages return an image; other stages return what the
    task's next stage or scorer reads (idcard's OCR stages: `tasks.idcard.stages.words.OcrResult`).
    """

    resources: ClassVar[Resources] = Resources()
    # Bump when the implementation's output changes for the same input and parameters.
    version: ClassVar[str] = "1"
    # Whether a process's first call pays one-off costs that later calls do not (lazy imports, a model's
    # first inference): raypipe then makes that call once untimed, in every actor and in calibration. False
    # for an engine that runs as a fresh process per call and keeps nothing in this one (Tesseract).
    warm_up: ClassVar[bool] = True

    @classmethod
    def preflight(cls, **params) -> None:
        """Raise StageError naming what to install when this implementation cannot run here."""

    @classmethod
    def alphabet(cls, **params) -> str | None:
        """Every character this choice's text output can hold, when its model limits them (an OCR engine
        that writes one script); None when it does not. Tasks use it to say up front which metrics such a
        choice cannot score (`Task.unwritable`)."""
        return None

    @classmethod
    def cache_identity(cls, **params) -> dict[str, object]:
        """What else decides this choice's output besides its class, `version` and parameters: hashes of
        the model files it loads, versions of the engines it calls. Part of the stage-cache key, so a
        retrained model or an upgraded engine never serves old outputs."""
        return {}

    def __call__(self, image: np.ndarray):  # pragma: no cover - interface
        raise NotImplementedError
