"""Spec loading and validation: schema errors and component errors, all at once, with YAML paths."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raypipe.cli import app
from raypipe.errors import ConfigError, RaypipeError
from raypipe.spec.validation import load_spec, parse_spec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def quick_raw() -> dict:
    return yaml.safe_load((CONFIGS / "icp-quick.yaml").read_text())


def test_shipped_specs_validate():
    tasks = {load_spec(path).task for path in CONFIGS.glob("*.yaml")}
    assert {"idcard", "digits"} <= tasks


def test_objective_sla_and_slices_name_metrics_and_attributes_of_the_task():
    raw = quick_raw()
    raw["objective"] = {"metric": "key_fields_exakt"}
    raw["sla"]["min"] = {"cerr": 0.1}
    raw["slices"] = {"bins": {"skew": [1.0]}, "cross": [["profile"]]}
    with pytest.raises(ConfigError) as info:
        parse_spec(raw)
    problems = "\n".join(info.value.problems)
    assert "objective.metric: task 'idcard' has no metric 'key_fields_exakt'" in problems
    assert "sla.min.cerr: task 'idcard' has no metric 'cerr'" in problems
    assert "slices.bins.skew: task 'idcard' has no attribute 'skew'" in problems
    assert "slices.cross[0]: give two attributes, got 1" in problems


def test_the_old_sla_key_says_what_replaced_it():
    raw = quick_raw()
    raw["sla"] = {"p95_latency_ms": 100, "min_assertion_accuracy": 0.6}
    with pytest.raises(ConfigError, match=r"sla: .*write `min: \{METRIC: 0\.6\}` \(`raypipe tasks TASK`"):
        parse_spec(raw)


def test_unknown_task_suggests_the_known_ones():
    raw = quick_raw()
    raw["task"] = "id_card"
    with pytest.raises(ConfigError, match=r"task: Unknown task 'id_card'\. Did you mean 'idcard'\?"):
        parse_spec(raw)


def test_every_problem_is_listed_with_its_full_yaml_path():
    raw = quick_raw()
    raw["stages"][3]["choices"][0]["params"]["psm"] = "eleven"
    raw["stages"][1]["choices"].append({"name": "clahee"})
    raw["sla"]["p95_latency_ms"] = -1
    with pytest.raises(ConfigError) as info:
        parse_spec(raw)
    problems = info.value.problems
    assert any(p.startswith("sla.p95_latency_ms:") for p in problems), problems
    # schema errors come first; component errors are checked once the schema holds
    raw["sla"]["p95_latency_ms"] = 100
    with pytest.raises(ConfigError, match=r"stages\[3\]\.choices\[0\]\.params\.psm") as info:
        parse_spec(raw)
    assert any(
        "stages[1].choices[2].name: Unknown enhance 'clahee'. Did you mean 'clahe'" in p
        for p in info.value.problems
    )
    assert len(info.value.problems) == 2


def test_unknown_parameter_and_extra_keys_are_rejected():
    raw = quick_raw()
    raw["stages"][2]["choices"] = [{"name": "gray", "params": {"weights": 3}}]
    raw["surprise"] = True
    with pytest.raises(ConfigError, match=r"surprise: Extra inputs are not permitted"):
        parse_spec(raw)
    del raw["surprise"]
    with pytest.raises(ConfigError, match=r"stages\[2\]\.choices\[0\]\.params\.weights: Extra inputs"):
        parse_spec(raw)


def test_duplicate_labels_and_bad_exclusions():
    raw = quick_raw()
    raw["stages"][1]["choices"] = ["none", "none"]
    with pytest.raises(ConfigError, match=r"choice label 'none' appears twice"):
        parse_spec(copy.deepcopy(raw))
    raw = quick_raw()
    raw["exclude"] = [{"orient": "osdd"}, {"colour": "gray"}]
    with pytest.raises(ConfigError) as info:
        parse_spec(raw)
    assert info.value.problems == [
        "exclude[0].orient: stage 'orient' has no choice 'osdd' (choices: none, osd)",
        "exclude[1].colour: no stage named 'colour' (stages: orient, enhance, channel, ocr, extract)",
    ]


def test_missing_spec_file_names_the_path(tmp_path):
    with pytest.raises(RaypipeError, match=r"spec file not found: .*nope\.yaml"):
        load_spec(tmp_path / "nope.yaml")


def test_validate_command_exits_nonzero_and_prints_every_problem(tmp_path):
    raw = quick_raw()
    raw["stages"][0]["choices"].append("hugh")
    raw["stages"][3]["choices"][0]["params"]["psm"] = "x"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "2 problem(s)" in result.output
    assert "stages[0].choices[2].name: Unknown orient 'hugh'. Did you mean 'hough'?" in result.output
    good = CliRunner().invoke(app, ["validate", str(CONFIGS / "icp-quick.yaml")])
    assert good.exit_code == 0 and "32 configurations" in good.output
