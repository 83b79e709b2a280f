"""The per-item execution logic without Ray: prefix sharing, identical-input reuse, errors, timing, rows."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from raypipe.engine.cache import CacheConfig, StageCache
from raypipe.engine.execution import StageWorker, finish_item, start_item, timed_call
from raypipe.engine.plan import choice_ref
from raypipe.spec.registry import resolve_task
from raypipe.spec.space import expand_configurations
from raypipe.spec.validation import parse_spec
from raypipe.tasks.idcard.stages.imaging import decode_image
from tests.plugin_stages import Counting

T = "tests.plugin_stages:"


def toy_spec(first: list[str], second: list[str], **extra) -> dict:
    return {
        "name": "toy",
        "task": "idcard",
        "stages": [
            {"name": "a", "kind": "enhance", "choices": [{"name": T + n, "label": n} for n in first]},
            {"name": "b", "kind": "enhance", "choices": [{"name": T + n, "label": n} for n in second]},
            {"name": "ocr", "choices": [{"name": T + "EchoOCR", "label": "echo"}]},
        ],
        "dataset": {"source": "unused.parquet"},
        **extra,
    }


def png(shape=(20, 30, 3), value=100) -> bytes:
    return cv2.imencode(".png", np.full(shape, value, np.uint8))[1].tobytes()


def score_text(output, truth) -> dict:
    return {"prediction": "" if output is None else output.text}


def run_item(
    raw: dict, share: bool = True, reuse: bool = True, image: bytes | None = None, cache=None, live=None
):
    spec = parse_spec(raw)
    task = resolve_task(spec.task)
    configs = expand_configurations(spec)
    labels = [c.labels for c in configs]
    Counting.calls.clear()
    state = start_item("i1", png() if image is None else image, {}, len(configs), 3, share, decode_image)
    for k, stage in enumerate(spec.stages):
        refs = {c.key: choice_ref(stage, c, task)[0] for c in stage.choices}
        worker = StageWorker(k, stage.name, labels, refs, finalize=True, reuse_identical=reuse, cache=cache)
        if live is not None:
            worker.live = live
        state = worker.process(state)
    rows = finish_item(state, [s.name for s in spec.stages], score_text)
    return state, rows, dict(Counting.calls), configs


def test_each_stage_runs_once_per_unique_prefix():
    state, rows, calls, configs = run_item(
        toy_spec(["Identity", "Brighten"], ["Brighten", "Invert"]), reuse=False
    )
    assert len(configs) == 4 and len(rows) == 4
    assert state.work["calls"] == [2, 4, 4]
    assert calls == {"Identity": 1, "Brighten": 3, "Invert": 2, "EchoOCR": 4}


def test_an_actor_makes_a_first_call_untimed_only_for_choices_with_one_off_costs():
    """StageActor's workers warm each choice up once (its first call, untimed), except a choice that says
    its first call costs what the others do (`Stage.warm_up`): that one is called once per input."""
    spec = parse_spec(toy_spec(["Invert", "ColdInvert"], ["Identity"]))
    task = resolve_task(spec.task)
    labels = [c.labels for c in expand_configurations(spec)]
    workers = []
    for k, stage in enumerate(spec.stages):
        refs = {c.key: choice_ref(stage, c, task)[0] for c in stage.choices}
        workers.append(StageWorker(k, stage.name, labels, refs, True, True, warm_up=True))  # as StageActor
    Counting.calls.clear()
    for item, value in (("i1", 100), ("i2", 50)):
        state = start_item(item, png(value=value), {}, len(labels), 3, True, decode_image)
        for worker in workers:
            state = worker.process(state)
    # Invert and ColdInvert give the same bytes: the stages after them run once an item
    assert Counting.calls == {"Invert": 2 + 1, "ColdInvert": 2, "Identity": 2 + 1, "EchoOCR": 2 + 1}


def test_without_sharing_every_configuration_pays_every_stage():
    state, rows, _, _ = run_item(
        toy_spec(["Identity", "Brighten"], ["Brighten", "Invert"]), share=False, reuse=False
    )
    assert state.work["calls"] == [4, 4, 4]
    shared_rows = run_item(toy_spec(["Identity", "Brighten"], ["Brighten", "Invert"]))[1]
    assert sorted(r["prediction"] for r in rows) == sorted(r["prediction"] for r in shared_rows)


def test_identical_inputs_are_computed_once_and_attributed_to_every_config():
    # Identity and CopyOf give byte-identical images: stage b and the OCR see one input, not two.
    state, rows, calls, configs = run_item(toy_spec(["Identity", "CopyOf"], ["Brighten", "Invert"]))
    assert state.work["calls"] == [2, 2, 2]
    assert state.work["reused"] == [0, 2, 2]  # prefix sharing alone would call b and ocr 4 times each
    assert calls["Brighten"] == 1 and calls["Invert"] == 1
    by_b: dict[str, set] = {}
    for row in rows:
        by_b.setdefault(configs[row["config_index"]].labels[1], set()).add(row["prediction"])
    assert all(len(preds) == 1 for preds in by_b.values())
    brighten = [r for r in rows if configs[r["config_index"]].labels[1] == "Brighten"]
    assert len({r["busy_b_ms"] for r in brighten}) == 1  # one call's time, attributed to both configs
    _, _, calls_off, _ = run_item(toy_spec(["Identity", "CopyOf"], ["Brighten", "Invert"]), reuse=False)
    assert calls_off["Brighten"] == 2 and calls_off["EchoOCR"] == 4


def test_a_failing_choice_records_its_error_its_time_and_the_others_go_on():
    _, rows, _, configs = run_item(toy_spec(["Identity", "Explode"], ["Brighten"]))
    by_a = {configs[r["config_index"]].labels[0]: r for r in rows}
    assert by_a["Explode"]["error"].startswith("Explode: RuntimeError: kaboom")
    assert by_a["Explode"]["prediction"] == ""
    # a failed call counts what it spent; the stages after it never ran
    assert by_a["Explode"]["busy_a_ms"] is not None and by_a["Explode"]["busy_b_ms"] is None
    assert by_a["Explode"]["cpu_total_ms"] == by_a["Explode"]["cpu_a_ms"]
    assert by_a["Identity"]["error"] is None and by_a["Identity"]["prediction"].startswith("mean ")


@pytest.mark.parametrize("blob", [b"", b"not an image", png()[:40]], ids=["empty", "garbage", "truncated"])
def test_bad_images_give_error_rows_for_every_configuration(blob):
    _, rows, calls, configs = run_item(toy_spec(["Identity"], ["Brighten", "Invert"]), image=blob)
    assert len(rows) == len(configs) == 2
    assert all(r["error"].startswith("load: ValueError") for r in rows)
    assert calls == {}


def test_stages_cannot_modify_their_shared_input():
    with pytest.raises(ValueError, match="corrupt or truncated"):
        decode_image(b"xyz")
    state = start_item("i", png(), {}, 2, 1, True, decode_image)
    with pytest.raises(ValueError, match="read-only"):
        state.frontier[0].output[0, 0, 0] = 1


def test_dropped_configurations_get_no_row_and_cost_nothing():
    spec = toy_spec(["Identity", "Brighten"], ["Invert"])
    configs = expand_configurations(parse_spec(spec))
    dropped = next(i for i, c in enumerate(configs) if c.labels[0] == "Brighten")
    state, rows, calls, _ = run_item(spec, live=lambda c: c != dropped)
    assert [r["config_index"] for r in rows] == [i for i in range(len(configs)) if i != dropped]
    assert "Brighten" not in calls and state.work["calls"] == [1, 1, 1]


def test_a_timed_out_call_becomes_an_error_row_costing_its_timeout():
    spec = toy_spec(["Identity"], ["Brighten"])
    spec["stages"][1]["timeout_s"] = 2.5
    parsed = parse_spec(spec)
    task = resolve_task("idcard")
    configs = expand_configurations(parsed)
    labels = [c.labels for c in configs]
    state = start_item("i1", png(), {}, 1, 3, True, decode_image)
    for k, stage in enumerate(parsed.stages):
        refs = {c.key: choice_ref(stage, c, task)[0] for c in stage.choices}
        worker = StageWorker(k, stage.name, labels, refs, finalize=True, reuse_identical=True)
        if k == 1:  # what a replaced actor learns from RunControl: this call hung before
            worker.timed_out = {("i1", 1, "Brighten", state.frontier[0].digest)}
        state = worker.process(state)
    (row,) = finish_item(state, ["a", "b", "ocr"], score_text)
    assert row["error"] == "timeout in stage b after 2.5 s"
    assert row["busy_b_ms"] == 2500.0 and row["cpu_b_ms"] == 2500.0


def test_timed_call_measures_cpu_apart_from_waiting():
    _, cpu_ms, wall_ms = timed_call(lambda x: time.sleep(0.2) or x, 1)
    assert wall_ms >= 195 and cpu_ms < 50  # sleeping costs wall time, not CPU
    _, cpu_ms, wall_ms = timed_call(lambda x: sum(range(3_000_000)), 1)
    assert cpu_ms > 5  # busy work costs CPU (how much depends on the machine, and its load on the wall time)


def test_cached_calls_are_served_without_calling_and_keep_their_timing(tmp_path):
    cache = StageCache(CacheConfig(str(tmp_path / "cache")))
    spec = toy_spec(["Identity", "Brighten"], ["Invert"])
    _, first_rows, first_calls, _ = run_item(spec, cache=cache)
    second_state, second_rows, second_calls, _ = run_item(spec, cache=cache)
    assert first_calls["Invert"] == 2 and second_calls == {}
    assert second_state.work["cached"] == [2, 2, 2] and second_state.work["calls"] == [0, 0, 0]
    assert [r["prediction"] for r in second_rows] == [r["prediction"] for r in first_rows]
    assert [r["cpu_b_ms"] for r in second_rows] == [r["cpu_b_ms"] for r in first_rows]
    assert all(r["cached_b"] for r in second_rows) and not any(r["cached_b"] for r in first_rows)
