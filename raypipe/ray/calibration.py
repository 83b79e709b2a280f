"""Calibration: sampled (item, configuration) pairs timed one call at a time, alone, after the run's pools are
gone, so that latency is a property of the configuration and not of how busy the run was."""

from __future__ import annotations

import threading
import time
from typing import Any

import pyarrow as pa
import ray

from raypipe.engine.execution import ChoiceRef, CurrentCall, timed_call
from raypipe.engine.plan import OperatorPlan
from raypipe.ray.cluster import cluster_resources, on_driver_node
from raypipe.ray.pipeline import RunControl, watch_calls
from raypipe.spec.task import Task


class Calibrator:
    """Runs sampled (item, configuration) pairs one call at a time, alone, timing every stage call.

    The stages' timeouts hold here as in the run: a watchdog thread reports a call past its timeout to
    RunControl and ends the actor (the call cannot be interrupted); the driver starts another, which records
    that call as a timeout instead of making it again, and goes on with the remaining pairs.
    """

    def __init__(
        self,
        control: Any,
        task: Task,
        choices: list[dict[str, ChoiceRef]],
        stage_names: list[str],
        timed_out: set[tuple[str, int, str, str]],
    ):
        self.control, self.task, self.choices, self.stage_names = control, task, choices, stage_names
        self.timed_out = timed_out
        self.impls: dict[tuple[int, str], Any] = {}
        self.warm: set[tuple[int, str]] = set()
        self.current: CurrentCall | None = None
        threading.Thread(
            target=watch_calls, args=(self, control), daemon=True, name="raypipe-timeout"
        ).start()

    def run_pair(self, item_id: str, data: bytes, config_index: int, labels: tuple[str, ...]) -> list[dict]:
        """One calibration row per stage call of the pair, up to its first failure (a failing sample is
        no sample) or timeout (recorded: `error` says so, and it costs its whole timeout)."""
        try:
            value = self.task.decode(data)
        except Exception:  # noqa: BLE001 - a corrupt item is no sample of a stage's time
            return []
        rows = []
        for k, label in enumerate(labels):
            key = (item_id, k, label, "/".join(labels[:k]))
            row = {
                "item_id": item_id,
                "config_index": config_index,
                "stage": self.stage_names[k],
                "choice": label,
            }
            if key in self.timed_out:
                timeout_s = self.choices[k][label].timeout_s
                error = f"timeout in stage {self.stage_names[k]} after {timeout_s:g} s"
                rows.append(
                    {**row, "wall_ms": timeout_s * 1000.0, "cpu_ms": timeout_s * 1000.0, "error": error}
                )
                break
            try:
                value, cpu_ms, wall_ms = self._timed(key, k, label, value)
            except Exception:  # noqa: BLE001 - a failing sample is simply not a sample
                break
            rows.append({**row, "wall_ms": wall_ms, "cpu_ms": cpu_ms, "error": None})
        return rows

    def _timed(
        self, key: tuple[str, int, str, str], k: int, label: str, value: Any
    ) -> tuple[Any, float, float]:
        """The call, timed; a choice's first call pays one-off costs: it is made first, untimed. Each of the
        two calls has the whole timeout."""
        impl, timeout_s = self._impl(k, label), self.choices[k][label].timeout_s
        try:
            if (k, label) not in self.warm:
                self.warm.add((k, label))
                self.current = CurrentCall(key, time.monotonic(), timeout_s)
                impl(value)
            self.current = CurrentCall(key, time.monotonic(), timeout_s)
            return timed_call(impl, value)
        finally:
            self.current = None

    def _impl(self, k: int, label: str) -> Any:
        if (k, label) not in self.impls:
            ref = self.choices[k][label]
            self.impls[(k, label)] = ref.cls(**ref.params)
        return self.impls[(k, label)]


def calibrate(
    task: Task,
    plans: list[OperatorPlan],
    stage_names: list[str],
    inputs: list[tuple[str, bytes]],
    pairs: list[tuple[str, int, tuple[str, ...]]],
) -> pa.Table:
    """Time the sampled pairs in one actor while nothing else runs (after the run's pools are gone), one pair
    per call; an actor ended by a timeout is replaced, and the pair it was on is tried again by the next."""
    choices: list[dict[str, ChoiceRef]] = [{} for _ in stage_names]
    for p in plans:
        choices[p.stage_index].update(p.choices)
    gpus = 1 if cluster_resources()[1] and any(p.resources.num_gpus for p in plans) else 0
    control = RunControl.options(scheduling_strategy=on_driver_node()).remote()
    start = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(Calibrator).remote
    data, rows, timed_out, actor = dict(inputs), [], set(), None
    try:
        for item_id, config_index, labels in pairs:
            while True:
                actor = actor or start(control, task, choices, stage_names, timed_out)
                try:
                    rows += ray.get(actor.run_pair.remote(item_id, data[item_id], config_index, labels))
                    break
                except ray.exceptions.RayActorError:
                    actor, known = None, len(timed_out)
                    timed_out = set(ray.get(control.snapshot.remote())[1])
                    if len(timed_out) == known:  # it died of something other than a timeout: no sample
                        break
    finally:
        for handle in (actor, control):
            if handle is not None:
                ray.kill(handle)
    return pa.Table.from_pylist(rows)
