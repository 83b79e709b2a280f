"""The raypipe run: originals and variants as choices of their stages, summarised per choice, and whether
any int8 variant is faster end to end than its float file in the same run, item by item.

Latencies are raypipe's service times (each call's CPU time scaled by the run's calibration), so choices
run side by side in one execution compare on equal terms; `busy_*` would include queueing under load.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl

from optimization.paired import two_sided_sign_test
from optimization.stages import easyocr_choice
from raypipe.spec.schema import PipelineSpec
from raypipe.tasks.idcard.stages.easyocr_onnx import RECOGNIZER_FILES
from raypipe.tasks.idcard.stages.orient_cnn import VARIANTS, variant_parts, variant_path

RECOGNIZERS = ("torch", "torch-fp32", "onnx", "onnx-int8")
REFERENCE_ORIENT = "cnn-keras"
QUANTIZED_FORMATS = ("tflite-dynamic", "tflite-int8", "onnx-int8", "onnx-int8-static")
# int8 OCR choice -> its float twin on the same runtime.
OCR_FLOAT = {"easyocr-torch": "easyocr-torch-fp32", "easyocr-onnx-int8": "easyocr-onnx"}
SIGNIFICANT = 0.05


def orient_choices(models_dir: Path, variants: tuple[str, ...] | None, osd: bool) -> list[Any]:
    """No orientation, Tesseract's OSD when asked, and the CNN `variants` (None: all) with a file."""
    orient: list[Any] = ["none", *([{"name": "osd", "params": {"min_confidence": 1.0}}] if osd else [])]
    orient += [
        {"name": "cnn", "label": f"cnn-{v}", "params": {"variant": v, "model_dir": str(models_dir)}}
        for v in (VARIANTS if variants is None else variants)
        if variant_path(v, models_dir).is_file()
    ]
    return orient


def pipeline_spec(
    models_dir: Path, dataset: Path, easyocr: bool, variants: tuple[str, ...] | None = None
) -> PipelineSpec:
    """Orientation choices (`variants`; None: every CNN variant and OSD) with Tesseract; the EasyOCR
    recognizers (when asked) only after the Keras CNN."""
    from raypipe.spec.validation import parse_spec

    has_tesseract = shutil.which("tesseract") is not None
    orient = orient_choices(models_dir, variants, has_tesseract and variants is None)
    ocr: list[Any] = (
        [{"name": "tesseract", "params": {"lang": "chi_sim+eng", "psm": 11}}] if has_tesseract else []
    )
    present = [
        r for r in RECOGNIZERS if r not in RECOGNIZER_FILES or (models_dir / RECOGNIZER_FILES[r]).is_file()
    ]
    easy = [easyocr_choice(r, str(models_dir)) for r in present] if easyocr or not ocr else []
    labels = [c if isinstance(c, str) else c.get("label", c["name"]) for c in orient]
    others = [label for label in labels if label != REFERENCE_ORIENT]
    exclude = [{"orient": others, "ocr": [c["label"] for c in easy]}] if easy and ocr and others else []
    stages = {"orient": orient, "enhance": ["none"], "channel": ["original"], "ocr": ocr + easy}
    raw = {
        "name": "optimization-benchmark",
        "description": "orientation CNN variants and EasyOCR recognizers beside the originals",
        "task": "idcard",
        "stages": [
            *({"name": name, "choices": choices} for name, choices in stages.items()),
            {"name": "extract", "choices": ["layout"]},
        ],
        "exclude": exclude,
        "dataset": {"source": str(dataset)},
        "sla": {"p95_latency_ms": 5000, "min": {"key_fields_exact": 0.5}},
    }
    return parse_spec(raw)


def run_pipeline(spec: PipelineSpec, run_dir: Path) -> Path:
    """Evaluate `spec` into `run_dir` (replaced), with latency calibration; returns the run directory."""
    from raypipe.engine.rundir import Request
    from raypipe.evaluate.driver import evaluate

    if run_dir.exists():
        shutil.rmtree(run_dir)
    evaluate(Request(spec=spec, out=str(run_dir), cache_dir=None, calibrate=True))
    return run_dir


def _summary(items: pl.DataFrame, configs: pl.DataFrame, by: str, stage: str) -> pl.DataFrame:
    """Per choice of `by`: accuracy with its interval, and the stage's and the total's service times."""
    latency = pl.col(f"latency_{stage}_ms")
    per_choice = items.group_by(by).agg(
        pl.len().alias("items"),
        pl.col("error").is_not_null().sum().alias("errors"),
        pl.col("exact_id_number").cast(pl.Float64).mean().alias("exact_id_number"),
        pl.col("exact_id_number")
        .cast(pl.Float64)
        .filter(pl.col("rotation") != 0)
        .mean()
        .alias("exact_id_on_turned"),
        latency.median().alias(f"{stage}_p50_ms"),
        latency.quantile(0.95, "linear").alias(f"{stage}_p95_ms"),
    )
    totals = configs.select(
        by,
        "key_fields_exact",
        "key_fields_exact_ci_low",
        "key_fields_exact_ci_high",
        pl.col("latency_p50_ms").alias("total_p50_ms"),
        pl.col("latency_p95_ms").alias("total_p95_ms"),
    )
    columns = [
        by,
        "items",
        "errors",
        "key_fields_exact",
        "key_fields_exact_ci_low",
        "key_fields_exact_ci_high",
    ]
    columns += ["exact_id_number", "exact_id_on_turned", f"{stage}_p50_ms", f"{stage}_p95_ms"]
    columns += ["total_p50_ms", "total_p95_ms"]
    return per_choice.join(totals, on=by).select(columns).sort(f"{stage}_p50_ms")


def reference_ocr(items: pl.DataFrame) -> str:
    return "tesseract" if "tesseract" in items["ocr"].unique().to_list() else "easyocr-torch"


def pipeline_tables(run_dir: Path) -> dict[str, pl.DataFrame]:
    """Per orientation choice (OCR fixed), per OCR choice (after the Keras CNN), and int8 against float."""
    items = pl.read_parquet(run_dir / "items.parquet")
    configs = pl.read_parquet(run_dir / "configs.parquet")
    ocr_ref = reference_ocr(items)
    orient = _summary(
        items.filter(pl.col("ocr") == ocr_ref), configs.filter(pl.col("ocr") == ocr_ref), "orient", "orient"
    )
    after = REFERENCE_ORIENT if REFERENCE_ORIENT in items["orient"].unique().to_list() else "none"
    at = pl.col("orient") == after
    ocr = _summary(items.filter(at), configs.filter(at), "ocr", "ocr")
    return {
        "pipeline_orient": orient.with_columns(pl.lit(ocr_ref).alias("ocr")),
        "pipeline_ocr": ocr.with_columns(pl.lit(after).alias("orient")),
        "int8_end_to_end": int8_end_to_end(items, ocr_ref, after),
    }


def float_twin(orient_label: str) -> str | None:
    """The same-runtime float choice of a quantized CNN choice (cnn-tflite-int8 -> cnn-tflite-float)."""
    variant = orient_label.removeprefix("cnn-")
    if variant not in VARIANTS or variant_parts(variant)[1] not in QUANTIZED_FORMATS:
        return None
    model, fmt = variant_parts(variant)
    prefix = "" if model == "cnn" else f"{model}-"
    return f"cnn-{prefix}{'tflite-float' if fmt.startswith('tflite') else 'onnx'}"


def paired_latency(
    items: pl.DataFrame, stage: str, fixed: dict[str, str], variant: str, reference: str
) -> dict:
    """The variant's and the reference's stage and total service times on the same items, side by side."""
    chosen = items.filter(*(pl.col(k) == v for k, v in fixed.items()))
    pick = ["item_id", f"latency_{stage}_ms", "latency_total_ms"]
    a = chosen.filter(pl.col(stage) == variant).select(pick)
    b = chosen.filter(pl.col(stage) == reference).select(pick)
    both = a.join(b, on="item_id", suffix="_ref")
    faster = int((both[f"latency_{stage}_ms"] < both[f"latency_{stage}_ms_ref"]).sum())
    slower = int((both[f"latency_{stage}_ms"] > both[f"latency_{stage}_ms_ref"]).sum())
    stage_p50, ref_p50 = both[f"latency_{stage}_ms"].median(), both[f"latency_{stage}_ms_ref"].median()
    p_value = two_sided_sign_test(faster, slower)
    faster_shown = p_value < SIGNIFICANT and faster > slower
    return {
        "stage": stage,
        "variant": variant,
        "float": reference,
        "items": both.height,
        "stage_p50_ms": stage_p50,
        "float_stage_p50_ms": ref_p50,
        "speedup": float(ref_p50 / stage_p50) if stage_p50 else None,
        "total_p50_ms": both["latency_total_ms"].median(),
        "float_total_p50_ms": both["latency_total_ms_ref"].median(),
        "total_p95_ms": both["latency_total_ms"].quantile(0.95, "linear"),
        "float_total_p95_ms": both["latency_total_ms_ref"].quantile(0.95, "linear"),
        "items_faster": faster,
        "items_slower": slower,
        "p_value": p_value,
        "int8_faster": "yes"
        if faster_shown
        else ("slower" if p_value < SIGNIFICANT else "no difference shown"),
    }


def int8_end_to_end(items: pl.DataFrame, ocr_ref: str, orient_ref: str) -> pl.DataFrame:
    """Every quantized orient and OCR choice against its same-runtime float choice, in this run."""
    orient_labels = set(items["orient"].unique().to_list())
    ocr_labels = set(items["ocr"].unique().to_list())
    rows = [
        paired_latency(items, "orient", {"ocr": ocr_ref}, label, float_twin(label))
        for label in sorted(orient_labels)
        if float_twin(label) in orient_labels
    ]
    rows += [
        paired_latency(items, "ocr", {"orient": orient_ref}, label, reference)
        for label, reference in OCR_FLOAT.items()
        if label in ocr_labels and reference in ocr_labels
    ]
    return (
        pl.DataFrame(rows)
        if rows
        else pl.DataFrame({"stage": [], "variant": []}, schema={"stage": pl.Utf8, "variant": pl.Utf8})
    )


def any_int8_faster(table: pl.DataFrame) -> list[str]:
    """The int8 choices shown faster than their float twins, item by item (sign test at 5 %)."""
    if table.is_empty():
        return []
    return table.filter(pl.col("int8_faster") == "yes")["variant"].to_list()
