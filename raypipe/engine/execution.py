"""The work one item goes through: its frontier of distinct intermediates, stage calls, and per-config traces.

Pure Python and NumPy (no Ray): the runner wraps these in Ray Data operators, and the tests call them
directly. An item's *frontier* holds each distinct intermediate result once, with the configurations it
serves. A stage groups those configurations by their choice for the stage, calls each needed choice
once per frontier entry, and (with reuse on) merges outputs whose bytes are identical — so stage k runs
at most once per unique prefix, and once per distinct input content.

Every call is timed twice: wall-clock time (what it took in this run, under whatever contention; the
`busy_*` columns) and CPU time of the actor's process and its children (what the call itself consumed;
the basis of the configuration's service-time latency, see `raypipe.engine.latency`).
"""

from __future__ import annotations

import pickle
import resource
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from raypipe.engine.cache import StageCache, stage_key
from raypipe.spec import columns


@dataclass(frozen=True)
class ChoiceRef:
    """What an actor needs to build one choice. `cls` is resolved in the driver and travels with the plan,
    so a class registered at run time (in a notebook) works inside the actors too."""

    label: str
    kind: str
    name: str
    cls: type
    params: Mapping[str, Any]
    timeout_s: float = 300.0
    cache_key_base: str = ""  # implementation, version, effective parameters, model and engine versions

    @property
    def warm_up(self) -> bool:
        """Whether its first call in a process is made once untimed (`Stage.warm_up`; True for a class
        that does not say)."""
        return bool(getattr(self.cls, "warm_up", True))


@dataclass
class Entry:
    """One distinct intermediate result of an item and the configuration indices that reached it."""

    output: Any
    configs: list[int]
    digest: str = ""


@dataclass
class StepRecord:
    """What one stage did for one configuration of one item: CPU and wall milliseconds (None when no
    call was made), the error if it failed, whether the output came from the cache, and whether the
    configuration was dropped by the search before this stage (then the item yields no row for it)."""

    cpu_ms: float | None
    wall_ms: float | None
    error: str | None = None
    cached: bool = False
    skipped: bool = False


@dataclass
class ItemState:
    """An item on its way through the pipeline; pickled between Ray Data operators."""

    item_id: str
    truth: dict[str, Any]
    frontier: list[Entry]
    pending: list[Entry] = field(default_factory=list)
    trace: dict[int, list[StepRecord]] = field(default_factory=dict)
    work: dict[str, list[float]] = field(default_factory=dict)

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=5)

    @staticmethod
    def loads(blob: bytes) -> ItemState:
        return pickle.loads(blob)

    def count(self, what: str, stage_index: int, amount: float = 1) -> None:
        self.work[what][stage_index] += amount


WORK_KINDS = ("calls", "reused", "cached", "busy_ms", "cpu_ms")


def content_digest(output: Any) -> str:
    """A hash of an intermediate result's bytes and shape: equal digests mean identical inputs downstream."""
    if isinstance(output, np.ndarray):  # XXH3-128: 20 times BLAKE2b's speed on a megapixel image (0.05 ms)
        h = xxhash.xxh3_128(np.ascontiguousarray(output).data)
        h.update(repr((output.shape, output.dtype.str)).encode())
        return h.hexdigest()
    return xxhash.xxh3_128(pickle.dumps(output)).hexdigest()


def start_item(
    item_id: str,
    data: bytes,
    truth: dict,
    n_configs: int,
    n_stages: int,
    share_prefixes: bool,
    decode: Callable[[bytes], Any],
) -> ItemState:
    """An item's initial state: one entry serving every configuration (or one per config, unshared)."""
    state = ItemState(item_id, truth, [], work={k: [0.0] * n_stages for k in WORK_KINDS})
    state.trace = {c: [] for c in range(n_configs)}
    try:
        decoded = decode(data)
    except Exception as exc:  # noqa: BLE001 - a bad item must not stop the run
        for c in range(n_configs):
            state.trace[c].append(StepRecord(None, None, f"load: {type(exc).__name__}: {exc}"))
        return state
    if isinstance(decoded, np.ndarray):
        decoded.flags.writeable = False  # stages must not modify their input: it is shared by configs
    groups = [list(range(n_configs))] if share_prefixes else [[c] for c in range(n_configs)]
    digest = content_digest(decoded)
    state.frontier = [Entry(decoded, g, digest) for g in groups]
    return state


@dataclass
class CurrentCall:
    """The call a worker is in, for a watchdog that enforces the stage's timeout."""

    key: tuple[str, int, str, str]
    started: float
    timeout_s: float


class StageWorker:
    """Runs the choices of one (stage, resource class) on item states; holds each model once, lazily."""

    def __init__(
        self,
        stage_index: int,
        stage_name: str,
        labels_of_config: list[tuple[str, ...]],
        choices: Mapping[str, ChoiceRef],
        finalize: bool,
        reuse_identical: bool,
        cache: StageCache | None = None,
        warm_up: bool = False,
    ):
        self.stage_index = stage_index
        self.stage_name = stage_name
        self.labels_of_config = labels_of_config  # config index -> its choice label per stage
        self.choices = dict(choices)  # only the labels this worker's resource class runs
        self.finalize = finalize
        self.reuse_identical = reuse_identical
        self.cache = cache
        self._impls: dict[str, Callable] = {}
        self._broken: dict[str, Exception] = {}
        self.warm_up = warm_up
        self._warm: set[str] = set()
        self.current: CurrentCall | None = None
        self.live: Callable[[int], bool] = lambda config: True
        self.timed_out: set[tuple[str, int, str, str]] = set()

    def implementation(self, label: str) -> Callable:
        if label in self._broken:  # its model failed to load: every call of it is that error
            raise self._broken[label]
        if label not in self._impls:
            ref = self.choices[label]
            self._impls[label] = ref.cls(**ref.params)
        return self._impls[label]

    def load_models(self) -> None:
        """Build every choice now (an actor does it before items flow, so loading never competes with the
        calls being timed); a choice that fails to build keeps its error for its calls."""
        for label in self.choices:
            try:
                self.implementation(label)
            except Exception as exc:  # noqa: BLE001 - recorded on that choice's rows, the others run
                self._broken[label] = exc

    def process(self, state: ItemState) -> ItemState:
        for entry in state.frontier:
            for label, configs in self._group_by_choice(state, entry.configs).items():
                state.pending.append(self._run(state, label, entry, configs))
                state.count("reused", self.stage_index, self._distinct_prefixes(configs) - 1)
        if self.finalize:
            state.frontier = self._merge([e for e in state.pending if e.configs])
            state.pending = []
        return state

    def _group_by_choice(self, state: ItemState, configs: list[int]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for c in configs:
            label = self.labels_of_config[c][self.stage_index]
            if label not in self.choices:
                continue
            if not self.live(c):  # dropped by the search while the item was on its way: no row for it
                state.trace[c].append(StepRecord(None, None, skipped=True))
                continue
            groups.setdefault(label, []).append(c)
        return groups

    def _distinct_prefixes(self, configs: list[int]) -> int:
        """Calls prefix sharing alone would make for these configs: reuse saved all but one of them."""
        return len({self.labels_of_config[c][: self.stage_index + 1] for c in configs})

    def _compute(self, state: ItemState, label: str, entry: Entry) -> tuple[Any, StepRecord]:
        """The choice's output for this entry: from the cache when it holds it, else by calling it."""
        ref = self.choices[label]
        entry.digest = entry.digest or content_digest(entry.output)
        key = stage_key(ref.cache_key_base, entry.digest) if self.cache else None
        hit = self.cache.get(key) if key else None
        if hit is not None:
            state.count("cached", self.stage_index)
            return hit.output, StepRecord(hit.cpu_ms, hit.wall_ms, cached=True)
        call_key = (state.item_id, self.stage_index, label, entry.digest)
        if call_key in self.timed_out:
            raise TimeoutError(f"timeout in stage {self.stage_name} after {ref.timeout_s:g} s")
        self.current = CurrentCall(call_key, time.monotonic(), ref.timeout_s)
        try:
            impl = self.implementation(label)
            if self.warm_up and ref.warm_up and label not in self._warm:
                self._warm.add(label)
                _untimed(impl, entry.output)  # a first call pays one-off costs a served item does not
                self.current = CurrentCall(call_key, time.monotonic(), ref.timeout_s)  # its own full timeout
            output, cpu_ms, wall_ms = timed_call(impl, entry.output)
        finally:
            self.current = None
        state.count("calls", self.stage_index)
        state.count("busy_ms", self.stage_index, wall_ms)
        state.count("cpu_ms", self.stage_index, cpu_ms)
        if key:
            self.cache.put(key, output, cpu_ms, wall_ms)
        return output, StepRecord(cpu_ms, wall_ms)

    def _run(self, state: ItemState, label: str, entry: Entry, configs: list[int]) -> Entry:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        try:
            output, record = self._compute(state, label, entry)
        except Exception as exc:  # noqa: BLE001 - recorded on the item's rows; the run goes on
            if isinstance(exc, TimeoutError):  # a hung call costs its whole timeout, in CPU and wall time
                spent = self.choices[label].timeout_s * 1000.0
                record = StepRecord(spent, spent, str(exc))
            else:
                cpu_ms = (cpu_seconds() - cpu_started) * 1000.0
                record = StepRecord(cpu_ms, _ms_since(started), describe_error(label, exc))
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


def _untimed(impl: Callable, value: Any) -> None:
    try:
        impl(value)
    except Exception:  # noqa: BLE001 - the timed call that follows meets and records the same error
        pass


def cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its finished children (Tesseract runs as one)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed_call(impl: Callable, value: Any) -> tuple[Any, float, float]:
    """Call a stage implementation; returns (output, CPU milliseconds, wall milliseconds)."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    output = impl(value)
    wall_ms = (time.perf_counter() - start) * 1000.0
    return output, (cpu_seconds() - cpu_start) * 1000.0, wall_ms


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def describe_error(label: str, exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{label}: {type(exc).__name__}: {exc}{at}"


def finish_item(
    state: ItemState, stage_names: list[str], score: Callable[[Any, Mapping], dict]
) -> list[dict[str, Any]]:
    """One result row per configuration of the item that was not dropped: the task's scores, the error,
    and per stage the CPU and wall milliseconds spent (a failed call counts what it spent)."""
    output_of = {c: e.output for e in state.frontier for c in e.configs}
    rows = []
    for config, steps in state.trace.items():
        if any(s.skipped for s in steps):
            continue
        error = next((s.error for s in steps if s.error), None)
        if error is None and config not in output_of:
            error = "no output (an earlier stage failed)"
        row: dict[str, Any] = {"item_id": state.item_id, "config_index": config}
        padded = steps + [StepRecord(None, None)] * (len(stage_names) - len(steps))
        for name, step in zip(stage_names, padded, strict=False):
            row[columns.stage_ms("cpu", name)] = step.cpu_ms
            row[columns.stage_ms("busy", name)] = step.wall_ms
            row[f"cached_{name}"] = step.cached
        row["cpu_total_ms"] = sum(s.cpu_ms or 0.0 for s in steps)
        row["busy_total_ms"] = sum(s.wall_ms or 0.0 for s in steps)
        row["error"] = error
        row.update(score(None if error else output_of[config], state.truth))
        rows.append(row)
    return rows
