"""The digit classifiers: trained at first use on the training part, exported to ONNX, quantized to int8.

No model file ships: each model is a deterministic function of the training part, its hyperparameters
(fixed random_state), this code and the library versions. The first process that needs one trains it and
keeps its bytes in the user's cache directory under a key made of exactly those, so later processes load
it (training cost every actor of every run 2-4 CPU-s, most of a digits run's start on 2 cores); each
process also keeps it in memory (functools.cache), so several choices in one actor load once. Set
RAYPIPE_DIGITS_MODELS=train to skip the cache. BLAS and OpenMP are held to one thread while training:
on 2 busy cores their thread pools fight the other actors (an MLP of 128 units took
88 s instead of 0.5 s).

What the classifiers learn from: the clean training digits, and the same digits passed through each
preprocess stage with its default parameters (blur, threshold, deskew). Any classify choice follows any
preprocess choice in a pipeline, so each preprocess output must look familiar to it (trained on clean
digits alone, deskewed clean digits scored 0.78-0.81 instead of 0.95). The generator's degradations
(noise, rotation, blur, shift) are NOT in the training set: they are the distribution shift the
pipeline search is there to repair, and training on them would leave the preprocess choices nothing to
show (with them, "none" nearly caught up with "deskew" on the mixed profile).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.tasks.digits.data import training_part
from raypipe.tasks.digits.imaging import (
    DEFAULT_BLUR_SIGMA,
    DEFAULT_THRESHOLD,
    deskew,
    gaussian_blur,
    threshold,
)

N_FEATURES = 64
RANDOM_STATE = 0
# Chosen among ~20 MLP variants by held-out accuracy under a training budget of ~0.5 CPU-s (so the
# held-out accuracies in tests/test_digits.py are mildly optimistic: the task measures pipelines, not
# models). L-BFGS stops at max_iter: 300 iterations cost 0.65 s for +0.2 points.
LINEAR_PARAMS: dict[str, Any] = {"C": 1.0, "max_iter": 500}
MLP_PARAMS: dict[str, Any] = {
    "hidden_layer_sizes": (32,),
    "solver": "lbfgs",
    "alpha": 0.1,
    "max_iter": 150,
    "random_state": RANDOM_STATE,
}

UPRIGHT_PARAMS: dict[str, Any] = {**MLP_PARAMS, "max_iter": 300}

CACHE_ENV_VAR = "RAYPIPE_DIGITS_MODELS"
# What a trained model depends on besides its parameters: these libraries and this code.
LIBRARIES = ("numpy", "scipy", "scikit-learn", "onnx", "skl2onnx", "onnxruntime")
CODE = ("models.py", "data.py", "imaging.py")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "raypipe" / "digits-models"


@cache
def _build_key() -> str:
    digest = hashlib.sha256()
    for name in LIBRARIES:
        try:
            digest.update(f"{name}={metadata.version(name)};".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=absent;".encode())
    for name in CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    digest.update(repr((LINEAR_PARAMS, MLP_PARAMS, UPRIGHT_PARAMS)).encode())
    return digest.hexdigest()[:16]


def kept(name: str, build: Callable[[], bytes]) -> bytes:
    """The bytes `build` makes, from the cache directory when this exact build made them before; written
    there atomically otherwise (a process that cannot write it just uses what it built)."""
    if os.environ.get(CACHE_ENV_VAR) == "train":
        return build()
    path = _cache_dir() / f"{name}-{_build_key()}.bin"
    try:
        return path.read_bytes()
    except OSError:
        pass
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{name}-", delete=False) as stream:
            stream.write(data)
        os.replace(stream.name, path)  # concurrent actors each write a whole file; the last one stays
    except OSError:
        pass
    return data


def features_of(images: np.ndarray) -> np.ndarray:
    """(n, 8, 8) or (8, 8) uint8 images -> (n, 64) float32 rows on 0-1, what every model takes."""
    return np.asarray(images, dtype=np.float32).reshape(-1, N_FEATURES) / np.float32(255.0)


@cache
def training_set() -> tuple[np.ndarray, np.ndarray]:
    """(features, labels): the training digits as they are and after each default preprocessing."""
    part = training_part()
    variants = [
        part.images,
        np.stack([gaussian_blur(image, DEFAULT_BLUR_SIGMA) for image in part.images]),
        np.stack([threshold(image, DEFAULT_THRESHOLD) for image in part.images]),
        np.stack([deskew(image) for image in part.images]),
    ]
    return features_of(np.concatenate(variants)), np.tile(part.labels, len(variants))


def _fit(model: Any) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    features, labels = training_set()
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # The solvers stop at max_iter before their tolerance: held-out accuracy is what is checked.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(features, labels)


def _train_linear() -> bytes:
    from sklearn.linear_model import LogisticRegression

    return pickle.dumps(_fit(LogisticRegression(**LINEAR_PARAMS)))


def _train_mlp() -> bytes:
    from sklearn.neural_network import MLPClassifier

    return pickle.dumps(_fit(MLPClassifier(**MLP_PARAMS)))


@cache
def linear_model() -> Any:
    """Multinomial logistic regression on the 64 pixels."""
    return pickle.loads(kept("linear", _train_linear))  # our own file, keyed by what made it


@cache
def mlp_model() -> Any:
    """One hidden layer of 32 ReLU units, trained with L-BFGS (~0.45 CPU-s)."""
    return pickle.loads(kept("mlp", _train_mlp))


def _train_upright() -> bytes:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    images = training_part().images
    turned = np.rot90(images, 2, axes=(1, 2))
    features = features_of(np.concatenate([images, turned]))
    labels = np.r_[np.ones(len(images)), np.zeros(len(turned))]
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pickle.dumps(MLPClassifier(**UPRIGHT_PARAMS).fit(features, labels))


@cache
def upright_model() -> Any:
    """P(a digit stands upright rather than turned half round): an MLP like the classifier's, trained on the
    training digits as they are and turned by 180 degrees. Monitoring's feature for an upside-down batch:
    no pixel statistic of a digit (intensity, ink, centre, slant, sharpness) changes when it turns half
    round. On `mixed` digits it is right 80 % of the time (0, 1 and 8 look the same either way up); a
    logistic regression was right 70 % of the time, and its KS test found an all-upside-down batch of 20
    against a reference of 40 in 31 % of draws at level 0.001, against 97 % for the MLP."""
    return pickle.loads(kept("upright", _train_upright))


@cache
def mlp_onnx() -> bytes:
    """The MLP as an ONNX model (skl2onnx): input "X" float32 (n, 64), outputs label and probabilities."""
    return kept("mlp-onnx", _export_mlp)


@cache
def mlp_onnx_int8() -> bytes:
    """The ONNX MLP with int8 weights (dynamic quantization: activations are quantized per call)."""
    return kept("mlp-onnx-int8", _quantize_mlp)


def _export_mlp() -> bytes:
    from skl2onnx import to_onnx

    model = mlp_model()
    sample = np.zeros((1, N_FEATURES), dtype=np.float32)
    # zipmap off: probabilities as one (n, 10) tensor, not a list of dicts per row.
    return to_onnx(model, sample, options={id(model): {"zipmap": False}}).SerializeToString()


def _quantize_mlp() -> bytes:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # else onnxruntime writes ~/.cache/Microsoft
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="raypipe-digits-") as folder:
        source, target = Path(folder) / "mlp.onnx", Path(folder) / "mlp-int8.onnx"
        source.write_bytes(mlp_onnx())
        # quantize_dynamic logs "please consider pre-processing" through the root logger on every call.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        return target.read_bytes()
