"""RapidOCR: PP-OCRv4 detector, direction classifier and recognizer on ONNX Runtime, with bundled models."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from raypipe.engine.models import engine_versions, file_identity
from raypipe.errors import StageError
from raypipe.spec.stage import Resources, Stage
from raypipe.tasks.idcard.stages.imaging import as_rgb
from raypipe.tasks.idcard.stages.words import OcrResult, Word, quad_box, sort_reading_order

CUDA_PROVIDER = "CUDAExecutionProvider"
ENGINE_MODULES = ("rapidocr_onnxruntime", "onnxruntime", "cv2", "pyclipper", "shapely")


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

    @classmethod
    def cache_identity(cls, **_: object) -> dict[str, object]:
        """The SHA-256 of the bundled models and settings file, and the engine libraries' versions."""
        return {"models": bundled_models(), "engines": engine_versions(*ENGINE_MODULES)}

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


@cache
def _package_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    return Path(spec.origin).parent if spec and spec.origin else None


def bundled_models() -> dict[str, str]:
    """SHA-256 of rapidocr_onnxruntime's config.yaml and of the detector, direction classifier and
    recognizer files it names (the package's own models: nothing is downloaded)."""
    import yaml

    folder = _package_dir()
    if folder is None or not (folder / "config.yaml").is_file():
        return {"config.yaml": "missing"}
    config = yaml.safe_load((folder / "config.yaml").read_text())
    names = ["config.yaml"] + [config[part]["model_path"] for part in ("Det", "Cls", "Rec")]
    return {name: file_identity(folder / name) if (folder / name).is_file() else "missing" for name in names}
