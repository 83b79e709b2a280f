"""A persistent, content-addressed cache of stage outputs, shared by every actor on a machine.

A key is the implementation (its import path and `version`), its parameters, and the digest of the
input's bytes; the value is the output and the latency measured when it was computed, so latency
results stay true when a later run reads it back. The store is diskcache (SQLite; safe across
processes) with a size bound and least-recently-stored eviction.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(".raypipe") / "cache"
DEFAULT_SIZE_GB = 4.0


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYPIPE_CACHE_DIR", DEFAULT_DIR)).resolve()


@dataclass(frozen=True)
class CacheConfig:
    """Where the cache lives and how large it may grow; travels to the actors."""

    directory: str
    size_limit_bytes: int = int(DEFAULT_SIZE_GB * 2**30)


def stage_key(target: str, version: str, params: dict[str, Any], input_digest: str) -> str:
    """The cache key of one stage call."""
    blob = json.dumps([target, version, params], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(f"{blob}|{input_digest}".encode(), digest_size=20).hexdigest()


class StageCache:
    """Get and put (output, latency_ms) by key; opened lazily so the object pickles to actors."""

    def __init__(self, config: CacheConfig):
        self.config = config
        self._store = None

    def __getstate__(self) -> dict:
        return {"config": self.config, "_store": None}

    @property
    def store(self):
        if self._store is None:
            import diskcache

            Path(self.config.directory).mkdir(parents=True, exist_ok=True)
            self._store = diskcache.Cache(
                self.config.directory,
                size_limit=self.config.size_limit_bytes,
                eviction_policy="least-recently-stored",
            )
        return self._store

    def get(self, key: str) -> tuple[Any, float] | None:
        return self.store.get(key, default=None, retry=True)

    def put(self, key: str, output: Any, ms: float) -> None:
        self.store.set(key, (output, ms), retry=True)

    def stats(self) -> dict[str, Any]:
        return {
            "directory": self.config.directory,
            "entries": len(self.store),
            "bytes": self.store.volume(),
            "size_limit_bytes": self.config.size_limit_bytes,
        }

    def clear(self) -> int:
        return self.store.clear(retry=True)
