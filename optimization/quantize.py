"""`quantize`: TF Lite (float, dynamic range, full int8) and ONNX (fp32, int8 dynamic and static) files.

Each file is written from a trained Keras model of the models directory, then scored on the held-out
set through the same runtime the raypipe stage uses (LiteRT, ONNX Runtime), and recorded in the manifest
with its source's hash. ONNX comes from `tf2onnx.convert.from_function`: `from_keras` fails on Keras 3.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optimization.artifacts import artifact_entry, record_artifact, replace_atomically
from optimization.distill import agreement
from optimization.orient_data import OrientData
from optimization.runtime import import_keras
from optimization.training import (
    Progress,
    TrainSettings,
    accuracy,
    log_loss,
    predict_logits,
    training_data,
    with_data_of,
)
from raypipe.engine.models import file_sha256
from raypipe.errors import StageError
from raypipe.tasks.idcard.stages.orient_cnn import FORMATS, artifact_name, as_batch, load_backend

CALIBRATION_IMAGES = 256
ONNX_OPSET = 17


def representative_batches(train: OrientData, count: int = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """Single-image float batches spread evenly over the training set (all four classes)."""
    step = max(1, len(train.images) // count)
    return [as_batch(train.images[i : i + 1]) for i in range(0, len(train.images), step)][:count]


def tflite_bytes(model: Any, mode: str, calibration: list[np.ndarray]) -> bytes:
    """The model as TF Lite: mode "float", "dynamic" (int8 weights) or "int8" (weights and activations)."""
    tf, _ = import_keras()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        converter.representative_dataset = lambda: ([batch] for batch in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel signature
        return converter.convert()


def export_onnx(model: Any, path: Path) -> None:
    """fp32 ONNX through tf2onnx.from_function, with a dynamic batch axis and input name "image"."""
    tf, _ = import_keras()
    import tf2onnx

    size = int(model.input_shape[1])
    signature = (tf.TensorSpec((None, size, size, 1), tf.float32, name="image"),)
    function = tf.function(lambda image: model(image, training=False))
    tf2onnx.convert.from_function(
        function, input_signature=signature, opset=ONNX_OPSET, output_path=str(path)
    )


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over the representative batches."""

    def __init__(self, batches: list[np.ndarray], input_name: str):
        self.batches: Iterator[np.ndarray] = iter(batches)
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def quantize_onnx(source: Path, path: Path, static: bool, calibration: list[np.ndarray]) -> None:
    """int8 ONNX: dynamic (weights only, activations quantized at run time) or static QDQ (calibrated)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not static:
        quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
        return
    prepared = path.with_name(f".{path.stem}.prepared.onnx")
    try:
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(path),
            _Calibration(calibration, "image"),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    finally:
        prepared.unlink(missing_ok=True)


def writers(model: Any, keras_path: Path, calibration: list[np.ndarray]) -> dict[str, Callable[[Path], None]]:
    """Format name -> function writing that format to a path; ONNX int8 reads the fp32 ONNX file."""
    onnx_path = keras_path.with_name(keras_path.name.replace(FORMATS["keras"], FORMATS["onnx"]))
    return {
        "tflite-float": lambda p: p.write_bytes(tflite_bytes(model, "float", calibration)),
        "tflite-dynamic": lambda p: p.write_bytes(tflite_bytes(model, "dynamic", calibration)),
        "tflite-int8": lambda p: p.write_bytes(tflite_bytes(model, "int8", calibration)),
        "onnx": lambda p: export_onnx(model, p),
        "onnx-int8": lambda p: quantize_onnx(onnx_path, p, static=False, calibration=calibration),
        "onnx-int8-static": lambda p: quantize_onnx(onnx_path, p, static=True, calibration=calibration),
    }


def backend_logits(path: Path, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of a model file through the raypipe stage's runtime for its format."""
    backend = load_backend(path, threads=2)
    return np.concatenate(
        [backend.predict(as_batch(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )


def up_to_date(path: Path, source: dict) -> bool:
    """`path` exists, matches its manifest hash, and was made from the Keras file now beside it."""
    entry = artifact_entry(path.parent, path.name)
    return bool(
        path.is_file()
        and entry
        and entry.get("sha256") == file_sha256(path)
        and entry.get("source_sha256") == source.get("sha256")
    )


def quantize_model(
    models_dir: Path, name: str, settings: TrainSettings, progress: Progress, force: bool = False
) -> list[dict]:
    """The quantized / exported formats of model `name` ("cnn" or "student") that are missing or were
    made from another Keras file (all of them with `force`); returns their new manifest entries."""
    keras_path = models_dir / artifact_name(name, "keras")
    source = artifact_entry(models_dir, keras_path.name) or {}
    _, keras = import_keras()
    model = keras.saving.load_model(keras_path, compile=False)
    train, holdout = training_data(models_dir, with_data_of(settings, source))
    calibration = representative_batches(train)
    reference = predict_logits(model, holdout.images)
    entries = []
    for fmt, write in writers(model, keras_path, calibration).items():
        if not force and up_to_date(models_dir / artifact_name(name, fmt), source):
            progress(f"{artifact_name(name, fmt)}: up to date with {keras_path.name}, kept")
            continue
        path = replace_atomically(write, models_dir / artifact_name(name, fmt))
        logits = backend_logits(path, holdout.images)
        entries.append(
            record_artifact(
                path,
                model=name,
                format=fmt,
                source=keras_path.name,
                source_sha256=source.get("sha256"),
                seed=source.get("seed"),
                data=source.get("data"),
                calibration_images=len(calibration) if fmt in ("tflite-int8", "onnx-int8-static") else None,
                holdout_accuracy=accuracy(logits, holdout.labels),
                holdout_log_loss=log_loss(logits, holdout.labels),
                source_agreement=agreement(logits, reference),
                command="python -m optimization quantize",
            )
        )
        progress(
            f"{path.name}: {path.stat().st_size / 1024:.0f} KiB, held-out accuracy "
            f"{entries[-1]['holdout_accuracy']:.4f}"
        )
    return entries


def quantize(
    models_dir: Path,
    settings: TrainSettings = TrainSettings(),
    progress: Progress = print,
    force: bool = False,
) -> list[dict]:
    """Quantize the CNN and, when distilled, the student; the CNN must exist (`train-orient`).

    Files already made from the present Keras file are kept (committed models stay byte-identical)."""
    names = [n for n in ("cnn", "student") if (models_dir / artifact_name(n, "keras")).is_file()]
    if "cnn" not in names:
        raise StageError(
            f"no {artifact_name('cnn', 'keras')} in {models_dir}: run `python -m optimization train-orient`"
        )
    return [entry for name in names for entry in quantize_model(models_dir, name, settings, progress, force)]
