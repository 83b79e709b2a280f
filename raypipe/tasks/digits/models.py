"""The digit classifiers: trained on the training part at first use, exported to ONNX and quantized to int8.

No model file exists: each model is a deterministic function of the training part, its hyperparameters
(fixed random_state) and the library versions, so every process trains its own at first use (~0.1 s
each after scikit-learn's import) and keeps it (functools.cache), and several choices in one actor
share it. BLAS and OpenMP are held to one thread while training: on 2 cores their thread pools fight
each other and the other actors (an MLP of 128 units took 88 s instead of 0.5 s).

The classifiers learn from clean digits only, not from the generator's degradations: the pipeline
search is there to find which preprocessing repairs a shifted distribution, and a classifier trained on
the evaluation's own degradations would leave the preprocessing choices nothing to show.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.tasks.digits.data import training_part

N_FEATURES = 64
RANDOM_STATE = 0
# Hyperparameters chosen on the training part only; accuracies on the held-out part are in the tests.
LINEAR_PARAMS: dict[str, Any] = {"C": 1.0, "max_iter": 500}
MLP_PARAMS: dict[str, Any] = {
    "hidden_layer_sizes": (64,),
    "alpha": 1e-3,
    "learning_rate_init": 3e-3,
    "max_iter": 200,
    "random_state": RANDOM_STATE,
}


def features_of(images: np.ndarray) -> np.ndarray:
    """(n, 8, 8) or (8, 8) uint8 images -> (n, 64) float32 rows on 0-1, what every model takes."""
    return (np.asarray(images, dtype=np.float32).reshape(-1, N_FEATURES) / 255.0).astype(np.float32)


def _fit(model: Any) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    part = training_part()
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # Adam stops at max_iter before its tolerance: the held-out accuracy is what is checked.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(features_of(part.images), part.labels)


@cache
def linear_model() -> Any:
    """Multinomial logistic regression on the 64 pixels."""
    from sklearn.linear_model import LogisticRegression

    return _fit(LogisticRegression(**LINEAR_PARAMS))


@cache
def mlp_model() -> Any:
    """One hidden layer of 64 ReLU units, trained with Adam."""
    from sklearn.neural_network import MLPClassifier

    return _fit(MLPClassifier(**MLP_PARAMS))


@cache
def mlp_onnx() -> bytes:
    """The MLP as an ONNX model (skl2onnx): input "X" float32 (n, 64), outputs label and probabilities."""
    from skl2onnx import to_onnx

    model = mlp_model()
    sample = np.zeros((1, N_FEATURES), dtype=np.float32)
    # zipmap off: probabilities as one (n, 10) tensor, not a list of dicts per row.
    onnx_model = to_onnx(model, sample, options={id(model): {"zipmap": False}}, target_opset=17)
    return onnx_model.SerializeToString()


@cache
def mlp_onnx_int8() -> bytes:
    """The ONNX MLP with its weights dynamically quantized to int8 (activations quantized per call)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="raypipe-digits-") as folder:
        source, target = Path(folder) / "mlp.onnx", Path(folder) / "mlp-int8.onnx"
        source.write_bytes(mlp_onnx())
        # quantize_dynamic logs a "consider pre-processing" warning through the root logger on every call.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        return target.read_bytes()


def library_versions(*names: str) -> dict[str, str]:
    """The installed versions of `names` (e.g. "scikit-learn"), "absent" for one that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime writes ~/.cache/Microsoft otherwise
