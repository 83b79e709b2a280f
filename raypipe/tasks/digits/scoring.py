"""Per-item scores of a digit prediction against its truth, and the task's metric catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raypipe.spec.task import Metric

METRICS: tuple[Metric, ...] = (
    Metric(
        "accuracy",
        "the predicted digit equals the true one (the default objective with truth)",
        headline=True,
    ),
    Metric(
        "confidence",
        "the probability the classifier gave its predicted digit, label-free (the default objective "
        "without truth; a failed item counts 0)",
        needs_truth=False,
        interval="normal",
        headline=True,
    ),
    Metric("top2", "the true digit is among the classifier's two most probable"),
)
OUTPUTS: tuple[str, ...] = ("confidence",)


def truth_label(truth: Mapping[str, Any]) -> str | None:
    """The true digit as a string ("label" or "truth_label"), None where the item has no truth."""
    value = truth.get("label", truth.get("truth_label"))
    return None if value is None or str(value).strip() == "" else str(value).strip()


def score(output: Any, truth: Mapping[str, Any]) -> dict[str, Any]:
    """accuracy, confidence and top2 for one item, plus `prediction` (the digit as a string).

    `output` is a `DigitPrediction` (anything with `label` and `probabilities`), or None when the pipeline
    failed on the item: then accuracy and top2 are False and confidence 0.0. Where the truth is unknown,
    accuracy and top2 are None.
    """
    if output is not None and not (hasattr(output, "label") and hasattr(output, "probabilities")):
        raise TypeError(
            f"the digits task scores a classify stage's DigitPrediction, got {type(output).__name__}: "
            "end the pipeline with a `classify` stage"
        )
    expected = truth_label(truth)
    if output is None:
        wrong = None if expected is None else False
        return {"accuracy": wrong, "top2": wrong, "confidence": 0.0, "prediction": None}
    probabilities = [float(p) for p in output.probabilities]
    top2 = sorted(range(len(probabilities)), key=lambda d: -probabilities[d])[:2]
    return {
        "accuracy": None if expected is None else str(output.label) == expected,
        "top2": None if expected is None else expected in {str(d) for d in top2},
        "confidence": max(probabilities),
        "prediction": str(output.label),
    }
