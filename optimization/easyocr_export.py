"""`export-easyocr`: EasyOCR's english_g2 recognizer to ONNX (fp32) and int8 (MatMul, LSTM, Gemm only).

The legacy TorchScript exporter cannot export `AdaptiveAvgPool2d((None, 1))` with a dynamic width; it
pools only the last axis to 1, which is a mean over that axis, so the export swaps in exactly that.
Quantizing every op (the convolutions too) made the recognizer slower, so only the sequence model and
the classifier are quantized. The export is checked: the ONNX recognizer must read the same text as
torch on crops of generated cards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimization.artifacts import record_artifact, replace_atomically
from optimization.runtime import configure_environment, preload_torch
from optimization.training import Progress
from raypipe.engine.models import file_sha256
from raypipe.tasks.idcard.stages.easyocr_onnx import RECOGNIZER_FILES, use_onnx_recognizer

ONNX_OPSET = 17
QUANTIZED_OPS = ["MatMul", "LSTM", "Gemm"]
RECOGNIZER_WEIGHTS = "english_g2.pth"
CHECK_CARDS = 4


def packaged_reader(quantize: bool, detector: bool = False) -> Any:
    """An English easyocr.Reader on the CPU from the hash-pinned offline weights (never downloads).

    `quantize=False` keeps the torch recognizer in fp32; EasyOCR's default (True) applies torch's own
    dynamic int8 quantization to its LSTM and Linear layers on the CPU.
    """
    configure_environment()
    preload_torch()
    import easyocr

    from raypipe.tasks.idcard.stages.ocr_easyocr import (
        easyocr_cache_dir,
        packaged_model_dir,
        verify_packaged_weights,
    )

    weights = packaged_model_dir()
    verify_packaged_weights(weights)
    return easyocr.Reader(
        ["en"],
        gpu=False,
        model_storage_directory=str(weights),
        user_network_directory=str(easyocr_cache_dir() / "user_network"),
        download_enabled=False,
        detector=detector,
        verbose=False,
        quantize=quantize,
    )


def export_recognizer(reader: Any, path: Path) -> None:
    """Write the reader's fp32 torch recognizer as ONNX with dynamic batch and width."""
    import torch

    class MeanOverLastAxis(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=3, keepdim=True)

    model = copy.deepcopy(reader.recognizer).eval()
    model.AdaptiveAvgPool = MeanOverLastAxis()
    image, text = torch.zeros(1, 1, 64, 256), torch.zeros(1, 26, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (image, text),
            str(path),
            input_names=["image", "text"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "steps"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def quantize_recognizer(source: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)


@dataclass(frozen=True)
class CardCrops:
    """One generated card in gray, its word boxes as EasyOCR's [x_min, x_max, y_min, y_max], and truths."""

    gray: np.ndarray
    boxes: list[list[int]]
    words: list[str]


def card_crops(cards: int, seed: int = 0) -> list[CardCrops]:
    """Clean generated cards with every printed word's box (the recognizer's input without a detector)."""
    import io

    from PIL import Image

    from raypipe.tasks.idcard.generator import generate_dataset

    result = []
    for row in generate_dataset("clean", cards, seed).to_pylist():
        gray = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("L"))
        boxes, words = [], []
        for word in row["ocr"]:
            xs, ys = [p[0] for p in word["box"]], [p[1] for p in word["box"]]
            boxes.append([int(min(xs)) - 2, int(max(xs)) + 2, int(min(ys)) - 2, int(max(ys)) + 2])
            words.append(word["word"])
        result.append(CardCrops(gray, boxes, words))
    return result


def read_crops(reader: Any, cards: list[CardCrops]) -> list[str]:
    """The text EasyOCR's recognition (its own preprocessing and decoding) reads in every box."""
    texts = []
    for card in cards:
        lines = reader.recognize(card.gray, horizontal_list=card.boxes, free_list=[], reformat=False)
        texts += [str(text) for _, text, _ in lines]
    return texts


def compare_with_torch(reader: Any, onnx_path: Path, cards: list[CardCrops]) -> dict[str, Any]:
    """Read the crops with the reader's torch recognizer and with the ONNX one; how many texts agree."""
    torch_recognizer = reader.recognizer
    expected = read_crops(reader, cards)
    try:
        use_onnx_recognizer(reader, str(onnx_path))
        actual = read_crops(reader, cards)
    finally:
        reader.recognizer = torch_recognizer
    same = sum(a == b for a, b in zip(expected, actual, strict=True))
    return {
        "crops": len(expected),
        "same_text_as_torch_fp32": same,
        "torch_texts": expected,
        "onnx_texts": actual,
    }


def export_easyocr(models_dir: Path, progress: Progress = print) -> dict[str, dict]:
    """Export and quantize the recognizer into `models_dir`; returns the manifest entries by variant."""
    from raypipe.tasks.idcard.stages.ocr_easyocr import packaged_model_dir

    reader = packaged_reader(quantize=False)
    cards = card_crops(CHECK_CARDS)
    fp32 = models_dir / RECOGNIZER_FILES["onnx"]
    int8 = models_dir / RECOGNIZER_FILES["onnx-int8"]
    models_dir.mkdir(parents=True, exist_ok=True)
    replace_atomically(lambda p: export_recognizer(reader, p), fp32)
    replace_atomically(lambda p: quantize_recognizer(fp32, p), int8)
    source = packaged_model_dir() / RECOGNIZER_WEIGHTS
    entries = {}
    for variant, path in (("onnx", fp32), ("onnx-int8", int8)):
        check = compare_with_torch(reader, path, cards)
        entries[variant] = record_artifact(
            path,
            model="easyocr-english_g2",
            format=variant,
            source=RECOGNIZER_WEIGHTS,
            source_sha256=file_sha256(source),
            quantized_ops=QUANTIZED_OPS if variant == "onnx-int8" else None,
            check={k: check[k] for k in ("crops", "same_text_as_torch_fp32")},
            command="python -m optimization export-easyocr",
        )
        progress(
            f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB, same text as torch fp32 on "
            f"{check['same_text_as_torch_fp32']}/{check['crops']} crops"
        )
    return entries
