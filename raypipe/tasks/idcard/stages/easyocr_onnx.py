"""EasyOCR's recognizer served by ONNX Runtime: swap it into an `easyocr.Reader` in place of torch.

`python -m optimization export-easyocr` writes the ONNX files (fp32, and int8 with only MatMul, LSTM and
Gemm quantized) of the english_g2 recognizer into the models directory. `use_onnx_recognizer` replaces
`reader.recognizer` by an object with the torch module's call interface, so EasyOCR's own recognition
code (batching, decoding, the low-contrast second pass) runs unchanged and only the network differs.

A stage offers it as `recognizer: Recognizer = "torch"` and `recognizer_dir: str | None = None`: preflight
calls `check_recognizer(recognizer, recognizer_dir)`; `__init__` builds the Reader with
`quantize=recognizer != "torch-fp32"` (and on the CPU for the ONNX ones), then, when `check_recognizer`
returned a path, calls `use_onnx_recognizer(reader, str(path))`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from raypipe.engine.models import check_manifest, file_identity, models_dir, onnx_session
from raypipe.errors import StageError

# "torch" is EasyOCR's own recognizer as it loads it: on the CPU, torch's dynamic int8 quantization of the
# LSTM and Linear layers (easyocr.Reader(quantize=True), its default). "torch-fp32" is the same network
# unquantized (quantize=False). The ONNX ones are files of `python -m optimization export-easyocr`.
Recognizer = Literal["torch", "torch-fp32", "onnx", "onnx-int8"]
RECOGNIZER_FILES: dict[str, str] = {
    "onnx": "easyocr-english_g2.onnx",
    "onnx-int8": "easyocr-english_g2-int8.onnx",
}
EXPORT_HINT = "run `python -m optimization export-easyocr`"


def recognizer_path(recognizer: str, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the ONNX file of `recognizer` ("onnx" or "onnx-int8") lives."""
    if recognizer not in RECOGNIZER_FILES:
        choices = ", ".join(get_args(Recognizer))
        raise StageError(f"unknown EasyOCR recognizer {recognizer!r}: choose one of {choices}")
    return models_dir(model_dir) / RECOGNIZER_FILES[recognizer]


def check_recognizer(recognizer: str, model_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The ONNX file a recognizer choice needs (None for torch); StageError when missing or stale."""
    if recognizer in ("torch", "torch-fp32"):
        return None
    path = recognizer_path(recognizer, model_dir)
    if not path.is_file():
        raise StageError(f"EasyOCR recognizer {recognizer!r} needs {path}, which is missing: {EXPORT_HINT}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise StageError(
            f"EasyOCR recognizer {recognizer!r} needs onnxruntime: pip install onnxruntime"
        ) from exc
    check_manifest(path, EXPORT_HINT)
    return path


def recognizer_identity(recognizer: str, model_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """For cache keys: the SHA-256 of the ONNX recognizer file a choice loads (nothing for torch ones)."""
    if recognizer in ("torch", "torch-fp32"):
        return {}
    path = recognizer_path(recognizer, model_dir)
    return {path.name: file_identity(path) if path.is_file() else "missing"}


class OnnxRecognizer:
    """Stands in for EasyOCR's torch recognizer: `model(image, text)` -> logits (batch, steps, classes).

    EasyOCR calls `eval()` and then the model on a float tensor (batch, 1, 64, width); `text` is unused by
    the CTC network, as in torch.
    """

    def __init__(self, onnx_path: str | os.PathLike[str], threads: int = 1):
        self.session = onnx_session(onnx_path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.num_classes = self.session.get_outputs()[0].shape[-1]

    def eval(self) -> OnnxRecognizer:
        return self

    def to(self, device: Any) -> OnnxRecognizer:
        return self

    def __call__(self, image: Any, text: Any = None) -> Any:
        import torch

        batch = image.detach().cpu().numpy().astype(np.float32, copy=False)
        logits = self.session.run(None, {self.input_name: batch})[0]
        return torch.from_numpy(logits)


def use_onnx_recognizer(reader: Any, onnx_path: str, threads: int | None = None) -> None:
    """Make `reader` (an easyocr.Reader) recognize with the ONNX file at `onnx_path`, on the CPU.

    `threads` defaults to torch's own thread count in this process, so the ONNX recognizer gets the CPU
    budget the torch one had. The file must come from the reader's network: the class counts must agree.
    """
    if str(getattr(reader, "device", "cpu")) != "cpu":
        raise StageError("the ONNX EasyOCR recognizer runs on the CPU: build the Reader with gpu=False")
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    recognizer = OnnxRecognizer(onnx_path, threads=threads)
    expected = len(reader.converter.character)
    if isinstance(recognizer.num_classes, int) and recognizer.num_classes != expected:
        raise StageError(
            f"{onnx_path} predicts {recognizer.num_classes} classes but this Reader's network has "
            f"{expected}: "
            f"the ONNX file was exported from another recognizer ({EXPORT_HINT} for the packaged english_g2)"
        )
    reader.recognizer = recognizer
