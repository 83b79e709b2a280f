"""`benchmark`: each variant against its float model where that model errs, each timed alone, then the
raypipe run with originals and variants side by side.

Missing artifacts are made first by the same commands a user runs (in subprocesses, so that the timed
process starts TensorFlow with one thread). Tables go to an output folder as Parquet as soon as they are
measured, beside the raypipe run directory and a markdown report; a full run also rewrites OPTIMIZATION.md.
`--timing-only` measures the timings again and reuses the saved losses (they do not depend on load).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from optimization.artifacts import artifact_entry
from optimization.eval_sets import holdout_cards, id_crops, orient_set
from optimization.losses import id_digit_tables, orient_loss_tables
from optimization.machine import OtherLoad
from optimization.measure import orient_rows, recognizer_rows
from optimization.pipeline import pipeline_spec, pipeline_tables, run_pipeline
from optimization.report import Context, render_report
from optimization.runtime import configure_environment, preload_torch
from optimization.training import QUICK_SETTINGS, Progress, TrainSettings, training_data, with_data_of
from raypipe.errors import RaypipeError
from raypipe.tasks.idcard.stages.easyocr_onnx import RECOGNIZER_FILES
from raypipe.tasks.idcard.stages.orient_cnn import FORMATS, artifact_name


@dataclass(frozen=True)
class BenchmarkSettings:
    """How big a benchmark: training sizes, evaluation sets, pipeline items, timing rounds."""

    quick: bool
    train: TrainSettings = field(default_factory=TrainSettings)
    mixed_items: int = 16
    rotated_items: int = 8
    latency_rounds: int = 15
    calls_per_round: int = 20  # batch-1 calls per timing round
    batch: int = 32
    recognizer_cards: int = 4
    recognizer_words: int | None = None  # timing crops per card (None: every word)
    orient_cards: int = 100  # holdout cards per profile, each in four quarter turns
    crop_cards: int = 40  # of those, read at crop level (at most orient_cards)
    standard_crop_cards: int = 30  # standard-renderer cards per profile read at crop level
    pipeline_easyocr: bool = True  # EasyOCR's detector takes seconds per card: not in a quick run
    pipeline_variants: tuple[str, ...] | None = None  # orient CNN choices (None: all, and Tesseract OSD)


QUICK = BenchmarkSettings(
    True,
    QUICK_SETTINGS,
    mixed_items=4,
    rotated_items=4,
    latency_rounds=3,
    calls_per_round=4,
    recognizer_cards=1,
    recognizer_words=4,
    orient_cards=3,
    crop_cards=2,
    standard_crop_cards=1,
    pipeline_easyocr=False,
    # Float and int8 on both runtimes; no Keras (an actor importing TensorFlow takes seconds) or OSD.
    pipeline_variants=("tflite-float", "tflite-int8", "onnx", "onnx-int8"),
)
FULL = BenchmarkSettings(False)


def easyocr_available() -> bool:
    """EasyOCR and its offline English weights are installed (else the recognizer parts are skipped)."""
    return all(importlib.util.find_spec(m) is not None for m in ("easyocr", "easyocr_en_models"))


def missing_steps(models_dir: Path, easyocr: bool) -> list[str]:
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
    if easyocr and absent(*RECOGNIZER_FILES.values()):
        steps.append("export-easyocr")
    return steps


def ensure_artifacts(
    models_dir: Path, settings: BenchmarkSettings, easyocr: bool, progress: Progress
) -> None:
    for step in missing_steps(models_dir, easyocr):
        command = [sys.executable, "-m", "optimization", step, "--models-dir", str(models_dir)]
        command += ["--quick"] if settings.quick and step != "export-easyocr" else []
        progress(f"$ {' '.join(command[1:])}")
        subprocess.run(command, check=True)


def benchmark_dataset(settings: BenchmarkSettings, path: Path) -> Path:
    """Mixed cards plus rotated ones (so orientation matters), from seeds no training stream uses."""
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    task = resolve_task("idcard")
    table = pa.concat_tables(
        [
            task.generate("mixed", settings.mixed_items, seed=101),
            task.generate("rotated", settings.rotated_items, seed=102),
        ]
    )
    return Path(write_table(table, str(path)))


def distillation_rows(models_dir: Path) -> pl.DataFrame:
    """What the manifest recorded about the teacher and the two students (same-renderer held-out set)."""
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


def timing_tables(
    models_dir: Path, settings: BenchmarkSettings, easyocr: bool, load: OtherLoad, progress: Progress
) -> dict[str, pl.DataFrame]:
    """Each orientation variant and each EasyOCR recognizer timed alone, in this process."""
    cnn_entry = artifact_entry(models_dir, artifact_name("cnn", "keras"))
    _, holdout = training_data(models_dir, with_data_of(settings.train, cnn_entry))
    progress(f"timing orientation variants alone ({len(holdout.labels)} same-renderer held-out images)")
    with load.watch("orientation variants"):
        rows = orient_rows(
            models_dir, holdout, settings.batch, settings.latency_rounds, settings.calls_per_round
        )
        orient = pl.DataFrame(rows)
    tables = {"orient_variants": orient, "distillation": distillation_rows(models_dir)}
    if easyocr:
        progress(f"timing EasyOCR recognizers alone (crops of {settings.recognizer_cards} cards)")
        with load.watch("EasyOCR recognizers"):
            rounds = max(1, settings.latency_rounds // 3)
            rows = recognizer_rows(models_dir, settings.recognizer_cards, rounds, settings.recognizer_words)
        tables["easyocr_recognizers"] = pl.DataFrame(rows)
    return tables


def model_sizes(models_dir: Path) -> set[int]:
    """The input sizes of the Keras models present (their manifest's training settings; 64 by default)."""
    sizes = set()
    for name in ("cnn", "student", "student-hard"):
        entry = artifact_entry(models_dir, artifact_name(name, "keras")) or {}
        sizes.add(int((entry.get("training") or {}).get("image_size", 64)))
    return sizes


def loss_tables(
    models_dir: Path, settings: BenchmarkSettings, easyocr: bool, progress: Progress
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Every variant against its float model on the holdout sets, item by item; and the sets' sizes."""
    progress(f"drawing {settings.orient_cards} holdout cards per profile for the orientation losses")
    holdout = holdout_cards(settings.orient_cards)
    data = orient_set(holdout, model_sizes(models_dir))
    tables = {k: pl.DataFrame(v) for k, v in orient_loss_tables(models_dir, data).items()}
    sizes = {"orient_cards": int(data.groups.max()) + 1, "orient_images": len(data.labels), "id_crops": 0}
    if easyocr:
        crops = id_crops(
            {p: cards[: settings.crop_cards] for p, cards in holdout.items()}, settings.standard_crop_cards
        )
        progress(f"reading {len(crops)} ID-number crops with each EasyOCR recognizer")
        tables |= {k: pl.DataFrame(v) for k, v in id_digit_tables(models_dir, crops).items()}
        sizes["id_crops"] = len(crops)
    return tables, sizes


def pipeline_comparison(
    models_dir: Path,
    out: Path,
    settings: BenchmarkSettings,
    easyocr: bool,
    load: OtherLoad,
    progress: Progress,
) -> dict[str, pl.DataFrame]:
    """The raypipe run over benchmark cards, summarised per choice, and int8 against float in it."""
    dataset = benchmark_dataset(settings, out / "benchmark-cards.parquet")
    spec = pipeline_spec(
        models_dir, dataset, easyocr and settings.pipeline_easyocr, settings.pipeline_variants
    )
    orient, ocr = (len(spec.stage(name).choices) for name in ("orient", "ocr"))
    cards = settings.mixed_items + settings.rotated_items
    progress(f"raypipe run: {orient} orient x {ocr} OCR choices over {cards} cards")
    with load.watch("raypipe run"):
        run_dir = run_pipeline(spec, out / "run")
    return pipeline_tables(run_dir)


LOSS_SETS = "loss_sets.json"
LOSS_TABLES = (
    "orient_accuracy",
    "orient_losses",
    "distillation_losses",
    "id_recognizers",
    "id_by_source",
    "id_losses",
)


def save_tables(out: Path, tables: dict[str, pl.DataFrame]) -> None:
    """Write tables as they are measured, so a later failure loses none of them."""
    for name, table in tables.items():
        table.write_parquet(out / f"{name}.parquet")


def measured_losses(
    models_dir: Path, out: Path, settings: BenchmarkSettings, easyocr: bool, progress: Progress
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """`loss_tables`, saved in `out` with the sizes of their sets."""
    tables, sizes = loss_tables(models_dir, settings, easyocr, progress)
    save_tables(out, tables)
    (out / LOSS_SETS).write_text(json.dumps(sizes))
    return tables, sizes


def saved_losses(out: Path) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """The loss tables and set sizes a previous benchmark saved in `out` (they do not depend on timing)."""
    if not (out / LOSS_SETS).is_file():
        raise RaypipeError(f"{out} holds no benchmark to reuse: run `python -m optimization benchmark` first")
    tables = {
        n: pl.read_parquet(out / f"{n}.parquet") for n in LOSS_TABLES if (out / f"{n}.parquet").is_file()
    }
    return tables, json.loads((out / LOSS_SETS).read_text())


def run_benchmark(
    models_dir: Path,
    out: Path,
    settings: BenchmarkSettings,
    command: str,
    report: Path | None,
    progress: Progress,
    timing_only: bool = False,
) -> Path:
    """The whole benchmark (with `timing_only`, the timings again and the saved losses); returns the
    markdown report's path in `out` (also written to `report`)."""
    configure_environment()
    preload_torch()  # before the Keras variants load TensorFlow: the other order crashes torchvision
    load = OtherLoad()
    out.mkdir(parents=True, exist_ok=True)
    easyocr = easyocr_available()
    ensure_artifacts(models_dir, settings, easyocr, progress)
    if timing_only:
        tables, sizes = saved_losses(out)
    else:
        tables, sizes = measured_losses(models_dir, out, settings, easyocr, progress)
    tables |= timing_tables(models_dir, settings, easyocr, load, progress)
    save_tables(out, tables)
    tables |= pipeline_comparison(models_dir, out, settings, easyocr, load, progress)
    save_tables(out, tables)
    context = Context(
        command=command,
        quick=settings.quick,
        models_dir=models_dir,
        run_dir=out / "run",
        holdout_images=tables["orient_variants"]["holdout_images"][0],
        mixed_items=settings.mixed_items,
        rotated_items=settings.rotated_items,
        **sizes,
        other_cores=load.cores,
        load_at_start=load.load_at_start,
        shared=load.shared(),
    )
    return write_report(out, tables, context, report)


def write_report(out: Path, tables: dict[str, pl.DataFrame], context: Context, also: Path | None) -> Path:
    """Save the context beside the tables and write the report to `out` (and to `also`)."""
    context.save(out / "context.json")
    markdown = render_report(tables, context)
    path = out / "OPTIMIZATION.md"
    path.write_text(markdown)
    if also is not None:
        also.write_text(markdown)
    return path
