"""Process setup for the optimization commands: quiet frameworks, no writes to ~, seeded determinism."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ORT_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def scratch_dir(name: str) -> Path:
    """A per-user folder under the temp dir for caches that frameworks would otherwise put in ~."""
    path = Path(tempfile.gettempdir()) / f"raypipe-{name}-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure_environment() -> None:
    """Silence TensorFlow and ONNX Runtime and keep Keras and EasyOCR out of the home directory.

    Must run before TensorFlow, ONNX Runtime or EasyOCR is imported; values already set are kept.
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("KERAS_HOME", str(scratch_dir("keras")))
    os.environ.setdefault("EASYOCR_MODULE_PATH", str(scratch_dir("easyocr")))


def import_keras(seed: int | None = None) -> tuple[ModuleType, ModuleType]:
    """(tensorflow, keras) with deterministic kernels; seeded (Python, NumPy, TF) when `seed` is given."""
    configure_environment()
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return tf, keras


def preload_torch() -> None:
    """Import torch and torchvision now, before TensorFlow, in a process that may need both.

    Measured here (TF 2.21, torch 2.14.1, torchvision 0.29.1): importing torchvision after TensorFlow
    kills the process with a segmentation fault; the other order works. No-op without torch.
    """
    if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
        raise RuntimeError(
            "TensorFlow is already imported: importing torchvision now would crash this process "
            "(segmentation fault); import torch and torchvision first, or use a separate process"
        )
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        pass
