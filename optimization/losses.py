"""What each compressed variant loses against its float model, item by item, where the float model errs.

Orientation variants are scored on the holdout cards in four quarter turns (`eval_sets.orient_set`),
each against the Keras model it was made from; the students also against their teacher. EasyOCR's
recognizers read the ID-number crops (`eval_sets.id_crops`) with the detector left out, so only the
recognition network differs, each against torch fp32: exact 18-character match and digit accuracy
(1 - edit distance / 18, at least 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optimization.eval_sets import IdCrop, OrientSet
from optimization.paired import paired_change
from raypipe.tasks.idcard.scoring import levenshtein
from raypipe.tasks.idcard.stages.orient_cnn import (
    VARIANTS,
    as_batch,
    load_backend,
    variant_parts,
    variant_path,
)

ID_LENGTH = 18
RECOGNIZER_REFERENCE = "torch-fp32"
# Each quantized recognizer against the float one, and ONNX int8 against ONNX fp32 (same runtime).
RECOGNIZER_PAIRS = (("torch", "torch-fp32"), ("onnx", "torch-fp32"), ("onnx-int8", "torch-fp32"))
RECOGNIZER_PAIRS += (("onnx-int8", "onnx"),)


def float_variant(variant: str) -> str | None:
    """The Keras variant `variant` was converted from ("keras", "student", "student-hard"); None for those."""
    model, fmt = variant_parts(variant)
    if fmt == "keras":
        return None
    return "keras" if model == "cnn" else model


def compare(
    scores: dict[str, np.ndarray], pairs: list[tuple[str, str]], groups: np.ndarray | None, metric: str
) -> list[dict[str, Any]]:
    """One row per (variant, reference) pair present in `scores`: both means and the paired change."""
    rows = []
    for variant, reference in pairs:
        if variant not in scores or reference not in scores:
            continue
        change = paired_change(scores[variant], scores[reference], groups)
        rows.append(
            {
                "variant": variant,
                "reference": reference,
                "metric": metric,
                "variant_score": float(np.mean(scores[variant])),
                "reference_score": float(np.mean(scores[reference])),
                **change.as_dict("points", scale=100.0),
            }
        )
    return rows


def orient_correct(models_dir: Path, data: OrientSet) -> dict[str, np.ndarray]:
    """For every variant present in `models_dir`: 1.0 where it names the image's quarter turn, else 0.0."""
    correct = {}
    for variant in VARIANTS:
        path = variant_path(variant, models_dir)
        if not path.is_file():
            continue
        backend = load_backend(path, threads=1)
        images = as_batch(data.images[backend.input_size])
        logits = np.concatenate([backend.predict(images[i : i + 256]) for i in range(0, len(images), 256)])
        correct[variant] = (np.argmax(logits, axis=1) == data.labels).astype(float)
    return correct


def orient_loss_tables(models_dir: Path, data: OrientSet) -> dict[str, list[dict[str, Any]]]:
    """Accuracy of every variant on the holdout turns, its change against its float model, and the
    students' change against their teacher; paired by image, resampled by card."""
    correct = orient_correct(models_dir, data)
    profiles = list(dict.fromkeys(data.profiles.tolist()))
    accuracy = [
        {
            "variant": variant,
            "images": len(values),
            "accuracy": float(values.mean()),
            **{f"{p}_accuracy": float(values[data.profiles == p].mean()) for p in profiles},
        }
        for variant, values in correct.items()
    ]
    float_pairs = [(v, float_variant(v)) for v in correct if float_variant(v)]
    teacher_pairs = [("student", "keras"), ("student-hard", "keras"), ("student-tflite-int8", "keras")]
    return {
        "orient_accuracy": accuracy,
        "orient_losses": compare(correct, float_pairs, data.groups, "accuracy"),
        "distillation_losses": compare(correct, teacher_pairs, data.groups, "accuracy"),
    }


def read_id(reader: Any, crop: IdCrop) -> str:
    """The text EasyOCR's recognition reads in the crop's ID-number box, without whitespace."""
    lines = reader.recognize(crop.gray, horizontal_list=[], free_list=[crop.quad], reformat=False)
    return "".join(str(text) for _, text, _ in lines).replace(" ", "")


def id_scores(text: str, truth: str) -> tuple[float, float]:
    """(exact, digit accuracy) of one ID-number reading."""
    return float(text == truth), max(0.0, 1.0 - levenshtein(truth, text) / ID_LENGTH)


def recognizer_scores(models_dir: Path, crops: list[IdCrop]) -> dict[str, dict[str, np.ndarray]]:
    """{"exact": ..., "digits": ...} per crop for each recognizer, swapped into one Reader in turn."""
    import torch

    from optimization.measure import recognizers

    torch.set_num_threads(1)
    reader, networks, _ = recognizers(models_dir)
    original = reader.recognizer
    scores = {}
    try:
        for name, network in networks.items():
            reader.recognizer = network
            pairs = np.array([id_scores(read_id(reader, crop), crop.truth) for crop in crops])
            scores[name] = {"exact": pairs[:, 0], "digits": pairs[:, 1]}
    finally:
        reader.recognizer = original
    return scores


def id_digit_tables(models_dir: Path, crops: list[IdCrop]) -> dict[str, list[dict[str, Any]]]:
    """Each recognizer's ID-number scores by crop source, and its paired change against torch fp32."""
    scores = recognizer_scores(models_dir, crops)
    sources = np.array([crop.source for crop in crops])
    summary = [
        {
            "recognizer": name,
            "crops": len(crops),
            **{metric: float(values[metric].mean()) for metric in ("exact", "digits")},
        }
        for name, values in scores.items()
    ]
    by_source = [
        {
            "source": source,
            "crops": int(np.sum(sources == source)),
            **{
                f"{name} exact": float(values["exact"][sources == source].mean())
                for name, values in scores.items()
            },
        }
        for source in dict.fromkeys(sources.tolist())
    ]
    losses = []
    for metric in ("exact", "digits"):
        losses += compare({k: v[metric] for k, v in scores.items()}, list(RECOGNIZER_PAIRS), None, metric)
    return {"id_recognizers": summary, "id_by_source": by_source, "id_losses": losses}
