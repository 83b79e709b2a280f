"""The report's tables as shown: speeds against the float file, changes with intervals, targets met or not."""

from __future__ import annotations

import polars as pl

from raypipe.tasks.idcard.stages.orient_cnn import variant_parts

QUANTIZED = ("tflite-dynamic", "tflite-int8", "onnx-int8", "onnx-int8-static")
# A speed ratio below this counts as slower, not as noise.
SLOWER = 0.95


def _prefix(variant: str) -> str:
    model = variant_parts(variant)[0]
    return "" if model == "cnn" else f"{model}-"


def keras_of(variant: str) -> str:
    """The Keras file a variant was made from: "keras", "student" or "student-hard"."""
    return _prefix(variant).rstrip("-") or "keras"


def float_reference(variant: str) -> str | None:
    """The float file a variant's speed is compared with: same model, same runtime; None for Keras files."""
    fmt = variant_parts(variant)[1]
    if fmt.startswith("tflite"):
        return f"{_prefix(variant)}tflite-float"
    return f"{_prefix(variant)}onnx" if fmt.startswith("onnx") else None


def speed_ratio(variant: str, latency: dict[str, float]) -> str:
    ref = float_reference(variant)
    if ref is None or ref not in latency:
        return "–"
    if ref == variant:
        return "1 (ref.)"
    ratio = latency[ref] / latency[variant]
    return f"{ratio:.2f}x" + (" **slower**" if ratio < SLOWER else "")


def orient_display(orient: pl.DataFrame) -> pl.DataFrame:
    """The orientation timing table as shown: sizes in KiB, speed against the float file."""
    batch_column = next(c for c in orient.columns if c.endswith("_ms_per_image"))
    batch = int(batch_column.split("_")[1][1:])
    variants = orient["variant"].to_list()
    b1 = dict(zip(variants, orient["latency_b1_ms"], strict=True))
    bn = dict(zip(variants, orient[batch_column], strict=True))
    size = dict(zip(variants, orient["file_bytes"], strict=True))
    return pl.DataFrame(
        {
            "variant": variants,
            "params": orient["parameters"],
            "KiB": [size[v] / 1024 for v in variants],
            "x smaller than Keras": [
                size[keras_of(v)] / size[v] if keras_of(v) in size else None for v in variants
            ],
            "ms b1": orient["latency_b1_ms"],
            "speed b1 vs float": [speed_ratio(v, b1) for v in variants],
            f"ms/img b{batch}": orient[batch_column],
            f"speed b{batch} vs float": [speed_ratio(v, bn) for v in variants],
            "accuracy": orient["holdout_accuracy"],
            "agrees with Keras": orient["agreement_with_float"],
        }
    )


def slower_notes(shown: pl.DataFrame) -> list[str]:
    """One line per quantized variant that ran slower than its float file, at batch 1 or batched."""
    speed_columns = [c for c in shown.columns if c.startswith("speed")]
    notes = []
    for row in shown.iter_rows(named=True):
        slower = [f"{row[c].split()[0]} {c.split()[1]}" for c in speed_columns if "slower" in str(row[c])]
        if slower and variant_parts(row["variant"])[1] in QUANTIZED:
            reference = float_reference(row["variant"])
            notes.append(
                f"- `{row['variant']}` ran slower than `{reference}`: {', '.join(slower)} the float speed."
            )
    return notes


def change_text(row: dict) -> str:
    """A change in points with its 95 % interval, e.g. "-1.25 [-2.50, -0.25]"."""
    return f"{row['points_change']:+.2f} [{row['points_low']:+.2f}, {row['points_high']:+.2f}]"


def loss_display(frame: pl.DataFrame, name: str, reference: str) -> pl.DataFrame:
    """Variant and reference scores, the paired change in points with its interval, the sign test."""
    if frame.is_empty():
        return pl.DataFrame({name: []}, schema={name: pl.Utf8})
    return frame.select(
        pl.col("variant").alias(name),
        pl.col("reference").alias(reference),
        pl.col("variant_score").alias("score"),
        pl.col("reference_score").alias(f"{reference} score"),
        pl.Series("change, points [95 % CI]", [change_text(r) for r in frame.iter_rows(named=True)]),
        pl.col("points_worse").alias("worse"),
        pl.col("points_better").alias("better"),
        pl.col("points_p_value").alias("p"),
    )


def pipeline_display(frame: pl.DataFrame) -> pl.DataFrame:
    """A pipeline summary with key_fields_exact and its Wilson interval in one column."""
    if "key_fields_exact_ci_low" not in frame.columns:
        return frame
    rows = frame.select("key_fields_exact", "key_fields_exact_ci_low", "key_fields_exact_ci_high").rows()
    texts = [f"{value:.3f} [{low:.2f}, {high:.2f}]" for value, low, high in rows]
    shown = frame.drop("key_fields_exact_ci_low", "key_fields_exact_ci_high")
    return shown.with_columns(pl.Series("key_fields_exact", texts))


def orient_loss_display(tables: dict[str, pl.DataFrame], name: str = "orient_losses") -> pl.DataFrame:
    """Orientation losses with each variant's accuracy on photographed cards beside them."""
    shown = loss_display(tables[name], "variant", "against")
    photo = tables["orient_accuracy"].select(
        pl.col("variant"), pl.col("photo_accuracy").alias("photo accuracy")
    )
    if shown.is_empty():
        return shown
    return shown.join(photo, on="variant", how="left")


def id_loss_display(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    frame = tables["id_losses"]
    shown = loss_display(frame, "recognizer", "against")
    return shown.insert_column(2, frame["metric"]) if not frame.is_empty() else shown


def _row(frame: pl.DataFrame | None, **match: str) -> dict | None:
    if frame is None or frame.is_empty():
        return None
    rows = frame.filter(*(pl.col(k) == v for k, v in match.items())).to_dicts()
    return rows[0] if rows else None


def verdict(row: dict, allowed_points: float) -> str:
    """Met when the whole interval of the change is above -allowed, missed when wholly below."""
    if row["points_low"] >= -allowed_points:
        return "met"
    if row["points_high"] < -allowed_points:
        return "**not met**"
    return "undecided (the interval spans the bound)"


Target = tuple[str, str, str]


def size_target(tables: dict[str, pl.DataFrame]) -> Target | None:
    orient = tables["orient_variants"]
    keras, int8 = _row(orient, variant="keras"), _row(orient, variant="tflite-int8")
    loss = _row(tables["orient_losses"], variant="tflite-int8", reference="keras")
    if not (keras and int8 and loss):
        return None
    ratio = keras["file_bytes"] / int8["file_bytes"]
    size_ok = "met" if ratio >= 3 else "**not met**"
    return (
        "int8 TF Lite >= 3x smaller than Keras, <= 1 point orientation accuracy lost (holdout turns)",
        f"{ratio:.2f}x smaller ({size_ok}); change {change_text(loss)} points",
        verdict(loss, 1.0) if ratio >= 3 else "**not met**",
    )


def distillation_target(tables: dict[str, pl.DataFrame]) -> Target | None:
    loss = _row(tables["distillation_losses"], variant="student", reference="keras")
    if not loss:
        return None
    return (
        "distilled student within 2 points of its teacher (holdout turns)",
        f"change {change_text(loss)} points",
        verdict(loss, 2.0),
    )


def recognizer_target(tables: dict[str, pl.DataFrame]) -> Target | None:
    timing = tables.get("easyocr_recognizers")
    fp32, quant = _row(timing, recognizer="torch-fp32"), _row(timing, recognizer="onnx-int8")
    loss = _row(tables.get("id_losses"), variant="onnx-int8", reference="torch-fp32", metric="exact")
    if not (fp32 and quant and loss):
        return None
    speedup = fp32["ms_per_crop_b1"] / quant["ms_per_crop_b1"]
    accuracy = verdict(loss, 2.0)
    return (
        "int8 ONNX recognizer >= 1.5x faster than torch fp32 per crop, exact ID numbers within 2 points",
        f"{speedup:.2f}x faster per crop; change {change_text(loss)} points",
        accuracy if speedup >= 1.5 else "**not met** (speed)",
    )


def targets(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The issue's three targets, each with what was measured and whether it was met."""
    rows = [size_target(tables), distillation_target(tables), recognizer_target(tables)]
    return pl.DataFrame([r for r in rows if r], schema=["target", "measured", "verdict"], orient="row")


def int8_answer(tables: dict[str, pl.DataFrame]) -> list[str]:
    """One line: which int8 choices were faster than their float twins item by item, if any."""
    table = tables["int8_end_to_end"]
    if table.is_empty():
        return ["- No int8 choice ran beside its float twin in this run."]
    faster = table.filter(pl.col("int8_faster") == "yes")["variant"].to_list()
    slower = table.filter(pl.col("int8_faster") == "slower")["variant"].to_list()
    line = (
        f"- Faster than its float twin, item by item (sign test, 5 %): {', '.join(faster)}."
        if faster
        else "- **No int8 choice was faster than its float twin** in this run (sign test over items, 5 %)."
    )
    notes = [line]
    if slower:
        notes.append(f"- Slower than its float twin: {', '.join(slower)}.")
    notes.append(
        "- Compared with the same-runtime float file (LiteRT float, ONNX fp32, torch fp32) on the same items;"
        " `speedup` is the float stage's median over the int8 one's."
    )
    return notes
