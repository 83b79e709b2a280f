"""The work one item goes through: its frontier of distinct images, stage calls, and per-config traces.

Pure Python and NumPy (no Ray): the runner wraps these in Ray Data operators, and the tests call them
directly. An item's *frontier* holds each distinct intermediate image once, with the configurations it
serves. A stage groups those configurations by their choice for the stage, calls each needed choice
once per frontier entry, and (with reuse on) merges outputs whose bytes are identical — so stage k runs
at most once per unique prefix, and once per distinct input content.
"""

from __future__ import annotations

import hashlib
import pickle
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raypipe.cache import StageCache, stage_key
from raypipe.registry import resolve
from raypipe.stages.base import OcrResult


@dataclass
class Entry:
    """One distinct intermediate result of an item and the configuration indices that reached it."""

    output: Any
    configs: list[int]
    digest: str = ""


@dataclass
class StepRecord:
    """What one stage did for one configuration of one item."""

    ms: float | None
    error: str | None = None


@dataclass
class ItemState:
    """An item on its way through the pipeline; pickled between Ray Data operators."""

    item_id: str
    truth: dict[str, str | None]
    frontier: list[Entry]
    pending: list[Entry] = field(default_factory=list)
    trace: dict[int, list[StepRecord]] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)
    busy_ms: list[float] = field(default_factory=list)

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=5)

    @staticmethod
    def loads(blob: bytes) -> ItemState:
        return pickle.loads(blob)


@dataclass(frozen=True)
class ChoiceRef:
    """What an actor needs to build one choice: registry kind, implementation name and parameters."""

    kind: str
    name: str
    params: Mapping[str, Any]


def content_digest(output: Any) -> str:
    """A hash of an intermediate result's bytes and shape: equal digests mean identical inputs downstream."""
    if isinstance(output, np.ndarray):
        h = hashlib.blake2b(np.ascontiguousarray(output).data, digest_size=16)
        h.update(repr((output.shape, output.dtype.str)).encode())
        return h.hexdigest()
    return hashlib.blake2b(pickle.dumps(output), digest_size=16).hexdigest()


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 array; raises ValueError for empty, corrupt or truncated data."""
    import cv2

    if not data:
        raise ValueError("empty image")
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise ValueError("corrupt or truncated image (cannot decode)")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def start_item(
    item_id: str, image: bytes, truth: dict, n_configs: int, n_stages: int, share_prefixes: bool
) -> ItemState:
    """An item's initial state: one entry serving every configuration (or one per config, unshared)."""
    state = ItemState(item_id, truth, [], calls=[0] * n_stages, reused=[0] * n_stages)
    state.cached, state.busy_ms = [0] * n_stages, [0.0] * n_stages
    state.trace = {c: [] for c in range(n_configs)}
    try:
        decoded = decode_image(image)
    except Exception as exc:  # noqa: BLE001 - a bad item must not stop the run
        for c in range(n_configs):
            state.trace[c].append(StepRecord(None, f"load: {exc}"))
        return state
    decoded.flags.writeable = False  # stages must not modify their input: it is shared by configs
    groups = [list(range(n_configs))] if share_prefixes else [[c] for c in range(n_configs)]
    digest = content_digest(decoded)
    state.frontier = [Entry(decoded, g, digest) for g in groups]
    return state


class StageWorker:
    """Runs the choices of one (stage, resource class) on item states; holds each model once, lazily."""

    def __init__(
        self,
        stage_index: int,
        labels_of_config: list[tuple[str, ...]],
        choices: Mapping[str, ChoiceRef],
        finalize: bool,
        reuse_identical: bool,
        call: Callable[[str, Callable, Any], tuple[Any, float]] | None = None,
        cache: StageCache | None = None,
    ):
        self.stage_index = stage_index
        self.labels_of_config = labels_of_config  # config index -> its choice label per stage
        self.choices = dict(choices)  # only the labels this worker's resource class runs
        self.finalize = finalize
        self.reuse_identical = reuse_identical
        self._impls: dict[str, Callable] = {}
        self._call = call or timed_call
        self.cache = cache

    def implementation(self, label: str) -> Callable:
        if label not in self._impls:
            ref = self.choices[label]
            self._impls[label] = resolve(ref.kind, ref.name)(**ref.params)
        return self._impls[label]

    def process(self, state: ItemState) -> ItemState:
        for entry in state.frontier:
            for label, configs in self._group_by_choice(entry.configs).items():
                state.pending.append(self._run(state, label, entry, configs))
                state.reused[self.stage_index] += self._distinct_prefixes(configs) - 1
        if self.finalize:
            state.frontier = self._merge([e for e in state.pending if e.configs])
            state.pending = []
        return state

    def _group_by_choice(self, configs: list[int]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for c in configs:
            label = self.labels_of_config[c][self.stage_index]
            if label in self.choices:
                groups.setdefault(label, []).append(c)
        return groups

    def _distinct_prefixes(self, configs: list[int]) -> int:
        """Calls prefix sharing alone would make for these configs: reuse saved all but one of them."""
        return len({self.labels_of_config[c][: self.stage_index + 1] for c in configs})

    def _cache_key(self, label: str, entry: Entry) -> str:
        ref = self.choices[label]
        cls = resolve(ref.kind, ref.name)
        target = f"{cls.__module__}:{cls.__qualname__}"
        entry.digest = entry.digest or content_digest(entry.output)
        return stage_key(target, str(getattr(cls, "version", "1")), dict(ref.params), entry.digest)

    def _compute(self, state: ItemState, label: str, entry: Entry) -> tuple[Any, float]:
        """The choice's output for this entry: from the cache when it holds it, else by calling it."""
        key = self._cache_key(label, entry) if self.cache else None
        hit = self.cache.get(key) if key else None
        if hit is not None:
            state.cached[self.stage_index] += 1
            return hit
        output, ms = self._call(label, self.implementation(label), entry.output)
        state.calls[self.stage_index] += 1
        state.busy_ms[self.stage_index] += ms
        if key:
            self.cache.put(key, output, ms)
        return output, ms

    def _run(self, state: ItemState, label: str, entry: Entry, configs: list[int]) -> Entry:
        try:
            output, ms = self._compute(state, label, entry)
            record = StepRecord(ms)
        except Exception as exc:  # noqa: BLE001 - recorded on the item's rows; the run goes on
            record = StepRecord(None, _describe(label, exc))
            for c in configs:
                state.trace[c].append(record)
            return Entry(None, [])
        for c in configs:
            state.trace[c].append(record)
        if isinstance(output, np.ndarray):
            output.flags.writeable = False
        return Entry(output, list(configs))

    def _merge(self, entries: list[Entry]) -> list[Entry]:
        if not self.reuse_identical:
            return entries
        merged: dict[str, Entry] = {}
        for entry in entries:
            entry.digest = content_digest(entry.output)
            if entry.digest in merged:
                merged[entry.digest].configs.extend(entry.configs)
            else:
                merged[entry.digest] = entry
        return list(merged.values())


def timed_call(label: str, impl: Callable, image: Any) -> tuple[Any, float]:
    """Call a stage implementation, timing it with perf_counter; returns (output, milliseconds)."""
    start = time.perf_counter()
    output = impl(image)
    return output, (time.perf_counter() - start) * 1000.0


def _describe(label: str, exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{label}: {type(exc).__name__}: {exc}{at}"


def prediction_text(output: Any) -> str:
    """The text an OCR-like last stage produced (an OcrResult, a string, or anything with `.text`)."""
    if isinstance(output, OcrResult) or hasattr(output, "text"):
        return output.text
    return output if isinstance(output, str) else str(output)


def finish_item(
    state: ItemState, stage_names: list[str], score: Callable[[str, Mapping], dict]
) -> list[dict[str, Any]]:
    """One result row per configuration of the item: prediction, per-stage latency, error, metrics."""
    text_of = {c: prediction_text(e.output) for e in state.frontier for c in e.configs}
    rows = []
    for config, steps in state.trace.items():
        error = next((s.error for s in steps if s.error), None)
        if error is None and config not in text_of:
            error = "no output (an earlier stage failed)"
        text = "" if error else text_of[config]
        row: dict[str, Any] = {"item_id": state.item_id, "config_index": config, "prediction": text}
        for name, step in zip(stage_names, steps + [StepRecord(None)] * len(stage_names), strict=False):
            row[f"latency_{name}_ms"] = step.ms
        row["latency_total_ms"] = None if error else sum(s.ms for s in steps)
        row["error"] = error
        row.update(score(text, state.truth))
        rows.append(row)
    return rows
