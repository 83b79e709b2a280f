"""The benchmark's markdown report: the machine, the command, the targets met or not, and the tables."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import polars as pl

from raypipe.stages.orient_cnn import variant_parts

PACKAGES = ("tensorflow-cpu", "keras", "ai-edge-litert", "tf2onnx", "onnxruntime", "torch", "easyocr", "ray")
TABLES = ("orient_variants", "distillation", "easyocr_recognizers", "pipeline_orient", "pipeline_ocr")
# A speed ratio below this counts as slower, not as noise.
SLOWER = 0.95


@dataclass(frozen=True)
class Context:
    """What a report says about its run; saved beside the tables so `report` can render it again."""

    command: str
    quick: bool
    models_dir: Path
    run_dir: Path
    holdout_images: int
    mixed_items: int
    rotated_items: int
    machine: str = field(default_factory=lambda: machine())
    written: str = field(default_factory=lambda: f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()})
        )

    @staticmethod
    def load(path: Path) -> Context:
        raw = json.loads(path.read_text())
        return Context(**{**raw, "models_dir": Path(raw["models_dir"]), "run_dir": Path(raw["run_dir"])})


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cores = os.cpu_count()
    return f"{cpu}, {cores} cores, {memory:.0f} GiB, {platform.platform()}; load average {load} at the end"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join([f"Python {platform.python_version()}", *found])


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub markdown table; floats to 3 significant decimals, None as a dash."""

    def cell(value: object) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int) and abs(value) >= 10000:
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


QUANTIZED = ("tflite-dynamic", "tflite-int8", "onnx-int8", "onnx-int8-static")


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


def orient_display(orient: pl.DataFrame, batch: int) -> pl.DataFrame:
    """The orientation table as shown: sizes in KiB, speed against the float file, shorter headers."""
    variants = orient["variant"].to_list()
    b1 = dict(zip(variants, orient["latency_b1_ms"], strict=True))
    bn = dict(zip(variants, orient[f"latency_b{batch}_ms_per_image"], strict=True))
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
            f"ms/img b{batch}": orient[f"latency_b{batch}_ms_per_image"],
            f"speed b{batch} vs float": [speed_ratio(v, bn) for v in variants],
            "accuracy": orient["holdout_accuracy"],
            "log loss": orient["holdout_log_loss"],
            "agrees with Keras": orient["agreement_with_float"],
        }
    )


def _row(frame: pl.DataFrame, column: str, value: str) -> dict | None:
    rows = frame.filter(pl.col(column) == value).to_dicts()
    return rows[0] if rows else None


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


Target = tuple[str, str, str]


def size_target(orient: pl.DataFrame) -> Target | None:
    keras, int8 = _row(orient, "variant", "keras"), _row(orient, "variant", "tflite-int8")
    if not (keras and int8):
        return None
    ratio = keras["file_bytes"] / int8["file_bytes"]
    drop = 100 * (keras["holdout_accuracy"] - int8["holdout_accuracy"])
    return (
        "int8 TF Lite >= 3x smaller than Keras, <= 1 point accuracy lost",
        f"{ratio:.2f}x smaller, {drop:+.2f} points lost",
        verdict(ratio >= 3 and drop <= 1),
    )


def distillation_target(orient: pl.DataFrame) -> Target | None:
    keras, student = _row(orient, "variant", "keras"), _row(orient, "variant", "student")
    if not (keras and student):
        return None
    gap = 100 * (keras["holdout_accuracy"] - student["holdout_accuracy"])
    return (
        "distilled student within 2 points of its teacher",
        f"{gap:+.2f} points below the teacher",
        verdict(gap <= 2),
    )


def recognizer_target(recognizers: pl.DataFrame, ocr: pl.DataFrame) -> Target | None:
    fp32, quant = _row(recognizers, "recognizer", "torch-fp32"), _row(recognizers, "recognizer", "onnx-int8")
    e2e_fp32, e2e_quant = _row(ocr, "ocr", "easyocr-torch-fp32"), _row(ocr, "ocr", "easyocr-onnx-int8")
    if not (fp32 and quant and e2e_fp32 and e2e_quant):
        return None
    speedup = fp32["ms_per_crop_b1"] / quant["ms_per_crop_b1"]
    gap = 100 * (e2e_fp32["field_accuracy"] - e2e_quant["field_accuracy"])
    return (
        "int8 ONNX recognizer >= 1.5x faster than torch fp32, field accuracy within 2 points",
        f"{speedup:.2f}x faster per crop, {gap:+.2f} points field accuracy lost end to end",
        verdict(speedup >= 1.5 and abs(gap) <= 2),
    )


def targets(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The issue's three targets, each with what was measured and whether it was met."""
    orient = tables["orient_variants"]
    rows = [
        size_target(orient),
        distillation_target(orient),
        recognizer_target(tables["easyocr_recognizers"], tables["pipeline_ocr"]),
    ]
    return pl.DataFrame([r for r in rows if r], schema=["target", "measured", "verdict"], orient="row")


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


def header(context: Context) -> list[str]:
    kind = "quick" if context.quick else "full"
    return [
        "# Optimization: compressed models inside the ID-card pipeline",
        "",
        f"Written by `{context.command}` ({kind} run), finished {context.written}.",
        "",
        f"- Machine: {context.machine}.",
        f"- Versions: {versions()}.",
        f"- Models: `{context.models_dir}` (manifest.json: hashes, seeds, data); run: `{context.run_dir}`.",
        "- Latency: one thread per runtime, variants timed side by side in interleaved rounds (median)."
        " Other processes shared the machine: compare rows with each other, not with other runs.",
        "",
    ]


def render_report(tables: dict[str, pl.DataFrame], context: Context) -> str:
    """The whole markdown report: header, targets, then each table with what it measured."""
    batch_column = next(c for c in tables["orient_variants"].columns if c.endswith("_ms_per_image"))
    orient = orient_display(tables["orient_variants"], int(batch_column.split("_")[1][1:]))
    notes = slower_notes(orient) or ["- No quantized variant ran slower than its float file here."]
    cards = f"{context.mixed_items + context.rotated_items} cards, {context.rotated_items} of them turned"
    sections = [
        ("Targets", targets(tables), []),
        (f"Orientation CNN variants alone ({context.holdout_images} held-out images)", orient, notes),
        ("Distillation (teacher = the orientation CNN)", tables["distillation"], []),
        (
            "EasyOCR recognizer alone (crops of generated cards; torch-int8-dynamic = EasyOCR's CPU default)",
            tables["easyocr_recognizers"],
            [],
        ),
        (f"In the pipeline: orientation choices ({cards}; OCR fixed)", tables["pipeline_orient"], []),
        (
            "In the pipeline: EasyOCR recognizers (orientation fixed; easyocr-torch = EasyOCR's default)",
            tables["pipeline_ocr"],
            [],
        ),
    ]
    parts = header(context)
    for title, table, extra in sections:
        parts += [f"## {title}", "", markdown_table(table), "", *extra, *([""] if extra else [])]
    return "\n".join([*parts, *READING_NOTES])


READING_NOTES = [
    "## Reading these numbers",
    "",
    "- Accuracy alone is on the held-out generated set (mixed degradations, each card in all four"
    " rotations); in the pipeline, on a separate set of generated cards through the whole pipeline.",
    "- Speed is measured, not assumed: on these small convolutions the int8 kernels (TF Lite full-integer,"
    " ONNX Runtime's QInt8) can run slower than the float ones, which XNNPACK / MLAS already run fast;"
    " the speed columns mark where they did. What int8 surely buys is file size; what buys speed here is"
    " leaving Keras for LiteRT or ONNX Runtime (the Keras rows are mostly per-call framework overhead).",
    "- EasyOCR's English recognizer on Chinese cards reads only digits (ID number, dates): its field"
    " accuracy is low for every recognizer. Compare recognizers with each other; the CRAFT detector"
    " dominates the OCR stage's time, so the recognizer's speed-up shrinks end to end.",
    "- Every number comes from the run's files: the tables are Parquet files beside the report, and"
    " `python -m optimization report OUT` renders them again.",
    "",
]
