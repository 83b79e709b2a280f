"""The digits task's stages: preprocess (none, blur, threshold, deskew) and classify (four classifiers).

Preprocess stages take and return an 8x8 uint8 gray image (0-255). Classify stages return a
`DigitPrediction`. Every call costs microseconds (median on 2 busy cores: preprocess 0.1-16 us, the
scikit-learn classifiers ~100 us, mostly input validation, ONNX Runtime ~20 us), so that the engine's
tests and benchmarks pay for the engine, not for the models.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from raypipe.engine.codec import plain
from raypipe.engine.models import engine_versions
from raypipe.errors import StageError
from raypipe.spec.stage import Resources
from raypipe.tasks.digits import models
from raypipe.tasks.digits.imaging import (
    DEFAULT_BLUR_SIGMA,
    DEFAULT_THRESHOLD,
    deskew,
    gaussian_blur,
    threshold,
)

PREPROCESS_RESOURCES = Resources(num_cpus=0.25, batch_size=64)
CLASSIFY_RESOURCES = Resources(num_cpus=0.5, batch_size=64)
SKLEARN_LIBRARIES = ("sklearn", "scipy", "numpy", "threadpoolctl")
ONNX_LIBRARIES = (*SKLEARN_LIBRARIES, "skl2onnx", "onnx", "onnxruntime")


@plain
@dataclass(frozen=True)
class DigitPrediction:
    """A classifier's answer: the most probable digit and the probability of each digit 0-9."""

    label: int
    probabilities: tuple[float, ...]

    @property
    def confidence(self) -> float:
        """The probability of the predicted digit."""
        return max(self.probabilities)

    def top(self, k: int) -> tuple[int, ...]:
        """The k most probable digits, most probable first."""
        order = sorted(range(len(self.probabilities)), key=lambda d: -self.probabilities[d])
        return tuple(order[:k])


def _opencv_identity() -> dict[str, object]:
    return {"opencv": cv2.__version__}


# -- preprocess -----------------------------------------------------------------------------------------


class NoPreprocess:
    """The image as it is."""

    resources: ClassVar[Resources] = PREPROCESS_RESOURCES
    version: ClassVar[str] = "1"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


class GaussianBlur:
    """A small gaussian blur, which averages pixel noise away (and softens strokes)."""

    resources: ClassVar[Resources] = PREPROCESS_RESOURCES
    version: ClassVar[str] = "1"

    def __init__(self, sigma: float = DEFAULT_BLUR_SIGMA):
        self.preflight(sigma=sigma)
        self.sigma = sigma

    @classmethod
    def preflight(cls, sigma: float = DEFAULT_BLUR_SIGMA) -> None:
        if not 0 < sigma <= 3:
            raise StageError(f"blur: sigma must be in (0, 3] px on an 8x8 digit, got {sigma}")

    @classmethod
    def cache_identity(cls, **params: Any) -> dict[str, object]:
        return _opencv_identity()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return gaussian_blur(image, self.sigma)


class Threshold:
    """Binarise: pixels at or above `level` become 255, the rest 0 (removes faint noise and blur halos)."""

    resources: ClassVar[Resources] = PREPROCESS_RESOURCES
    version: ClassVar[str] = "1"

    def __init__(self, level: int = DEFAULT_THRESHOLD):
        self.preflight(level=level)
        self.level = level

    @classmethod
    def preflight(cls, level: int = DEFAULT_THRESHOLD) -> None:
        if not 1 <= level <= 255:
            raise StageError(f"threshold: level must be in 1-255 (the image scale), got {level}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return threshold(image, self.level)


class Deskew:
    """The classic MNIST deskew: an affine map, from the image moments, that removes the slant (shear)
    and moves the centre of mass to the centre of the frame (which also undoes a shift)."""

    resources: ClassVar[Resources] = PREPROCESS_RESOURCES
    version: ClassVar[str] = "1"

    @classmethod
    def cache_identity(cls, **params: Any) -> dict[str, object]:
        return _opencv_identity()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return deskew(image)


# -- classify -------------------------------------------------------------------------------------------


def _require(modules: tuple[str, ...], choice: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        packages = " ".join("scikit-learn" if m == "sklearn" else m for m in missing)
        raise StageError(f"classify '{choice}' needs {', '.join(missing)}: pip install {packages}")


def _prediction(probabilities: np.ndarray) -> DigitPrediction:
    return DigitPrediction(int(np.argmax(probabilities)), tuple(float(p) for p in probabilities))


class _SklearnClassify:
    resources: ClassVar[Resources] = CLASSIFY_RESOURCES
    version: ClassVar[str] = "1"
    choice: ClassVar[str]

    @classmethod
    def preflight(cls, **params: Any) -> None:
        _require(("sklearn", "threadpoolctl"), cls.choice)

    @classmethod
    def cache_identity(cls, **params: Any) -> dict[str, object]:
        return engine_versions(*SKLEARN_LIBRARIES)

    def __init__(self) -> None:
        self.model = self._model()

    def _model(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, image: np.ndarray) -> DigitPrediction:
        # The classes are 0-9 in order, so the column index is the digit.
        return _prediction(self.model.predict_proba(models.features_of(image))[0])


class LinearClassify(_SklearnClassify):
    """Multinomial logistic regression on the 64 pixels (scikit-learn)."""

    choice = "linear"

    def _model(self) -> Any:
        return models.linear_model()


class MlpClassify(_SklearnClassify):
    """A one-hidden-layer perceptron of 64 ReLU units (scikit-learn)."""

    choice = "mlp"

    def _model(self) -> Any:
        return models.mlp_model()


class OnnxClassify:
    """The MLP exported with skl2onnx and run by ONNX Runtime on one thread."""

    resources: ClassVar[Resources] = CLASSIFY_RESOURCES
    version: ClassVar[str] = "1"
    choice: ClassVar[str] = "onnx"

    @classmethod
    def preflight(cls, **params: Any) -> None:
        _require(("sklearn", "threadpoolctl", "onnx", "skl2onnx", "onnxruntime"), cls.choice)

    @classmethod
    def cache_identity(cls, **params: Any) -> dict[str, object]:
        return engine_versions(*ONNX_LIBRARIES)

    def __init__(self) -> None:
        from raypipe.engine.models import onnx_session

        self.session = onnx_session(self._model_bytes(), threads=1)
        self.input_name = self.session.get_inputs()[0].name

    def _model_bytes(self) -> bytes:
        return models.mlp_onnx()

    def __call__(self, image: np.ndarray) -> DigitPrediction:
        (probabilities,) = self.session.run(["probabilities"], {self.input_name: models.features_of(image)})
        return _prediction(probabilities[0])


class OnnxInt8Classify(OnnxClassify):
    """The ONNX MLP with int8 weights (onnxruntime.quantization.quantize_dynamic)."""

    choice: ClassVar[str] = "onnx-int8"

    def _model_bytes(self) -> bytes:
        return models.mlp_onnx_int8()
