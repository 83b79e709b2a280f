"""The digits task: scikit-learn's 8x8 handwritten digits read through preprocess -> classify."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from raypipe.spec.task import FieldView, ItemView, Metric, Profile, SliceAttribute, Task
from raypipe.tasks.digits.features import FEATURES, image_features
from raypipe.tasks.digits.profiles import PROFILE_DESCRIPTIONS
from raypipe.tasks.digits.scoring import METRICS, OUTPUTS, score

STAGES = "raypipe.tasks.digits.stages"


class DigitsTask(Task):
    """Handwritten digits that ship with scikit-learn: no download, microseconds per stage call.

    Small and fast on purpose: the engine's tests and benchmarks evaluate it instead of paying OCR
    prices. Sources: "sklearn:digits" (the held-out third of load_digits, as scanned) or a Parquet
    file written by `generate`.
    """

    name: ClassVar[str] = "digits"
    version: ClassVar[str] = "2"  # 2: the upright feature (a reference written by version 1 lacks it)
    description: ClassVar[str] = "scikit-learn's 8x8 handwritten digits: preprocess, then classify"
    truth_fields: ClassVar[tuple[str, ...]] = ("label",)
    slice_attributes: ClassVar[tuple[SliceAttribute, ...]] = (
        SliceAttribute(
            "profile", description="the generator's distribution profile ('clean' for sklearn:digits)"
        ),
        SliceAttribute("digit", description="the true digit"),
        SliceAttribute(
            "rotation", "continuous", bins=(-10.0, 10.0), description="turn, degrees counter-clockwise"
        ),
        SliceAttribute(
            "noise", "continuous", zero_bin=True, description="gaussian noise sigma (0-255 scale)"
        ),
        SliceAttribute("ink", "continuous", description="mean intensity of the stored image, 0-1"),
    )
    metrics: ClassVar[tuple[Metric, ...]] = METRICS
    outputs: ClassVar[tuple[str, ...]] = OUTPUTS
    features: ClassVar[dict[str, str]] = FEATURES
    packages: ClassVar[tuple[str, ...]] = ("scikit-learn", "onnxruntime")
    stages: ClassVar[dict[str, dict[str, str]]] = {
        "preprocess": {
            "none": f"{STAGES}:NoPreprocess",
            "blur": f"{STAGES}:GaussianBlur",
            "threshold": f"{STAGES}:Threshold",
            "deskew": f"{STAGES}:Deskew",
        },
        "classify": {
            "linear": f"{STAGES}:LinearClassify",
            "mlp": f"{STAGES}:MlpClassify",
            "onnx": f"{STAGES}:OnnxClassify",
            "onnx-int8": f"{STAGES}:OnnxInt8Classify",
        },
    }
    profiles: ClassVar[tuple[Profile, ...]] = tuple(Profile(n, d) for n, d in PROFILE_DESCRIPTIONS.items())

    def load(self, source: str, limit: int | None = None) -> pa.Table:
        from raypipe.tasks.digits.data import load_table

        return load_table(source, limit)

    def generate(self, profile: str, n: int, seed: int, **options: Any) -> pa.Table:
        from raypipe.errors import DatasetError
        from raypipe.tasks.digits.data import generate_table

        if options:
            raise DatasetError(f"the digits generator takes no options, got {', '.join(sorted(options))}")
        return generate_table(profile, n, seed)

    def inputs(self, table: pa.Table) -> pa.ChunkedArray:
        return table.column("image")

    def decode(self, data: bytes) -> np.ndarray:
        from raypipe.tasks.digits.data import decode_png

        return decode_png(data)

    def score(self, output: Any, truth: Mapping[str, Any]) -> dict[str, Any]:
        return score(output, truth)

    def default_objective(self, has_truth: bool) -> str:
        return "accuracy" if has_truth else "confidence"

    def check_stages(self, kinds: list[str]) -> list[str]:
        if kinds and kinds[-1] != "classify":
            last = kinds[-1]
            return [f"the digits scorer reads a predicted label: the last stage must be classify, not {last}"]
        return []

    def item_features(self, decoded: Any) -> dict[str, float | str]:
        return dict(image_features(decoded))

    def view_input(self, data: bytes, row: Mapping[str, Any]) -> ItemView:
        """The 8x8 image as stored, scaled up without smoothing."""
        return ItemView(image=self.decode(data), pixelated=True)

    def view_fields(self, prediction: str | None, truth: Mapping[str, Any]) -> list[FieldView]:
        label = truth.get("truth_label")
        return [FieldView("digit", prediction, None if label is None else str(label))]
