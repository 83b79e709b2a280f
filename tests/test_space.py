"""The configuration space: counts, exclusions, stable ids and the prefix tree."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from raypipe.cli import app
from raypipe.spec.space import expand_configurations, invocations_per_item, prefix_tree, unique_prefixes
from raypipe.spec.validation import load_spec, parse_spec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_full_space_counts_the_product_of_choices():
    spec = load_spec(CONFIGS / "icp.yaml")
    expected = 1
    for stage in spec.stages:
        expected *= len(stage.choices)
    assert len(expand_configurations(spec)) == expected
    result = CliRunner().invoke(app, ["configs", str(CONFIGS / "icp.yaml"), "--count"])
    assert result.exit_code == 0 and result.output.strip() == str(expected)


def test_exclusions_remove_matching_combinations():
    spec = load_spec(CONFIGS / "icp-quick.yaml")
    raw = spec.model_dump()
    raw["exclude"] = [{"orient": "osd", "channel": ["gray"]}]
    configs = expand_configurations(parse_spec(raw))
    assert len(configs) == 32 - 2 * 2 * 2  # osd x {none, clahe} x gray x 2 engines x 2 extractors
    assert not any(c.choices()["orient"] == "osd" and c.choices()["channel"] == "gray" for c in configs)


def test_ids_are_stable_and_depend_on_params_not_order_of_keys():
    spec = load_spec(CONFIGS / "icp-quick.yaml")
    first = [c.config_id for c in expand_configurations(spec)]
    assert first == [c.config_id for c in expand_configurations(load_spec(CONFIGS / "icp-quick.yaml"))]
    assert len(set(first)) == len(first)
    raw = spec.model_dump()
    raw["stages"][3]["choices"][0]["params"]["psm"] = 6
    changed = [c.config_id for c in expand_configurations(parse_spec(raw))]
    assert changed != first


def test_prefix_tree_and_invocation_counts():
    configs = expand_configurations(load_spec(CONFIGS / "icp.yaml"))
    orient = {
        "none",
        "hough",
        "osd",
        "cnn-keras",
        "cnn-tflite-int8",
        "cnn-onnx-int8",
        "cnn-student-tflite-int8",
    }
    assert unique_prefixes(configs, 1) == {(label,) for label in orient}
    assert invocations_per_item(configs) == [7, 35, 175, 525, len(configs)]
    assert invocations_per_item(configs, shared=False) == [len(configs)] * 5
    tree = prefix_tree(configs)
    assert set(tree) == orient and len(tree["hough"]["clahe"]) == 5


def test_configs_command_lists_ids_and_choices():
    result = CliRunner().invoke(app, ["configs", str(CONFIGS / "icp-quick.yaml")])
    lines = result.output.strip().splitlines()
    assert len(lines) == 32
    assert "orient=osd > enhance=clahe > channel=gray > ocr=rapidocr > extract=layout" in result.output
