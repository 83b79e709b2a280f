"""Model files: where they live, the manifest that records their hashes, and ONNX Runtime sessions.

Stages that load model files and the `optimization` package that writes them share these helpers, so
that a file is found, hashed and checked in one way only. A choice's model files are also part of its
stage-cache key (`file_sha256`), so a retrained model can never serve old outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from raypipe.errors import StageError

MODELS_DIR_ENV_VAR = "RAYPIPE_MODELS_DIR"
MANIFEST_NAME = "manifest.json"


def default_models_dir() -> Path:
    """$RAYPIPE_MODELS_DIR, else models/ in the working directory, else models/ beside the raypipe package."""
    if os.environ.get(MODELS_DIR_ENV_VAR):
        return Path(os.environ[MODELS_DIR_ENV_VAR])
    local = Path.cwd() / "models"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[2] / "models"  # raypipe/engine/models.py -> the checkout


def models_dir(model_dir: str | os.PathLike[str] | None) -> Path:
    """The folder a choice's `model_dir` parameter names, or the default one."""
    return Path(model_dir).expanduser() if model_dir else default_models_dir()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks (weights can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def file_identity(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, memoised on (path, size, mtime) so a cache key costs one hash per file."""
    stat = Path(path).stat()
    return _cached_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())  # scans every installed distribution once: ~0.6 s


def engine_versions(*modules: str) -> dict[str, str]:
    """For cache keys: each top-level module's installed distribution and version ("cv2" ->
    "opencv-python-headless==5.0.0"), whichever build provides it (onnxruntime or onnxruntime-gpu,
    tensorflow or tensorflow-cpu); "absent" when none does."""
    from importlib.metadata import version

    found = {}
    for module in modules:
        dists = sorted(set(_distributions().get(module, [])))
        found[module] = ", ".join(f"{d}=={version(d)}" for d in dists) or "absent"
    return found


def manifest_entry(path: Path) -> dict[str, Any] | None:
    """What the models folder's manifest.json records about `path` (None when it records nothing)."""
    manifest = path.parent / MANIFEST_NAME
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("artifacts", {}).get(path.name)


def check_manifest(path: Path, hint: str) -> None:
    """Refuse a model file whose hash differs from the one its folder's manifest recorded."""
    entry = manifest_entry(path)
    if entry and entry.get("sha256") != file_identity(path):
        raise StageError(
            f"{path} does not match the SHA-256 in {path.parent / MANIFEST_NAME} (a stale or partly written "
            f"model): {hint}"
        )


def onnx_session(model: str | os.PathLike[str] | bytes, threads: int = 1, providers: list[str] | None = None):
    """An ONNX Runtime session on a file or on serialized model bytes, with `threads` intra-op threads.

    One intra-op thread by default: an actor reserves one CPU, and ONNX Runtime's default (a spinning
    thread per core) fights the other actors for the cores.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # else onnxruntime writes ~/.cache/Microsoft
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
