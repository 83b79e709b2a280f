"""The per-item execution logic without Ray: prefix sharing, identical-input reuse, errors, result rows."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from raypipe.execution import ChoiceRef, StageWorker, decode_image, finish_item, start_item
from raypipe.space import expand_configurations
from raypipe.spec import parse_spec

T = "tests.plugin_stages:"


def toy_spec(first: list[str], second: list[str]) -> dict:
    return {
        "name": "toy",
        "stages": [
            {"name": "a", "choices": [{"name": T + n, "label": n} for n in first]},
            {"name": "b", "choices": [{"name": T + n, "label": n} for n in second]},
            {"name": "ocr", "choices": [{"name": T + "EchoOCR", "label": "echo"}]},
        ],
        "dataset": {"source": "unused.parquet"},
        "sla": {"p95_latency_ms": 1000, "min_assertion_accuracy": 0.5},
    }


def png(shape=(20, 30, 3), value=100) -> bytes:
    return cv2.imencode(".png", np.full(shape, value, np.uint8))[1].tobytes()


class CountingCall:
    """Stands in for timed_call and counts calls per choice label."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def __call__(self, label, impl, image):
        self.calls[label] = self.calls.get(label, 0) + 1
        return impl(image), 1.0


def run_item(raw: dict, share: bool = True, reuse: bool = True, image: bytes | None = None):
    spec = parse_spec(raw)
    configs = expand_configurations(spec)
    labels = [c.labels for c in configs]
    counter = CountingCall()
    state = start_item("i1", png() if image is None else image, {}, len(configs), 3, share)
    for k, stage in enumerate(spec.stages):
        refs = {c.key: ChoiceRef(stage.registry_kind, c.name, c.params) for c in stage.choices}
        worker = StageWorker(k, labels, refs, finalize=True, reuse_identical=reuse, call=counter)
        state = worker.process(state)
    rows = finish_item(state, [s.name for s in spec.stages], lambda text, truth: {"text_len": len(text)})
    return state, rows, counter.calls, configs


def test_each_stage_runs_once_per_unique_prefix():
    state, rows, calls, configs = run_item(
        toy_spec(["Identity", "Brighten"], ["Brighten", "Invert"]), reuse=False
    )
    assert len(configs) == 4 and len(rows) == 4
    assert state.calls == [2, 4, 4]
    assert calls == {"Identity": 1, "Brighten": 3, "Invert": 2, "echo": 4}


def test_without_sharing_every_configuration_pays_every_stage():
    state, rows, _, _ = run_item(
        toy_spec(["Identity", "Brighten"], ["Brighten", "Invert"]), share=False, reuse=False
    )
    assert state.calls == [4, 4, 4]
    assert sorted(r["prediction"] for r in rows) == sorted(
        r["prediction"] for r in run_item(toy_spec(["Identity", "Brighten"], ["Brighten", "Invert"]))[1]
    )


def test_identical_inputs_are_computed_once_and_attributed_to_every_config():
    # Identity and CopyOf give byte-identical images: stage b and the OCR see one input, not two.
    state, rows, calls, configs = run_item(toy_spec(["Identity", "CopyOf"], ["Brighten", "Invert"]))
    assert state.calls == [2, 2, 2]
    assert state.reused == [0, 2, 2]  # prefix sharing alone would call b and ocr 4 times each
    assert calls["Brighten"] == 1 and calls["Invert"] == 1
    by_b = {}
    for row in rows:
        by_b.setdefault(configs[row["config_index"]].labels[1], set()).add(row["prediction"])
    assert all(len(preds) == 1 for preds in by_b.values())
    assert all(row["latency_b_ms"] == 1.0 and row["latency_total_ms"] == 3.0 for row in rows)
    _, _, calls_off, _ = run_item(toy_spec(["Identity", "CopyOf"], ["Brighten", "Invert"]), reuse=False)
    assert calls_off["Brighten"] == 2 and calls_off["echo"] == 4


def test_a_failing_choice_records_its_error_and_the_others_go_on():
    _, rows, _, configs = run_item(toy_spec(["Identity", "Explode"], ["Brighten"]))
    by_a = {configs[r["config_index"]].labels[0]: r for r in rows}
    assert by_a["Explode"]["error"].startswith("Explode: RuntimeError: kaboom")
    assert by_a["Explode"]["latency_total_ms"] is None and by_a["Explode"]["prediction"] == ""
    assert by_a["Identity"]["error"] is None and by_a["Identity"]["prediction"].startswith("mean ")


@pytest.mark.parametrize("blob", [b"", b"not an image", png()[:40]], ids=["empty", "garbage", "truncated"])
def test_bad_images_give_error_rows_for_every_configuration(blob):
    _, rows, calls, configs = run_item(toy_spec(["Identity"], ["Brighten", "Invert"]), image=blob)
    assert len(rows) == len(configs) == 2
    assert all(r["error"].startswith("load: ") for r in rows)
    assert calls == {}


def test_stages_cannot_modify_their_shared_input():
    with pytest.raises(ValueError, match="corrupt or truncated"):
        decode_image(b"xyz")
    state = start_item("i", png(), {}, 2, 1, True)
    with pytest.raises(ValueError, match="read-only"):
        state.frontier[0].output[0, 0, 0] = 1


def test_ocr_text_groups_boxed_words_into_lines():
    from raypipe.stages.base import OcrResult, Word

    def box(x, y):
        return ((x, y), (x + 20, y), (x + 20, y + 20), (x, y + 20))

    words = [
        Word("三", box(60, 12)),
        Word("张", box(30, 10)),
        Word("姓名", box(0, 11)),
        Word("男", box(0, 50)),
    ]
    assert OcrResult(words).text == "姓名 张 三\n男"
    assert OcrResult([Word("a"), Word("b")]).text == "a\nb"
