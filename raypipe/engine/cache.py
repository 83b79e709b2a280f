"""A persistent, content-addressed cache of stage outputs, shared by every actor on a machine.

The key covers everything that decides a call's output: the implementation (import path and `version`),
its effective parameters with defaults filled in, what the implementation says identifies its models and
engines (`cache_identity`: model file hashes, library versions, the Tesseract binary and its language
data), and the digest of the input's bytes. The value holds the output in a plain format (`engine.codec`:
no pickles, so a shared cache folder cannot run code) and the CPU and wall milliseconds the call took,
with the hardware and time they were measured on: a run on other hardware measures again.

The store is diskcache (SQLite; safe across processes) with a size bound and least-recently-stored
eviction; raypipe stores only bytes in it and refuses to unpickle anything it finds there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.engine import codec
from raypipe.engine.hardware import hardware_id

DEFAULT_DIR = Path(".raypipe") / "cache"
DEFAULT_SIZE_GB = 4.0


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYPIPE_CACHE_DIR", DEFAULT_DIR)).resolve()


@dataclass(frozen=True)
class CacheConfig:
    """Where the cache lives and how large it may grow; travels to the actors."""

    directory: str
    size_limit_bytes: int = int(DEFAULT_SIZE_GB * 2**30)


@dataclass(frozen=True)
class CachedCall:
    """A stored stage call: its output and what it cost where it was measured."""

    output: Any
    cpu_ms: float
    wall_ms: float
    hardware: str
    measured_at: float


def identity_key(parts: Any) -> str:
    """A stable hash of JSON-able parts (the choice's identity, computed once per choice)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=20).hexdigest()


def stage_key(choice_identity: str, input_digest: str) -> str:
    """The cache key of one stage call: the choice's identity and its input's digest."""
    return hashlib.blake2b(f"{choice_identity}|{input_digest}".encode(), digest_size=20).hexdigest()


def _no_pickle_disk():
    import diskcache

    class NoPickleDisk(diskcache.Disk):
        """diskcache's storage, refusing to unpickle: raypipe stores bytes only."""

        def fetch(self, mode, filename, value, read):
            if mode == diskcache.core.MODE_PICKLE:
                raise codec.CodecError("the cache holds a pickled value raypipe did not write; refusing it")
            return super().fetch(mode, filename, value, read)

    return NoPickleDisk


class StageCache:
    """Get and put stage calls by key; opened lazily so the object pickles to actors."""

    def __init__(self, config: CacheConfig):
        self.config = config
        self._store = None
        self.hardware = hardware_id()

    def __getstate__(self) -> dict:
        return {"config": self.config, "_store": None}

    def __setstate__(self, state: dict) -> None:
        self.config, self._store = state["config"], None
        self.hardware = hardware_id()  # the actor's machine, not the driver's

    @property
    def store(self):
        if self._store is None:
            import diskcache

            Path(self.config.directory).mkdir(parents=True, exist_ok=True)
            self._store = diskcache.Cache(
                self.config.directory,
                size_limit=self.config.size_limit_bytes,
                eviction_policy="least-recently-stored",
                disk=_no_pickle_disk(),
            )
        return self._store

    def get(self, key: str) -> CachedCall | None:
        """The stored call, or None when absent, unreadable, or measured on other hardware."""
        try:
            blob = self.store.get(key, default=None, retry=True)
            if not isinstance(blob, bytes):
                return None
            output, meta = codec.decode(blob)
        except (codec.CodecError, ValueError, KeyError):
            return None
        if meta.get("hardware") != self.hardware:
            return None  # its latency belongs to another machine: measure again
        return CachedCall(output, meta["cpu_ms"], meta["wall_ms"], meta["hardware"], meta["measured_at"])

    def put(self, key: str, output: Any, cpu_ms: float, wall_ms: float) -> bool:
        """Store a call; False when its output is not plain (then it is simply not cached)."""
        meta = {"cpu_ms": cpu_ms, "wall_ms": wall_ms, "hardware": self.hardware, "measured_at": time.time()}
        blob = codec.encode(output, meta)
        if blob is None:
            return False
        self.store.set(key, blob, retry=True)
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "directory": self.config.directory,
            "entries": len(self.store),
            "bytes": self.store.volume(),
            "size_limit_bytes": self.config.size_limit_bytes,
        }

    def clear(self) -> int:
        return self.store.clear(retry=True)
