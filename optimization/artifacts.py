"""The models directory's manifest: for each artifact its hash, size, provenance and held-out accuracy."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raypipe.engine.models import MANIFEST_NAME, file_sha256


def read_manifest(models_dir: Path) -> dict[str, Any]:
    """The manifest as a dict ({"artifacts": {file name: entry}}); empty when there is none yet."""
    path = models_dir / MANIFEST_NAME
    if not path.is_file():
        return {"artifacts": {}}
    return json.loads(path.read_text())


def record_artifact(path: Path, **info: Any) -> dict[str, Any]:
    """Add or replace `path`'s entry (hash, size, time, and `info`) in the manifest beside it."""
    entry = {
        "file": path.name,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
    }
    manifest = read_manifest(path.parent)
    manifest["artifacts"][path.name] = entry
    write_json_atomic(path.parent / MANIFEST_NAME, manifest)
    return entry


def artifact_entry(models_dir: Path, name: str) -> dict[str, Any] | None:
    return read_manifest(models_dir)["artifacts"].get(name)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file in the same folder, so a killed process leaves no torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream, indent=2, sort_keys=True, ensure_ascii=False)
        stream.write("\n")
    os.chmod(temporary, 0o644)  # mkstemp makes it private; the manifest is meant to be read by others
    os.replace(temporary, path)


def replace_atomically(write: Any, target: Path) -> Path:
    """Call `write(temporary_path)` then move the result onto `target` (same folder, atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}.tmp{target.suffix}")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target
