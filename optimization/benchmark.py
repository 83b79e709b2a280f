"""`benchmark`: every variant alone, then the raypipe comparison with originals and variants side by side.

Missing artifacts are made first by the same commands a user runs (in subprocesses, so that the timed
process starts TensorFlow with one thread). Results go to an output folder as Parquet, the raypipe run
directory, and a markdown report; a full run also rewrites OPTIMIZATION.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from optimization.artifacts import artifact_entry
from optimization.measure import orient_rows, recognizer_rows
from optimization.report import Context, render_report
from optimization.runtime import configure_environment, preload_torch
from optimization.stages import easyocr_choice
from optimization.training import QUICK_SETTINGS, Progress, TrainSettings, training_data, with_data_of
from raypipe import data
from raypipe.evaluation import evaluate
from raypipe.spec import PipelineSpec, parse_spec
from raypipe.stages.easyocr_onnx import RECOGNIZER_FILES
from raypipe.stages.orient_cnn import FORMATS, VARIANTS, artifact_name, variant_path

RECOGNIZERS = ("torch", "torch-fp32", "onnx", "onnx-int8")
EXACT = ("exact_name", "exact_sex", "exact_ethnicity", "exact_birth_date", "exact_id_number")


@dataclass(frozen=True)
class BenchmarkSettings:
    """How big a benchmark: training sizes, pipeline items, timing rounds."""

    quick: bool
    train: TrainSettings = field(default_factory=TrainSettings)
    mixed_items: int = 16
    rotated_items: int = 8
    latency_rounds: int = 15
    batch: int = 32
    recognizer_cards: int = 4


QUICK = BenchmarkSettings(
    True, QUICK_SETTINGS, mixed_items=4, rotated_items=4, latency_rounds=5, recognizer_cards=2
)
FULL = BenchmarkSettings(False)


def missing_steps(models_dir: Path) -> list[str]:
    """The optimization commands whose outputs are not in `models_dir` yet, in order."""

    def absent(*names: str) -> bool:
        return any(not (models_dir / name).is_file() for name in names)

    steps = []
    if absent(artifact_name("cnn", "keras")):
        steps.append("train-orient")
    if absent(artifact_name("student", "keras"), artifact_name("student-hard", "keras")):
        steps.append("distill")
    if absent(*(artifact_name(m, f) for m in ("cnn", "student") for f in FORMATS if f != "keras")):
        steps.append("quantize")
    if absent(*RECOGNIZER_FILES.values()):
        steps.append("export-easyocr")
    return steps


def ensure_artifacts(models_dir: Path, settings: BenchmarkSettings, progress: Progress) -> None:
    for step in missing_steps(models_dir):
        command = [sys.executable, "-m", "optimization", step, "--models-dir", str(models_dir)]
        command += ["--quick"] if settings.quick and step != "export-easyocr" else []
        progress(f"$ {' '.join(command[1:])}")
        subprocess.run(command, check=True)


def benchmark_dataset(settings: BenchmarkSettings, path: Path) -> Path:
    """Mixed cards plus rotated ones (so orientation matters), from seeds no training stream uses."""
    table = pa.concat_tables(
        [
            data.generate_dataset("mixed", settings.mixed_items, seed=101),
            data.generate_dataset("rotated", settings.rotated_items, seed=102),
        ]
    )
    return data.write_dataset(table, path)


def pipeline_spec(models_dir: Path, dataset: Path) -> PipelineSpec:
    """Originals and every present variant as choices of their stages."""
    has_tesseract = shutil.which("tesseract") is not None
    orient: list = ["none", *([{"name": "osd", "params": {"min_confidence": 1.0}}] if has_tesseract else [])]
    orient += [
        {"name": "cnn", "label": f"cnn-{v}", "params": {"variant": v, "model_dir": str(models_dir)}}
        for v in VARIANTS
        if variant_path(v, models_dir).is_file()
    ]
    ocr: list = [{"name": "tesseract", "params": {"lang": "chi_sim+eng", "psm": 11}}] if has_tesseract else []
    ocr += [easyocr_choice(r, str(models_dir)) for r in RECOGNIZERS]
    stages = {"orient": orient, "enhance": ["none"], "channel": ["original"], "ocr": ocr}
    raw = {
        "name": "optimization-benchmark",
        "description": "orientation CNN variants and EasyOCR recognizers beside the originals",
        "stages": [{"name": name, "choices": choices} for name, choices in stages.items()],
        "dataset": {"source": str(dataset)},
        "sla": {"p95_latency_ms": 5000, "min_assertion_accuracy": 0.5},
    }
    return parse_spec(raw)


def pipeline_tables(run_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per orient choice with the reference OCR, per OCR choice after the Keras CNN) from a run's items."""
    items = pl.read_parquet(run_dir / "items.parquet").with_columns(
        pl.mean_horizontal([pl.col(c).cast(pl.Float64) for c in EXACT]).alias("field_accuracy")
    )
    ocr_ref = "tesseract" if "tesseract" in items["ocr"].unique().to_list() else "easyocr-torch"
    metrics = [
        pl.len().alias("items"),
        pl.col("error").is_not_null().sum().alias("errors"),
        pl.col("assertion_score").mean().alias("assertion_accuracy"),
        pl.col("field_accuracy").mean().alias("field_accuracy"),
        pl.col("exact_id_number").cast(pl.Float64).mean().alias("exact_id_number"),
        pl.col("assertion_score").filter(pl.col("profile") == "rotated").mean().alias("assertion_on_rotated"),
    ]
    orient = (
        items.filter(pl.col("ocr") == ocr_ref)
        .group_by("orient")
        .agg(
            *metrics,
            pl.col("latency_orient_ms").median().alias("orient_p50_ms"),
            pl.col("latency_total_ms").median().alias("total_p50_ms"),
        )
        .with_columns(pl.lit(ocr_ref).alias("ocr"))
        .sort("orient_p50_ms")
    )
    after = "cnn-keras" if "cnn-keras" in items["orient"].unique().to_list() else "none"
    ocr = (
        items.filter(pl.col("orient") == after)
        .group_by("ocr")
        .agg(
            *metrics,
            pl.col("latency_ocr_ms").median().alias("ocr_p50_ms"),
            pl.col("latency_total_ms").median().alias("total_p50_ms"),
        )
        .with_columns(pl.lit(after).alias("orient"))
        .sort("ocr_p50_ms")
    )
    return orient, ocr


def distillation_rows(models_dir: Path) -> pl.DataFrame:
    keys = ("parameters", "holdout_accuracy", "holdout_log_loss", "teacher_agreement", "train_seconds")
    rows = []
    for role, name in (
        ("teacher", "cnn"),
        ("student (distilled)", "student"),
        ("student (hard labels)", "student-hard"),
    ):
        entry = artifact_entry(models_dir, artifact_name(name, "keras")) or {}
        rows.append(
            {
                "model": role,
                "file": artifact_name(name, "keras"),
                **{k: entry.get(k) for k in keys},
                "distillation": str(entry.get("distillation") or ""),
            }
        )
    return pl.DataFrame(rows)


def isolated_tables(
    models_dir: Path, settings: BenchmarkSettings, progress: Progress
) -> dict[str, pl.DataFrame]:
    """Each orientation variant and each EasyOCR recognizer measured alone, and the distillation results."""
    cnn_entry = artifact_entry(models_dir, artifact_name("cnn", "keras"))
    _, holdout = training_data(models_dir, with_data_of(settings.train, cnn_entry))
    progress(f"timing orientation variants alone ({len(holdout.labels)} held-out images)")
    orient = pl.DataFrame(orient_rows(models_dir, holdout, settings.batch, settings.latency_rounds))
    progress(f"timing EasyOCR recognizers alone (crops of {settings.recognizer_cards} cards)")
    recognizers = recognizer_rows(models_dir, settings.recognizer_cards, max(3, settings.latency_rounds // 3))
    return {
        "orient_variants": orient,
        "distillation": distillation_rows(models_dir),
        "easyocr_recognizers": pl.DataFrame(recognizers),
    }


def pipeline_comparison(
    models_dir: Path, out: Path, settings: BenchmarkSettings, progress: Progress
) -> dict[str, pl.DataFrame]:
    """The raypipe run over benchmark cards, summarised per orientation choice and per OCR choice."""
    spec = pipeline_spec(models_dir, benchmark_dataset(settings, out / "benchmark-cards.parquet"))
    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    orient, ocr = (len(spec.stage(name).choices) for name in ("orient", "ocr"))
    cards = settings.mixed_items + settings.rotated_items
    progress(f"raypipe run: {orient} orient x {ocr} OCR choices over {cards} cards")
    evaluate(spec, out=str(run_dir))
    pipeline_orient, pipeline_ocr = pipeline_tables(run_dir)
    return {"pipeline_orient": pipeline_orient, "pipeline_ocr": pipeline_ocr}


def run_benchmark(
    models_dir: Path,
    out: Path,
    settings: BenchmarkSettings,
    command: str,
    report: Path | None,
    progress: Progress,
) -> Path:
    """The whole benchmark; returns the markdown report's path in `out` (also written to `report`)."""
    configure_environment()
    preload_torch()  # before the Keras variants load TensorFlow: the other order crashes torchvision
    out.mkdir(parents=True, exist_ok=True)
    ensure_artifacts(models_dir, settings, progress)
    tables = {
        **isolated_tables(models_dir, settings, progress),
        **pipeline_comparison(models_dir, out, settings, progress),
    }
    for name, table in tables.items():
        table.write_parquet(out / f"{name}.parquet")
    context = Context(
        command=command,
        quick=settings.quick,
        models_dir=models_dir,
        run_dir=out / "run",
        holdout_images=tables["orient_variants"]["holdout_images"][0],
        mixed_items=settings.mixed_items,
        rotated_items=settings.rotated_items,
    )
    context.save(out / "context.json")
    markdown = render_report(tables, context)
    path = out / "OPTIMIZATION.md"
    path.write_text(markdown)
    if report is not None:
        report.write_text(markdown)
    return path
