"""RapidOCR: PP-OCRv4 detector, direction classifier and recognizer on ONNX Runtime, with bundled models."""

from __future__ import annotations

import os
from typing import ClassVar, Literal

import numpy as np

from raypipe.errors import StageError
from raypipe.stages.base import OcrResult, Resources, Stage, Word
from raypipe.stages.imaging import as_rgb
from raypipe.stages.words import quad_box, sort_reading_order

CUDA_PROVIDER = "CUDAExecutionProvider"


def onnxruntime_has_cuda() -> bool:
    """Whether the installed ONNX Runtime build can run on CUDA (onnxruntime-gpu with its libraries)."""
    import onnxruntime

    return CUDA_PROVIDER in onnxruntime.get_available_providers()


class RapidOCR(Stage):
    """Words with quadrilateral boxes and recognition scores from `rapidocr_onnxruntime` 1.4.

    `device="auto"` uses ONNX Runtime's CUDA provider when the installed build offers it.
    `use_angle_cls` turns each detected line upright before recognition (reads 180-degree turned text).
    `threads` caps ONNX Runtime's intra-op threads per session; 0 is ONNX Runtime's default, one spinning
    thread per core. One thread matches the actor's one-CPU reservation: on 2 busy cores (load ~5) a card
    took 1.3 s with 1 thread against 2.2 s with the default, though 0.85 s against 0.53 s on idle cores.
    """

    # Its GPU use goes through ONNX Runtime, not through a Ray GPU reservation.
    resources: ClassVar[Resources] = Resources(num_cpus=1, num_gpus=0)
    version: ClassVar[str] = "1"

    def __init__(
        self,
        use_angle_cls: bool = True,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        threads: int = 1,
        text_score: float = 0.5,
    ):
        self.preflight(device=device)
        from rapidocr_onnxruntime import RapidOCR as Engine

        self.device = "cuda" if device == "cuda" or (device == "auto" and onnxruntime_has_cuda()) else "cpu"
        use_cuda = self.device == "cuda"
        engine_options: dict[str, object] = {"det_use_cuda": use_cuda, "cls_use_cuda": use_cuda}
        engine_options |= {"rec_use_cuda": use_cuda, "text_score": text_score}
        if threads > 0:
            engine_options["intra_op_num_threads"] = threads
        self.use_angle_cls = use_angle_cls
        self.engine = Engine(**engine_options)

    @classmethod
    def preflight(cls, device: str = "auto", **_: object) -> None:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # else onnxruntime writes ~/.cache/Microsoft
        try:
            import onnxruntime  # noqa: F401
            import rapidocr_onnxruntime  # noqa: F401
        except ImportError as exc:
            raise StageError(
                f"RapidOCR needs rapidocr-onnxruntime 1.4 and onnxruntime ({exc}): "
                "pip install onnxruntime && pip install --no-deps rapidocr-onnxruntime==1.4.4"
            ) from exc
        if device == "cuda" and not onnxruntime_has_cuda():
            raise StageError(
                "RapidOCR device='cuda' but ONNX Runtime offers no CUDAExecutionProvider: "
                "pip install onnxruntime-gpu (in place of onnxruntime), or use device='auto'"
            )

    def __call__(self, image: np.ndarray) -> OcrResult:
        # RapidOCR takes 3-channel arrays as BGR (OpenCV order); raypipe's images are RGB.
        bgr = np.ascontiguousarray(as_rgb(image)[:, :, ::-1])
        lines, _ = self.engine(bgr, use_cls=self.use_angle_cls)
        words = [
            Word(text=str(text), box=quad_box(box), confidence=float(score))
            for box, text, score in lines or []
            if str(text).strip()
        ]
        return OcrResult(words=sort_reading_order(words))
