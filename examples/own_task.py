"""Write your own task: is the digit even? Data, stage kinds, a per-item scorer and a metric catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from raypipe.spec.registry import register_task
from raypipe.spec.stage import Resources, Stage
from raypipe.spec.task import Metric, Profile, SliceAttribute, Task


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * 15).astype(np.uint8), digits.target


class ByInk(Stage):
    """Guesses 'even' when the digit has much ink (0, 6 and 8 are ink-heavy): a weak rule."""

    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=64)

    def __init__(self, threshold: float = 70.0):
        self.threshold = threshold

    def __call__(self, image: np.ndarray) -> bool:  # outputs are cached: numbers, strings, arrays, or
        return bool(image.mean() > self.threshold)  # dataclasses declared with raypipe.engine.codec.plain


class ByClassifier(Stage):
    """Trains a logistic regression on even/odd once per actor (on the first half of the digits)."""

    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=64)

    def __init__(self):
        from sklearn.linear_model import LogisticRegression

        images, labels = _digits()
        half = len(images) // 2
        self.model = LogisticRegression(max_iter=500).fit(
            images[:half].reshape(half, -1), labels[:half] % 2 == 0
        )

    def __call__(self, image: np.ndarray) -> bool:
        return bool(self.model.predict(image.reshape(1, -1))[0])


@register_task("evenodd")  # specs can now say `task: evenodd`; a package can publish it as an entry point
class EvenOdd(Task):
    name: ClassVar[str] = "evenodd"
    description: ClassVar[str] = "Is the handwritten digit even?"
    truth_fields: ClassVar[tuple[str, ...]] = ("even",)
    slice_attributes: ClassVar[tuple[SliceAttribute, ...]] = (SliceAttribute("digit"),)
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("correct", "the guess equals the truth", headline=True),
        Metric("said_even", "the share of items guessed even", needs_truth=False),
    )
    stages: ClassVar[dict[str, dict[str, str]]] = {
        "guess": {"ink": "examples.own_task:ByInk", "classifier": "examples.own_task:ByClassifier"}
    }
    profiles: ClassVar[tuple[Profile, ...]] = (Profile("test", "the second half of scikit-learn's digits"),)

    def generate(self, profile: str, n: int, seed: int, **options: Any) -> pa.Table:
        images, labels = _digits()
        start = len(images) // 2  # never the half ByClassifier trains on
        picks = np.random.default_rng(seed).integers(start, len(images), size=n)
        return pa.table(
            {
                "item_id": [f"evenodd-{seed}-{i}" for i in range(n)],
                "input": [images[p].tobytes() for p in picks],
                "truth_even": [bool(labels[p] % 2 == 0) for p in picks],
                "digit": [int(labels[p]) for p in picks],
            }
        )

    def load(self, source: str, limit: int | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        return table if limit is None else table.slice(0, limit)

    def inputs(self, table: pa.Table) -> pa.ChunkedArray:
        return table.column("input")

    def decode(self, data: bytes) -> np.ndarray:  # in the actors: an encoded input -> the first stage's input
        return np.frombuffer(data, dtype=np.uint8).reshape(8, 8)

    def score(self, output: Any, truth: Mapping[str, Any]) -> dict[str, Any]:
        expected = truth.get("even")
        return {
            "correct": None if expected is None else output is not None and bool(output) == bool(expected),
            "said_even": bool(output),
            "prediction": "" if output is None else ("even" if output else "odd"),
        }

    def default_objective(self, has_truth: bool) -> str:
        return "correct" if has_truth else "said_even"
