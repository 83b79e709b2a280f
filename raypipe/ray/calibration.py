"""Calibration: sampled (item, configuration) pairs timed one call at a time, alone, after the run's pools are
gone, so that latency is a property of the configuration and not of how busy the run was."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray
from ray.util.placement_group import placement_group, remove_placement_group

from raypipe.engine.execution import ChoiceRef, CurrentCall, timed_call
from raypipe.engine.plan import OperatorPlan
from raypipe.ray.cluster import alive_nodes, cluster_resources, driver_key, on_driver_node
from raypipe.ray.pipeline import ACTOR_START_S, await_exit, run_control, watch_calls
from raypipe.spec.task import Task


class Calibrator:
    """Runs sampled (item, configuration) pairs one call at a time, alone, timing every stage call.

    The stages' timeouts hold here as in the run: a watchdog thread reports a call past its timeout to
    RunControl and ends the actor (the call cannot be interrupted); the driver starts another, which records
    that call as a timeout instead of making it again, and goes on with the remaining pairs.

    One calibrator serves one run at a time (`prepare`); between runs of one driver it is kept, its models
    let go (`forget`), so that the next run's calibration does not pay for a process and its imports again.
    """

    def __init__(self, control: Any):
        self.control = control
        self.task: Any = None  # the run's Task, from `prepare`
        self.choices: list[dict[str, ChoiceRef]] = []
        self.stage_names: list[str] = []
        self.timed_out: set[tuple[str, int, str, str]] = set()
        self.impls: dict[tuple[int, str], Any] = {}
        self.warm: set[tuple[int, str]] = set()
        self.outputs: dict[tuple[str, ...], Any] = {}  # the current item's outputs, by prefix of choices
        self.outputs_of = ""  # that item's id
        self.reported: set[tuple[str, int, str, str]] = set()  # timeouts already given their row
        self.current: CurrentCall | None = None
        threading.Thread(
            target=watch_calls, args=(self, control), daemon=True, name="raypipe-timeout"
        ).start()

    def prepare(
        self,
        task: Task,
        choices: list[dict[str, ChoiceRef]],
        stage_names: list[str],
        timed_out: set[tuple[str, int, str, str]],
    ) -> None:
        """Take a run's task, choices and known timeouts; its models load at their first call (the last
        run's were let go by `forget`)."""
        self.forget()
        self.task, self.choices, self.stage_names, self.timed_out = task, choices, stage_names, timed_out

    def forget(self) -> None:
        """Let the last run's models and outputs go (the process and its imports stay)."""
        self.impls.clear()
        self.warm.clear()
        self.outputs.clear()
        self.reported.clear()
        gc.collect()

    def run_pair(self, item_id: str, data: bytes, config_index: int, labels: tuple[str, ...]) -> list[dict]:
        """One calibration row per stage call of the pair's `labels` (a configuration's first stages), up to
        its first failure (a failing sample is no sample) or timeout (recorded once: `error` says so, and it
        costs its whole timeout). The pair starts from the longest prefix of `labels` an earlier pair of the
        same item computed (`latency.calibration_plan`); those calls are not made again."""
        if item_id != self.outputs_of:
            self.outputs.clear()
            self.outputs_of = item_id
        start = max((j for j in range(len(labels) + 1) if labels[:j] in self.outputs), default=0)
        try:
            value = self.outputs[labels[:start]] if start else self.task.decode(data)
        except Exception:  # noqa: BLE001 - a corrupt item is no sample of a stage's time
            return []
        rows = []
        for k in range(start, len(labels)):
            label = labels[k]
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
                if key not in self.reported:
                    self.reported.add(key)
                    rows.append(
                        {**row, "wall_ms": timeout_s * 1000.0, "cpu_ms": timeout_s * 1000.0, "error": error}
                    )
                break
            try:
                value, cpu_ms, wall_ms = self._timed(key, k, label, value)
            except Exception:  # noqa: BLE001 - a failing sample is simply not a sample
                break
            self.outputs[labels[: k + 1]] = value
            rows.append({**row, "wall_ms": wall_ms, "cpu_ms": cpu_ms, "error": None})
        return rows

    def _timed(
        self, key: tuple[str, int, str, str], k: int, label: str, value: Any
    ) -> tuple[Any, float, float]:
        """The call, timed; a choice's first call pays one-off costs: it is made first, untimed (unless the
        choice says it has none, `Stage.warm_up`). Each of the two calls has the whole timeout."""
        ref = self.choices[k][label]
        impl, timeout_s = self._impl(k, label), ref.timeout_s
        try:
            if ref.warm_up and (k, label) not in self.warm:
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


# A calibrator and its RunControl kept between the runs of one driver, by (job, node): single-node CPU runs
# only (a GPU calibrator would hold its GPU between runs; on a cluster, the driver's node may change).
_KEPT: dict[tuple[str, str], tuple[Any, Any]] = {}


def calibrate(
    task: Task,
    plans: list[OperatorPlan],
    stage_names: list[str],
    inputs: list[tuple[str, bytes]],
    pairs: list[tuple[str, int, tuple[str, ...]]],
    stream: list[int] | None = None,
    say: Callable[[str], None] | None = None,
) -> pa.Table:
    """Time the sampled pairs in one actor while nothing else runs, one pair per call; an actor ended by a
    timeout is replaced, and the pair it was on is tried again by the next.

    Nothing is timed before the processes of the run's stream on this node (`stream`, from
    `pipeline.stream_processes`) have exited: Ray Data ends its pools in the background after the last
    batch, and a calibrator's first calls were timed beside their exits. The calibrator's own start overlaps
    them; `say` tells when some still run after `pipeline.POOL_EXIT_S`.

    On one node without GPUs the calibrator outlives the run (for the driver's next run: a second run in a
    process, a notebook, a benchmark) and reserves no CPU while idle; while it times, a one-CPU placement
    group holds its CPU, as its own reservation did."""
    choices: list[dict[str, ChoiceRef]] = [{} for _ in stage_names]
    for p in plans:
        choices[p.stage_index].update(p.choices)
    gpus = 1 if cluster_resources()[1] and any(p.resources.num_gpus for p in plans) else 0
    keep = gpus == 0 and alive_nodes() == 1
    key = driver_key()
    data, rows, timed_out = dict(inputs), [], set()
    run = (task, choices, stage_names, timed_out)
    actor, control = _kept(key, run) if keep else (None, None)
    prepared = actor is not None
    if control is None:
        control = run_control()  # the driver's own, which its runs' streams use too: one actor fewer to start
    start = (
        ray.remote(num_cpus=0 if keep else 1, num_gpus=gpus, max_restarts=0)(Calibrator)
        .options(scheduling_strategy=on_driver_node())
        .remote
    )
    actor = actor or start(control)  # its start overlaps the stream's exits
    running = await_exit(stream or [])
    if running and say:
        say(f"{running} of the run's actor processes still exit: calibration times beside them")
    hold = _hold_cpu() if keep else None
    try:
        for item_id, config_index, labels in pairs:
            while True:
                actor = actor or start(control)
                if not prepared:  # an actor runs its calls in order: this one before its pairs
                    actor.prepare.remote(task, choices, stage_names, timed_out)
                    prepared = True
                try:
                    rows += ray.get(actor.run_pair.remote(item_id, data[item_id], config_index, labels))
                    break
                except ray.exceptions.RayActorError:
                    actor, prepared, known = None, False, len(timed_out)
                    timed_out = set(ray.get(control.snapshot.remote())[1])
                    if len(timed_out) == known:  # it died of something other than a timeout: no sample
                        break
    finally:
        if hold is not None:
            remove_placement_group(hold)
        if keep and actor is not None:
            actor.forget.remote()
            _KEPT[key] = (actor, control)
        elif actor is not None:
            ray.kill(actor)  # not its RunControl: the driver keeps that one (`pipeline.run_control`)
    return pa.Table.from_pylist(rows)


def _kept(key: tuple[str, str], run: tuple) -> tuple[Any, Any]:
    """The calibrator kept from this driver's last run, prepared for `run` (`Calibrator.prepare`'s
    arguments) with its RunControl cleared, or (None, None) when there is none or it died since."""
    actor, control = _KEPT.pop(key, (None, None))
    if actor is None:
        return None, None
    try:
        ray.get([control.clear.remote(), actor.prepare.remote(*run)], timeout=60)
    except (ray.exceptions.RayError, TimeoutError):  # it died between runs: start afresh
        ray.kill(actor)
        return None, None
    return actor, control


def _hold_cpu() -> Any:
    """One CPU of the driver's node held while the kept calibrator times (it reserves none of its own)."""
    group = placement_group([{"CPU": 1}])
    group.wait(ACTOR_START_S)
    return group
