"""`python -m optimization`: train, distill, quantize, export and benchmark, as thin Typer commands."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from optimization.runtime import configure_environment
from raypipe.engine.models import default_models_dir
from raypipe.errors import RaypipeError

if TYPE_CHECKING:
    from optimization.training import TrainSettings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True, soft_wrap=True)  # paths and commands stay on one line

ModelsDir = Annotated[
    Path | None, typer.Option(help="Models directory (default: $RAYPIPE_MODELS_DIR or ./models).")
]
Quick = Annotated[bool, typer.Option(help="Small data and few epochs: seconds instead of minutes.")]
Seed = Annotated[int, typer.Option(help="Seed of the data and of the weights.")]
Epochs = Annotated[int | None, typer.Option(help="Training epochs (default 8, quick 5).")]
Cards = Annotated[
    int | None, typer.Option(help="Training cards, each in 4 rotations (default 1500, quick 200).")
]


def progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


def models_dir_of(models_dir: Path | None) -> Path:
    folder = (models_dir or default_models_dir()).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def settings_for(quick: bool, seed: int, epochs: int | None, cards: int | None) -> TrainSettings:
    from optimization.training import QUICK_SETTINGS, TrainSettings

    base = QUICK_SETTINGS if quick else TrainSettings()
    changes = {"seed": seed, **({"epochs": epochs} if epochs else {}), **({"cards": cards} if cards else {})}
    return replace(base, **changes)


def guarded(run) -> None:
    """Run a command body; raypipe's errors become one red line and exit status 1."""
    configure_environment()
    try:
        run()
    except RaypipeError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


@app.command("train-orient")
def train_orient_command(
    models_dir: ModelsDir = None,
    quick: Quick = False,
    seed: Seed = 0,
    epochs: Epochs = None,
    cards: Cards = None,
) -> None:
    """Train the orientation CNN (0/90/180/270) on generated cards; writes orient-cnn.keras + manifest."""
    from optimization.training import train_orient

    guarded(
        lambda: train_orient(models_dir_of(models_dir), settings_for(quick, seed, epochs, cards), progress)
    )


@app.command()
def distill(
    models_dir: ModelsDir = None,
    quick: Quick = False,
    seed: Seed = 0,
    epochs: Epochs = None,
    temperature: Annotated[
        float, typer.Option(help="Softening temperature T of the teacher's logits.")
    ] = 3.0,
    alpha: Annotated[
        float, typer.Option(help="Weight of the hard-label loss (1 - alpha on the soft one).")
    ] = 0.0,
) -> None:
    """Distill a >= 4x smaller student from the orientation CNN, and train the same student on hard labels."""
    from optimization.distill import distill as run

    settings = settings_for(quick, seed, epochs, None)
    guarded(lambda: run(models_dir_of(models_dir), settings, temperature, alpha, progress))


@app.command()
def quantize(
    models_dir: ModelsDir = None,
    quick: Quick = False,
    force: Annotated[
        bool, typer.Option(help="Rewrite files already made from the present Keras models.")
    ] = False,
) -> None:
    """TF Lite float / dynamic / int8 and ONNX fp32 / int8 dynamic / int8 static of the CNN and student."""
    from optimization.quantize import quantize as run

    guarded(lambda: run(models_dir_of(models_dir), settings_for(quick, 0, None, None), progress, force))


@app.command("export-easyocr")
def export_easyocr_command(models_dir: ModelsDir = None) -> None:
    """Export EasyOCR's english_g2 recognizer to ONNX and quantize it (MatMul / LSTM / Gemm, int8)."""
    from optimization.easyocr_export import export_easyocr

    guarded(lambda: export_easyocr(models_dir_of(models_dir), progress))


@app.command()
def benchmark(
    models_dir: ModelsDir = None,
    quick: Quick = False,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default runs/optimization[-quick]).")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Also write the report here (default: OPTIMIZATION.md for a full run)."),
    ] = None,
    timing_only: Annotated[
        bool,
        typer.Option(
            help="Measure only the timings again (alone and in the raypipe run), on a quiet machine; reuse "
            "the loss tables a previous benchmark saved in --out."
        ),
    ] = False,
) -> None:
    """Measure every variant alone, then rerun raypipe with originals and variants side by side."""
    from optimization.benchmark import FULL, QUICK, run_benchmark

    # A quick run trains its own small models: never over the full ones in the default folder.
    folder = models_dir_of(models_dir or (default_models_dir() / "quick" if quick else None))
    target = out or Path("runs") / ("optimization-quick" if quick else "optimization")
    report_path = report or (None if quick else Path("OPTIMIZATION.md"))
    command = "python -m optimization " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    def run() -> None:
        settings = QUICK if quick else FULL
        path = run_benchmark(folder, target, settings, command, report_path, progress, timing_only)
        progress(f"report: {path}" + (f" and {report_path}" if report_path else ""))

    guarded(run)


@app.command()
def report(
    out: Annotated[
        Path, typer.Argument(help="A benchmark's output folder (its Parquet tables and context.json).")
    ],
    to: Annotated[
        Path | None, typer.Option(help="Also write the report here (e.g. OPTIMIZATION.md).")
    ] = None,
) -> None:
    """Render a finished benchmark's report again from its saved tables (no measuring)."""
    import polars as pl

    from optimization.report import EASYOCR_TABLES, TABLES, Context, render_report

    def run() -> None:
        if not (out / "context.json").is_file():
            raise RaypipeError(
                f"{out} holds no benchmark (no context.json): run `python -m optimization benchmark`"
            )
        names = [*TABLES, *(n for n in EASYOCR_TABLES if (out / f"{n}.parquet").is_file())]
        tables = {name: pl.read_parquet(out / f"{name}.parquet") for name in names}
        markdown = render_report(tables, Context.load(out / "context.json"))
        for path in [out / "OPTIMIZATION.md", *([to] if to else [])]:
            path.write_text(markdown)
            progress(f"report: {path}")

    guarded(run)
