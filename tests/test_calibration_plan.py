"""Calibration times every choice of every stage alone on each sampled item, each prefix of choices once
(`latency.calibration_plan`, `Calibrator.run_pair`): pure logic, and the calibrator class outside Ray."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from raypipe.engine import latency
from raypipe.engine.plan import choice_ref
from raypipe.ray.calibration import Calibrator
from raypipe.spec.registry import resolve_task
from raypipe.spec.space import expand_configurations
from raypipe.spec.validation import parse_spec
from tests.plugin_stages import Counting
from tests.test_execution import png, toy_spec


@dataclass
class Config:
    labels: tuple[str, ...]


def space(*stages: list[str]) -> list[Config]:
    return [Config(labels) for labels in itertools.product(*stages)]


def timed_calls(configs: list[Config], plan: list[tuple[int, int]]) -> list[tuple[str, ...]]:
    """The prefixes each run of the plan calls, in order, each once per item (as the calibrator does)."""
    done: list[tuple[str, ...]] = []
    for c, depth in plan:
        done += [p for j in range(1, depth + 1) if (p := configs[c].labels[:j]) not in done]
    return done


def test_an_expensive_stage_shared_by_every_configuration_is_timed_once_per_item():
    configs = space(["none", "cnn"], ["tesseract"], ["layout"])
    plan = latency.calibration_plan(configs)
    assert [(configs[c].labels, depth) for c, depth in plan] == [
        (("none", "tesseract", "layout"), 3),
        (("cnn", "tesseract", "layout"), 1),  # only the CNN: Tesseract and layout are timed already
    ]
    assert latency.plan_calls(configs, plan) == 4  # whole configurations made 6, two of them Tesseract
    assert [p[-1] for p in timed_calls(configs, plan)].count("tesseract") == 1


def test_a_later_choice_is_timed_on_an_input_an_earlier_run_computed():
    configs = space(["none", "osd"], ["rapidocr"], ["label_value", "layout"])
    plan = latency.calibration_plan(configs)
    calls = timed_calls(configs, plan)
    assert latency.plan_calls(configs, plan) == len(calls) == 5
    assert [p[-1] for p in calls].count("rapidocr") == 1  # layout reads the same RapidOCR output
    assert ("none", "rapidocr", "layout") in calls and ("osd",) in calls


@pytest.mark.parametrize("seed", range(20))
def test_every_choice_of_the_candidates_is_timed_on_a_prefix_they_use(seed):
    rng = random.Random(seed)
    stages = [[f"s{k}c{i}" for i in range(rng.randint(1, 4))] for k in range(rng.randint(1, 5))]
    configs = space(*stages)
    candidates = sorted(rng.sample(range(len(configs)), rng.randint(1, len(configs))))
    plan = latency.calibration_plan(configs, candidates)
    assert {c for c, _ in plan} <= set(candidates)  # a dropped configuration is never run
    calls = timed_calls(configs, plan)
    assert len(calls) == len(set(calls)) == latency.plan_calls(configs, plan)
    wanted = {(k, label) for c in candidates for k, label in enumerate(configs[c].labels)}
    assert {(len(p) - 1, p[-1]) for p in calls} == wanted  # every choice, and only the candidates'
    whole = len({configs[c].labels for c in candidates})
    assert len(calls) <= whole * len(stages)  # never more calls than timing every candidate whole


def calibrate_toy(second: list[str]) -> tuple[list, list[tuple[int, int]], list[dict]]:
    """The calibration plan of the toy spec (Identity, then `second`, then the echo OCR) run over two items
    by a Calibrator outside Ray, as `calibrate` feeds it: (configurations, plan, rows); `Counting.calls`
    holds its calls."""
    spec = parse_spec(toy_spec(["Identity"], second))
    task = resolve_task(spec.task)
    configs = expand_configurations(spec)
    choices = [{c.key: choice_ref(stage, c, task)[0] for c in stage.choices} for stage in spec.stages]
    calibrator = Calibrator(control=None)
    calibrator.prepare(task, choices, [s.name for s in spec.stages], set())
    plan = latency.calibration_plan(configs)
    Counting.calls.clear()
    rows = []
    for item in ("i1", "i2"):
        for c, depth in plan:
            rows += calibrator.run_pair(item, png(), c, configs[c].labels[:depth])
    return configs, plan, rows


def test_the_calibrator_starts_each_run_from_what_the_item_computed_already():
    configs, plan, rows = calibrate_toy(["Invert", "Brighten"])
    assert [(configs[c].labels, depth) for c, depth in plan] == [
        (("Identity", "Invert", "echo"), 3),
        (("Identity", "Brighten", "echo"), 2),
    ]
    # per item: Identity > Invert > echo, then Brighten on Identity's output (Identity not called again);
    # a choice's first call is also made once untimed (its one-off costs)
    assert Counting.calls == {"Identity": 2 + 1, "Invert": 2 + 1, "Brighten": 2 + 1, "EchoOCR": 2 + 1}
    timed = [(r["item_id"], r["stage"], r["choice"]) for r in rows]
    assert len(timed) == len(set(timed)) == 2 * 4 and all(r["error"] is None for r in rows)
    assert {(r["stage"], r["choice"]) for r in rows} == {
        ("a", "Identity"), ("b", "Invert"), ("b", "Brighten"), ("ocr", "echo")
    }  # fmt: skip


def test_calibration_makes_no_untimed_first_call_of_a_choice_without_one_off_costs():
    _, _, rows = calibrate_toy(["Invert", "ColdInvert"])
    assert Counting.calls == {"Identity": 2 + 1, "Invert": 2 + 1, "ColdInvert": 2, "EchoOCR": 2 + 1}
    cold = [r["item_id"] for r in rows if r["choice"] == "ColdInvert" and r["error"] is None]
    assert cold == ["i1", "i2"]  # its first call is a sample like the others


def test_a_timed_out_call_gets_one_row_however_many_runs_reach_it():
    """Runs that share a prefix ending in a call known to time out (reported by an earlier actor) reach it
    again, since nothing after it was computed: the calibration keeps one timeout row for it."""
    raw = toy_spec(["Identity"], ["Invert", "Brighten"])
    spec = parse_spec(raw)
    task = resolve_task(spec.task)
    choices = [{c.key: choice_ref(stage, c, task)[0] for c in stage.choices} for stage in spec.stages]
    hung = ("i1", 0, "Identity", "")  # (item, stage index, choice, the prefix before it)
    calibrator = Calibrator(control=None)
    calibrator.prepare(task, choices, [s.name for s in spec.stages], {hung})
    Counting.calls.clear()
    rows = calibrator.run_pair("i1", png(), 0, ("Identity", "Invert", "echo"))
    rows += calibrator.run_pair("i1", png(), 1, ("Identity", "Brighten"))
    assert [(r["stage"], r["choice"], r["error"]) for r in rows] == [
        ("a", "Identity", "timeout in stage a after 300 s")
    ]
    assert Counting.calls == {}  # a call known to hang is not made again
