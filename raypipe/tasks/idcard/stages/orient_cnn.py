"""Quarter-turn orientation from a small CNN, served from Keras, TF Lite (LiteRT) or ONNX Runtime files.

The models are trained, distilled and quantized by the `optimization` package (`python -m optimization
train-orient`, `distill`, `quantize`) into a models directory; this module only loads and runs them. Only
the Keras variants import TensorFlow: the TF Lite ones run on the LiteRT interpreter, the ONNX ones on
ONNX Runtime, so their actors stay small.

Class k of the model means "the card was turned 90*k degrees counter-clockwise"; the stage undoes it by
turning the image 90*k degrees clockwise, and returns its input object itself when k is 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal, Protocol, get_args

import numpy as np

from raypipe.engine.models import check_manifest, engine_versions, file_identity, models_dir, onnx_session
from raypipe.errors import StageError
from raypipe.spec.stage import Resources, Stage
from raypipe.tasks.idcard.stages.imaging import IMAGE_STAGE_RESOURCES, as_gray, rotate_quarter_turns

ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)
# The models `optimization` trains: the orientation CNN (also the distillation teacher), its distilled
# student, and the same student trained on hard labels only (the distillation baseline).
MODELS: dict[str, str] = {"": "cnn", "student-": "student", "student-hard-": "student-hard"}
FORMATS: dict[str, str] = {
    "keras": ".keras",
    "tflite-float": "-float.tflite",
    "tflite-dynamic": "-dynamic.tflite",
    "tflite-int8": "-int8.tflite",
    "onnx": ".onnx",
    "onnx-int8": "-int8.onnx",
    "onnx-int8-static": "-int8-static.onnx",
}
Variant = Literal[
    "keras",
    "tflite-float",
    "tflite-dynamic",
    "tflite-int8",
    "onnx",
    "onnx-int8",
    "onnx-int8-static",
    "student",
    "student-tflite-float",
    "student-tflite-dynamic",
    "student-tflite-int8",
    "student-onnx",
    "student-onnx-int8",
    "student-onnx-int8-static",
    "student-hard",
]


VARIANTS: tuple[str, ...] = get_args(Variant)


def _variant_table() -> dict[str, tuple[str, str]]:
    """Variant name -> (model, format): "keras" is the CNN's Keras file, "student" the student's."""
    table = {}
    for prefix, model in MODELS.items():
        for fmt in FORMATS:
            name = prefix + fmt if fmt != "keras" else (prefix.rstrip("-") or fmt)
            table[name] = (model, fmt)
    return {variant: table[variant] for variant in VARIANTS}


VARIANT_PARTS = _variant_table()


def variant_parts(variant: str) -> tuple[str, str]:
    """(model, format) of a variant: "keras" -> ("cnn", "keras"), "student-onnx" -> ("student", "onnx")."""
    if variant not in VARIANT_PARTS:
        raise StageError(f"unknown orient cnn variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    return VARIANT_PARTS[variant]


def artifact_name(model: str, fmt: str) -> str:
    """File name of `model` ("cnn", "student", ...) in format `fmt` ("keras", "tflite-int8", ...)."""
    return f"orient-{model}{FORMATS[fmt]}"


def variant_path(variant: str, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the file of `variant` lives."""
    return models_dir(model_dir) / artifact_name(*variant_parts(variant))


def model_input(image: np.ndarray, size: int) -> np.ndarray:
    """The CNN's view of an image: gray, shrunk to fit a size x size square, centred on black (uint8).

    Letterboxing keeps the aspect ratio, so a card turned by 90 degrees stays visibly portrait.
    """
    import cv2

    gray = as_gray(image)
    height, width = gray.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = cv2.resize(gray, (new_w, new_h), interpolation=cv2.INTER_AREA)
    square = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    square[top : top + new_h, left : left + new_w] = small
    return square


def as_batch(squares: np.ndarray) -> np.ndarray:
    """(N, size, size) uint8 -> the float32 (N, size, size, 1) in [0, 1] every variant takes."""
    return (squares.astype(np.float32) / np.float32(255.0))[..., None]


class Backend(Protocol):
    """A loaded model file: logits (N, 4) for a float batch (N, size, size, 1)."""

    input_size: int

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class KerasBackend:
    """The float Keras model; imports TensorFlow (about 700 MB per process)."""

    def __init__(self, path: Path, threads: int = 1):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        torch_before_tensorflow()
        import keras
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TensorFlow already started in this process: it keeps its thread pools
        self.model = keras.saving.load_model(path, compile=False)
        self.input_size = int(self.model.input_shape[1])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))


class LiteRTBackend:
    """A TF Lite file on the LiteRT interpreter (no TensorFlow); int8 inputs and outputs are (de)quantized."""

    def __init__(self, path: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_size = int(self.input["shape"][1])
        self.batch_size = int(self.input["shape"][0])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self.batch_size:
            self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self.batch_size = batch.shape[0]
        self.interpreter.set_tensor(self.input["index"], _quantize(batch, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)


def _quantize(batch: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return batch
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if values.dtype == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


class OnnxBackend:
    """An ONNX file on ONNX Runtime's CPU provider (no TensorFlow)."""

    def __init__(self, path: Path, threads: int = 1):
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = int(self.session.get_inputs()[0].shape[1])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


RUNTIMES: dict[str, tuple[str, str]] = {
    "keras": ("tensorflow", "pip install tensorflow-cpu"),
    "tflite": ("ai_edge_litert", "pip install ai-edge-litert"),
    "onnx": ("onnxruntime", "pip install onnxruntime"),
}


def torch_before_tensorflow() -> None:
    """Import torchvision (when installed) before TensorFlow: in the other order, EasyOCR's torchvision import
    later in the same process crashes it (a segmentation fault, seen with tensorflow-cpu 2.21 and
    torchvision 0.29 in a driver checking configs/icp.yaml and in the calibration actor)."""
    import importlib.util
    import sys

    if "tensorflow" not in sys.modules and importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401


def load_backend(path: Path, threads: int = 1) -> Backend:
    """The runtime that serves `path`, chosen by its suffix."""
    backends = {".keras": KerasBackend, ".tflite": LiteRTBackend, ".onnx": OnnxBackend}
    return backends[path.suffix](path, threads)


class OrientCNN(Stage):
    """Undo quarter turns with the orientation CNN in one of its forms (`variant`).

    `model_dir` defaults to $RAYPIPE_MODELS_DIR, else ./models, else models/ of the raypipe checkout. The
    image is rotated only when the top class has at least `min_confidence` probability.
    """

    resources: ClassVar[Resources] = IMAGE_STAGE_RESOURCES
    version: ClassVar[str] = "1"

    def __init__(
        self,
        variant: Variant = "keras",
        model_dir: str | None = None,
        min_confidence: float = 0.0,
        threads: int = 1,
    ):
        path = self.preflight(variant=variant, model_dir=model_dir)
        self.variant = variant
        self.min_confidence = min_confidence
        self.backend = load_backend(path, threads)

    @classmethod
    def preflight(cls, variant: str = "keras", model_dir: str | None = None, **_: object) -> Path:
        path = variant_path(variant, model_dir)
        fmt = variant_parts(variant)[1]
        if not path.is_file():
            raise StageError(
                f"orient cnn variant {variant!r} needs {path}, which is missing: {_make_hint(variant)}"
            )
        check_manifest(path, _make_hint(variant))
        module, install = RUNTIMES[fmt.split("-")[0]]
        try:
            if module == "tensorflow":
                torch_before_tensorflow()
            __import__(module)
        except ImportError as exc:
            raise StageError(f"orient cnn variant {variant!r} needs {module}: {install}") from exc
        return path

    @classmethod
    def cache_identity(
        cls, variant: str = "keras", model_dir: str | None = None, **_: object
    ) -> dict[str, object]:
        """The variant file's SHA-256 and the versions of its runtime and of OpenCV (the resize)."""
        path = variant_path(variant, model_dir)
        runtime = RUNTIMES[variant_parts(variant)[1].split("-")[0]][0]
        modules = ("cv2", runtime, "keras") if runtime == "tensorflow" else ("cv2", runtime)
        model = file_identity(path) if path.is_file() else "missing"
        return {"model": {path.name: model}, "engines": engine_versions(*modules)}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        turns = self.predict_rotation(image)
        if turns == 0:
            return image
        return rotate_quarter_turns(image, turns)

    def predict_rotation(self, image: np.ndarray) -> int:
        """Degrees (0, 90, 180, 270) the card was turned counter-clockwise; 0 when unsure."""
        logits = self.backend.predict(as_batch(model_input(image, self.backend.input_size)[None]))[0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(np.argmax(probabilities))
        return ROTATIONS[best] if probabilities[best] >= self.min_confidence else 0


def _make_hint(variant: str) -> str:
    model, fmt = variant_parts(variant)
    if fmt != "keras":
        return "run `python -m optimization quantize` (after train-orient / distill)"
    if model != "cnn":
        return "run `python -m optimization distill` (after train-orient)"
    return "run `python -m optimization train-orient`"
