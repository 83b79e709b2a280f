"""The README's examples are the files in examples/, verbatim, and they run."""

from __future__ import annotations

import re

import polars as pl
import pytest
from typer.testing import CliRunner

from raypipe.cli import app
from raypipe.evaluate.driver import evaluate
from tests.conftest import REPO, request_for

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("path", ["examples/own_stage.py", "examples/own_task.py"])
def test_the_readme_shows_each_example_file_verbatim(path):
    block = re.search(
        rf"<!-- example: {re.escape(path)} -->\n```python\n(.*?)```\n<!-- end example -->", README, re.S
    )
    assert block is not None, f"README has no example block for {path}"
    assert block.group(1) == (REPO / path).read_text()


@pytest.mark.ray
def test_your_own_stage_runs_by_import_path_and_by_its_registered_name(ray_cluster, digits_dataset, tmp_path):
    import examples.own_stage  # noqa: F401 - registers "dilate"

    raw = {
        "name": "own-stage",
        "task": "digits",
        "stages": [
            {
                "name": "preprocess",
                "choices": [
                    "none",
                    "dilate",
                    {"name": "examples.own_stage:Dilate", "label": "dilate5", "params": {"size": 5}},
                ],
            },
            {"name": "classify", "choices": ["linear"]},
        ],
        "dataset": {"source": str(digits_dataset)},
    }
    result = evaluate(request_for(raw, tmp_path / "run", limit=30, calibrate=False))
    items = result.run_dir.read_parquet("items.parquet")
    assert items.height == 90 and items["error"].null_count() == 90
    ink = items.group_by("preprocess").agg(pl.col("accuracy").cast(pl.Float64).mean())
    assert set(ink["preprocess"]) == {"none", "dilate", "dilate5"}


@pytest.mark.ray
def test_your_own_task_runs_from_its_spec(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the spec's generated dataset lands here
    monkeypatch.syspath_prepend(str(REPO))
    out = CliRunner().invoke(
        app,
        [
            "run",
            str(REPO / "examples" / "evenodd.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--no-calibrate",
            "--no-cache",
        ],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 0, out.output
    configs = pl.read_parquet(tmp_path / "run" / "configs.parquet")
    ranked = dict(zip(configs["guess"], configs["correct"], strict=True))
    assert ranked["classifier"] > 0.85 and ranked["ink"] < 0.7  # the classifier beats the ink rule
    assert configs["guess"][0] == "classifier" and "decision order, by correct" in out.output
