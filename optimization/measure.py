"""Each variant alone: file size, latency at batch 1 and batched, held-out accuracy, in one process.

Variants are timed side by side in interleaved rounds (every variant once per round, median over
rounds), one thread each, so that load from other processes on the machine hits them all alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from optimization.artifacts import read_manifest
from optimization.distill import agreement
from optimization.easyocr_export import RECOGNIZER_WEIGHTS, CardCrops, card_crops, packaged_reader, read_crops
from optimization.orient_data import OrientData
from optimization.training import accuracy, log_loss
from raypipe.tasks.idcard.stages.easyocr_onnx import RECOGNIZER_FILES
from raypipe.tasks.idcard.stages.orient_cnn import (
    VARIANTS,
    artifact_name,
    as_batch,
    load_backend,
    variant_parts,
    variant_path,
)


def interleaved_medians(calls: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, float]:
    """Median milliseconds per call of each callable, timed in `rounds` interleaved rounds after a warm-up."""
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(per_round):
                call()
            samples[name].append((time.perf_counter() - started) * 1000.0 / per_round)
    return {name: float(np.median(values)) for name, values in samples.items()}


def orient_rows(
    models_dir: Path, holdout: OrientData, batch: int, rounds: int, calls: int = 20
) -> list[dict[str, Any]]:
    """One row per orientation variant present in `models_dir`; `calls` batch-1 calls per timing round."""
    artifacts = read_manifest(models_dir)["artifacts"]
    present = [v for v in VARIANTS if variant_path(v, models_dir).is_file()]
    backends = {v: load_backend(variant_path(v, models_dir), threads=1) for v in present}
    inputs = as_batch(holdout.images)
    logits = {
        v: np.concatenate([b.predict(inputs[i : i + 256]) for i in range(0, len(inputs), 256)])
        for v, b in backends.items()
    }
    one, many = inputs[:1], inputs[:batch]
    latency_1 = interleaved_medians(
        {v: (lambda b=b: b.predict(one)) for v, b in backends.items()}, rounds, calls
    )
    latency_n = interleaved_medians(
        {v: (lambda b=b: b.predict(many)) for v, b in backends.items()}, rounds, 2
    )
    rows = []
    for variant in present:
        model, fmt = variant_parts(variant)
        path = variant_path(variant, models_dir)
        keras_variant = "keras" if model == "cnn" else model
        rows.append(
            {
                "variant": variant,
                "model": model,
                "format": fmt,
                "parameters": artifacts.get(artifact_name(model, "keras"), {}).get("parameters"),
                "file_bytes": path.stat().st_size,
                "latency_b1_ms": latency_1[variant],
                f"latency_b{batch}_ms_per_image": latency_n[variant] / len(many),
                "holdout_accuracy": accuracy(logits[variant], holdout.labels),
                "holdout_log_loss": log_loss(logits[variant], holdout.labels),
                "agreement_with_float": agreement(logits[variant], logits[keras_variant])
                if keras_variant in logits
                else None,
                "holdout_images": len(holdout.labels),
            }
        )
    return rows


RECOGNIZER_BATCH = 8


def recognizer_tensors(cards: list[CardCrops]) -> tuple[list[Any], list[Any]]:
    """EasyOCR's network inputs: one tensor per crop (its CPU path), and batches of 8 crops of similar width.

    Batches are cut from the crops sorted by width, as a server would, so padding wastes little.
    """
    from easyocr.recognition import AlignCollate
    from easyocr.utils import get_image_list

    crops = []  # (normalized width, gray crop): EasyOCR's resized line images
    for card in cards:
        for box in card.boxes:
            image_list, max_width = get_image_list([box], [], card.gray, model_height=64)
            crops.append((int(max_width), image_list[0][1]))
    singles = [_collate(AlignCollate, [crop], width) for width, crop in crops]
    ordered = sorted(crops, key=lambda item: item[0])
    groups = [ordered[i : i + RECOGNIZER_BATCH] for i in range(0, len(ordered), RECOGNIZER_BATCH)]
    batches = [_collate(AlignCollate, [c for _, c in group], group[-1][0]) for group in groups]
    return singles, batches


def _collate(align_collate: Any, crops: list[np.ndarray], width: int) -> Any:
    from PIL import Image

    images = [Image.fromarray(crop, "L") for crop in crops]
    return align_collate(imgH=64, imgW=width, keep_ratio_with_pad=True)(images)


def recognizers(models_dir: Path) -> tuple[Any, dict[str, Any], dict[str, int]]:
    """(reader, {recognizer: network}, {recognizer: bytes}), named as the EasyOCR stage's `recognizer`:
    "torch" (EasyOCR's CPU default, torch dynamic int8), "torch-fp32", and the ONNX files present."""
    import io

    import torch

    from raypipe.tasks.idcard.stages.easyocr_onnx import OnnxRecognizer
    from raypipe.tasks.idcard.stages.ocr_easyocr import packaged_model_dir

    reader = packaged_reader(quantize=False)
    quantized = packaged_reader(quantize=True).recognizer
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)
    # EasyOCR leaves its torch model in training mode and calls eval() per recognize(): timing it in
    # training mode would be slower and would also move the BatchNorm statistics.
    networks = {"torch": quantized.eval(), "torch-fp32": reader.recognizer.eval()}
    sizes = {
        "torch": len(buffer.getvalue()),
        "torch-fp32": (packaged_model_dir() / RECOGNIZER_WEIGHTS).stat().st_size,
    }
    for variant, name in RECOGNIZER_FILES.items():
        if (models_dir / name).is_file():
            networks[variant] = OnnxRecognizer(models_dir / name, threads=1)
            sizes[variant] = (models_dir / name).stat().st_size
    return reader, networks, sizes


def texts_with(reader: Any, network: Any, cards: list[CardCrops]) -> list[str]:
    original = reader.recognizer
    reader.recognizer = network
    try:
        return read_crops(reader, cards)
    finally:
        reader.recognizer = original


def recognizer_rows(
    models_dir: Path, cards: int, rounds: int, words_per_card: int | None = None
) -> list[dict[str, Any]]:
    """One row per EasyOCR recognizer: size, ms per crop alone and in batches, same text as torch fp32.

    `words_per_card` keeps only each card's first words (a quick run's shortcut)."""
    import torch

    torch.set_num_threads(1)
    crops = [
        CardCrops(c.gray, c.boxes[:words_per_card], c.words[:words_per_card])
        for c in card_crops(cards, seed=1)
    ]
    reader, networks, sizes = recognizers(models_dir)
    singles, batches = recognizer_tensors(crops)
    n_crops = len(singles)
    with torch.no_grad():
        alone = interleaved_medians(
            {v: (lambda n=n: [n(t, None) for t in singles]) for v, n in networks.items()}, rounds, 1
        )
        batched = interleaved_medians(
            {v: (lambda n=n: [n(t, None) for t in batches]) for v, n in networks.items()}, rounds, 1
        )
    texts = {variant: texts_with(reader, network, crops) for variant, network in networks.items()}
    return [
        {
            "recognizer": variant,
            "file_bytes": sizes[variant],
            "ms_per_crop_b1": alone[variant] / n_crops,
            f"ms_per_crop_b{RECOGNIZER_BATCH}": batched[variant] / n_crops,
            "same_text_as_torch_fp32": float(
                np.mean([a == b for a, b in zip(texts[variant], texts["torch-fp32"], strict=True)])
            ),
            "crops": n_crops,
        }
        for variant in networks
    ]
