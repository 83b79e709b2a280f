"""The benchmark's markdown report: the machine, the command, the targets met or not, and the tables."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import polars as pl

from optimization.machine import QUIET_CORES, machine
from optimization.report_tables import (
    id_loss_display,
    int8_answer,
    orient_display,
    orient_loss_display,
    pipeline_display,
    slower_notes,
    targets,
)

PACKAGES = ("tensorflow-cpu", "keras", "ai-edge-litert", "tf2onnx", "onnxruntime", "torch", "easyocr", "ray")
TABLES = (
    "orient_variants",
    "distillation",
    "orient_accuracy",
    "orient_losses",
    "distillation_losses",
    "pipeline_orient",
    "pipeline_ocr",
    "int8_end_to_end",
)
EASYOCR_TABLES = ("easyocr_recognizers", "id_recognizers", "id_by_source", "id_losses")
RERUN = "python -m optimization benchmark --timing-only"
REUSED = " (the losses as the previous benchmark without `--timing-only` saved them in the same folder)"


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
    orient_cards: int = 0
    orient_images: int = 0
    id_crops: int = 0
    other_cores: dict[str, float] = field(default_factory=dict)
    load_at_start: float = 0.0
    shared: bool = True
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


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join([f"Python {platform.python_version()}", *found])


def cell(value: object) -> str:
    """A table cell: floats to 4 significant digits (thousands grouped), None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and abs(value) >= 10000:
        return f"{value:,}"
    return str(value)


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub markdown table of `frame`."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def timing_note(context: Context) -> str:
    """Whether other processes shared the machine while this one timed, and what to rerun if so."""
    blocks = ", ".join(f"{name} {cores:.2f}" for name, cores in context.other_cores.items())
    measured = f"cores other processes used on average while timing: {blocks or 'not measured'}"
    measured += f"; load average {context.load_at_start:.1f} at the start"
    if context.shared:
        return (
            f"- **Timings are indicative only** ({measured}): other jobs shared the machine. Accuracy and"
            f" losses do not depend on it. On a quiet machine, `{RERUN}` measures every timing again"
            " (sizes and speeds alone, and the raypipe run) and rewrites this report with the saved losses."
        )
    return f"- Timings: the machine was quiet ({measured}; quiet means at most {QUIET_CORES} cores)."


def header(context: Context) -> list[str]:
    kind = "quick" if context.quick else "full"
    return [
        "# Optimization: compressed models inside the ID-card pipeline",
        "",
        f"Written by `{context.command}` ({kind} run), finished {context.written}. Every table below is"
        f" this command's output{REUSED if '--timing-only' in context.command else ''};"
        " `python -m optimization report OUT` renders the saved tables again.",
        "",
        f"- Machine: {context.machine}.",
        f"- Versions: {versions()}.",
        f"- Models: `{context.models_dir}` (manifest.json: hashes, seeds, data); run: `{context.run_dir}`.",
        "- Latency alone: one thread per runtime, variants timed side by side in interleaved rounds"
        " (median). In the pipeline: raypipe's service time (CPU time per call, calibrated).",
        timing_note(context),
        "",
    ]


Section = tuple[str, pl.DataFrame, list[str]]


def loss_sections(tables: dict[str, pl.DataFrame], context: Context) -> list[Section]:
    """The targets, then every variant against its float model where the float model errs."""
    turns = f"{context.orient_cards} holdout cards x 4 quarter turns = {context.orient_images} images"
    found = [
        ("Targets", targets(tables), TARGET_NOTES),
        (f"Orientation: each variant against its float model ({turns})", orient_loss_display(tables), []),
        ("Orientation accuracy on the same images, by holdout profile", tables["orient_accuracy"], []),
        (
            "Distillation: the students against their teacher (same holdout images)",
            orient_loss_display(tables, "distillation_losses"),
            [],
        ),
    ]
    if "id_losses" in tables:
        crops = f"{context.id_crops} ID-number crops of holdout and standard cards, detector left out"
        found += [
            (f"EasyOCR recognizers on the ID number ({crops})", tables["id_recognizers"], []),
            ("EasyOCR recognizers: each against torch fp32 on the same crops", id_loss_display(tables), []),
        ]
        if "id_by_source" in tables:
            found.append(("EasyOCR recognizers: exact ID numbers by card source", tables["id_by_source"], []))
    return found


def speed_sections(tables: dict[str, pl.DataFrame], context: Context) -> list[Section]:
    """Sizes and speeds alone, then the raypipe run and whether int8 was faster end to end in it."""
    orient = orient_display(tables["orient_variants"])
    found = [
        (
            f"Orientation variants alone: size and speed ({context.holdout_images} same-renderer held-out"
            " images, where every variant is near 1.0)",
            orient,
            slower_notes(orient) or ["- No quantized variant ran slower than its float file here."],
        ),
        ("Distillation as recorded in the manifest (same-renderer held-out set)", tables["distillation"], []),
    ]
    if "easyocr_recognizers" in tables:
        title = "EasyOCR recognizers alone: size and speed (torch = EasyOCR's CPU default, dynamic int8)"
        found.append((title, tables["easyocr_recognizers"], []))
    cards = f"{context.mixed_items + context.rotated_items} cards, {context.rotated_items} of them turned"
    found.append(
        (
            f"In the pipeline: orientation choices ({cards}; OCR fixed)",
            pipeline_display(tables["pipeline_orient"]),
            [],
        )
    )
    if tables["pipeline_ocr"].height > 1:
        ocr_title = "In the pipeline: OCR choices (orientation fixed)"
        found.append((ocr_title, pipeline_display(tables["pipeline_ocr"]), []))
    found.append(("Is any int8 variant faster end to end?", tables["int8_end_to_end"], int8_answer(tables)))
    return found


def render_report(tables: dict[str, pl.DataFrame], context: Context) -> str:
    """The whole markdown report: header, targets, then each table with what it measured."""
    parts = header(context)
    for title, table, notes in [*loss_sections(tables, context), *speed_sections(tables, context)]:
        parts += [f"## {title}", "", markdown_table(table), "", *notes, *([""] if notes else [])]
    return "\n".join([*parts, *READING_NOTES])


TARGET_NOTES = [
    "- A bound on a loss is met when the whole 95 % interval of the change lies above minus the allowed"
    " points, missed when it lies wholly below, and undecided when the interval spans the bound.",
]
READING_NOTES = [
    "## Reading these numbers",
    "",
    "- Losses are paired: a variant and its float model score the same items, and the interval is a"
    " bootstrap that resamples whole cards (a card's four turns move together); `worse` / `better` count"
    " the items only the float model / only the variant got right, and `p` is the exact two-sided sign"
    " test on them (McNemar's exact test). With no such item the interval is the exact bound on how"
    " often the two could still disagree.",
    "- The orientation models score 1.0 on held-out cards of the renderer they trained on, so losses are"
    " measured on the task's second, differently rendered holdout set (other fonts and layouts,"
    " photographed cards), where the float models err; nothing here trains or calibrates on it.",
    "- EasyOCR's recognizers read only the crop of the ID number (from the cards' word boxes), so the"
    " comparison is the recognition network's alone; `digits` is 1 - edit distance / 18. In the"
    " pipeline, EasyOCR's English recognizer cannot read the Chinese name, so `key_fields_exact` is 0 for"
    " every recognizer there: compare them on `exact_id_number` and on time (the CRAFT detector dominates"
    " the OCR stage, so a faster recognizer shrinks end to end).",
    "- Speed is measured, not assumed: on these small convolutions the int8 kernels (TF Lite full-integer,"
    " ONNX Runtime's QInt8) can run slower than the float ones, which XNNPACK / MLAS already run fast."
    " What int8 surely buys is file size; what buys speed here is leaving Keras for LiteRT or ONNX"
    " Runtime (the Keras rows are mostly per-call framework overhead).",
    "",
]
