"""The ID-card task: Chinese resident ID cards read through orient -> enhance -> channel -> ocr -> extract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from raypipe.errors import DatasetError
from raypipe.spec.task import FieldView, ItemView, Metric, Profile, SliceAttribute, Task
from raypipe.tasks.idcard.features import FEATURES
from raypipe.tasks.idcard.fields import KEY_FIELDS, normalise_line
from raypipe.tasks.idcard.schema import TRUTH_FIELDS
from raypipe.tasks.idcard.scoring import METRICS, OUTPUTS, score

PROFILE_DESCRIPTIONS: dict[str, str] = {
    "clean": "upright, sharp, well lit",
    "rotated": "turned by 90, 180 or 270 degrees",
    "skewed": "turned by 3-10 degrees either way",
    "dark": "brightness 0.3-0.6",
    "blurred": "gaussian blur of radius 1.5-3",
    "noisy": "gaussian noise of sigma 15-35",
    "jpeg": "JPEG quality 10-30",
    "mixed": "30 % clean, the rest spread over the six degradations",
}

STAGES = "raypipe.tasks.idcard.stages"


# Key fields the extractors copy from the OCR text as read (the birth date is rebuilt from its digits).
VERBATIM_FIELDS: tuple[str, ...] = tuple(f for f in KEY_FIELDS if f != "birth_date")


class IdCardTask(Task):
    """Chinese resident ID cards: the public `lansinuote/ocr_id_card` schema, its generator, field scores."""

    name: ClassVar[str] = "idcard"
    version: ClassVar[str] = "2"
    description: ClassVar[str] = (
        "Chinese resident ID cards: orientation, enhancement, channel, OCR, extraction"
    )
    truth_fields: ClassVar[tuple[str, ...]] = (*TRUTH_FIELDS, "text")
    slice_attributes: ClassVar[tuple[SliceAttribute, ...]] = (
        SliceAttribute("profile", description="the generator's distribution profile ('real' for real data)"),
        SliceAttribute("rotation", description="quarter turns, degrees counter-clockwise"),
        SliceAttribute("skew_angle", "continuous", bins=(-2.0, 2.0), description="small turn, degrees"),
        SliceAttribute("blur", "continuous", zero_bin=True, description="gaussian blur radius"),
        SliceAttribute("brightness", "continuous", bins=(0.8,), description="brightness factor"),
        SliceAttribute("noise", "continuous", zero_bin=True, description="noise sigma"),
        SliceAttribute("jpeg_quality", "continuous", zero_bin=True, description="JPEG quality (0: PNG)"),
    )
    metrics: ClassVar[tuple[Metric, ...]] = METRICS
    outputs: ClassVar[tuple[str, ...]] = OUTPUTS
    features: ClassVar[dict[str, str]] = FEATURES
    stages: ClassVar[dict[str, dict[str, str]]] = {
        "orient": {
            "none": f"{STAGES}.orient:NoOrient",
            "hough": f"{STAGES}.orient:HoughDeskew",
            "osd": f"{STAGES}.orient:TesseractOSD",
            "cnn": f"{STAGES}.orient_cnn:OrientCNN",
        },
        "enhance": {
            "none": f"{STAGES}.enhance:NoEnhance",
            "sharpen": f"{STAGES}.enhance:Sharpen",
            "brightness_contrast": f"{STAGES}.enhance:BrightnessContrast",
            "clahe": f"{STAGES}.enhance:Clahe",
            "denoise": f"{STAGES}.enhance:Denoise",
        },
        "channel": {
            "original": f"{STAGES}.channel:Original",
            "gray": f"{STAGES}.channel:Gray",
            "red": f"{STAGES}.channel:Red",
            "green": f"{STAGES}.channel:Green",
            "blue": f"{STAGES}.channel:Blue",
        },
        "ocr": {
            "tesseract": f"{STAGES}.ocr_tesseract:TesseractOCR",
            "rapidocr": f"{STAGES}.ocr_rapid:RapidOCR",
            "easyocr": f"{STAGES}.ocr_easyocr:EasyOCR",
        },
        "extract": {
            "label_value": "raypipe.tasks.idcard.extract:LabelValue",
            "layout": "raypipe.tasks.idcard.extract:Layout",
        },
    }
    packages: ClassVar[tuple[str, ...]] = (
        "opencv-python-headless", "pytesseract", "onnxruntime", "rapidocr-onnxruntime", "easyocr", "torch",
        "tensorflow-cpu",
    )  # fmt: skip
    profiles: ClassVar[tuple[Profile, ...]] = tuple(Profile(n, d) for n, d in PROFILE_DESCRIPTIONS.items())

    def load(self, source: str, limit: int | None = None) -> pa.Table:
        from raypipe.tasks.idcard.loaders import load_dataset

        return load_dataset(source, limit=limit)

    def generate(
        self, profile: str, n: int, seed: int, renderer: str = "standard", **options: Any
    ) -> pa.Table:
        """`renderer="holdout"` draws the second, differently rendered set (other fonts, layouts, labels
        after values, photographed cards, births 1900-2025) that raypipe never tunes on."""
        if options:
            raise DatasetError(f"unknown idcard generator options: {', '.join(options)} (known: renderer)")
        if renderer == "holdout":
            from raypipe.tasks.idcard.holdout import generate_holdout

            return generate_holdout(profile, n, seed)
        if renderer != "standard":
            raise DatasetError(f"unknown idcard renderer {renderer!r}: choose standard or holdout")
        from raypipe.tasks.idcard.generator import generate_dataset

        return generate_dataset(profile, n, seed)

    def inputs(self, table: pa.Table) -> pa.ChunkedArray:
        return pc.struct_field(table.column("image"), "bytes")

    def decode(self, data: bytes) -> Any:
        from raypipe.tasks.idcard.loaders import raise_label_error
        from raypipe.tasks.idcard.stages.imaging import decode_image

        raise_label_error(data)
        return decode_image(data)

    def has_truth(self, table: pa.Table) -> bool:
        key = [f"truth_{f}" for f in KEY_FIELDS if f"truth_{f}" in table.column_names]
        return any(table.column(c).null_count < table.num_rows for c in key)

    def score(self, output: Any, truth: Mapping[str, Any]) -> dict[str, Any]:
        if output is not None and not hasattr(output, "values"):
            # A spec whose last stage is OCR: read its fields with the course's parser.
            from raypipe.tasks.idcard.extract import LabelValue

            output = LabelValue()(output)
        return score(output, truth)

    def default_objective(self, has_truth: bool) -> str:
        return "key_fields_exact" if has_truth else "assertion_score"

    def check_stages(self, kinds: list[str]) -> list[str]:
        if kinds and kinds[-1] not in ("extract", "ocr"):
            return [f"the idcard scorer reads fields: the last stage must be extract or ocr, not {kinds[-1]}"]
        return []

    def unwritable(self, alphabet: str, table: pa.Table) -> dict[str, str]:
        """A key field copied from the OCR text as read (`VERBATIM_FIELDS`) can be exactly right only if the
        engine can write every character of it: where no item's truth can be, its exact_ metric and
        key_fields_exact are 0 on every item."""
        allowed, found = set(alphabet), {}
        for field in VERBATIM_FIELDS:
            name = f"truth_{field}"
            if name not in table.column_names:
                continue
            values = [normalise_line(str(v)) for v in table.column(name).to_pylist() if v and str(v).strip()]
            if not values:
                continue
            missing = [next((c for c in v if not c.isspace() and c not in allowed), None) for v in values]
            if all(c is not None for c in missing):
                example = f"'{missing[0]}' in '{values[0]}'"
                why = f"no item's {field.replace('_', ' ')} can be written with them (e.g. {example})"
                found[f"exact_{field}"] = why
                found.setdefault("key_fields_exact", why)
        return found

    def item_features(self, decoded: Any) -> dict[str, float | str]:
        from raypipe.tasks.idcard.features import card_features

        return card_features(decoded)

    def view_input(self, data: bytes, row: Mapping[str, Any]) -> ItemView:
        from raypipe.tasks.idcard.view import card_view

        return card_view(self.decode(data), row)

    def view_fields(self, prediction: str | None, truth: Mapping[str, Any]) -> list[FieldView]:
        from raypipe.tasks.idcard.view import card_fields

        return card_fields(prediction, truth)
