"""Decisions on a digits run: ranking with ties, slices with confidence, recommendations for a mix."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from raypipe.cli import app
from raypipe.decide.recommend import mix_weights, parse_mix, recommend
from raypipe.errors import RaypipeError
from raypipe.evaluate.driver import evaluate
from raypipe.report.reading import RunView
from raypipe.spec.registry import register
from raypipe.spec.stage import Stage
from tests.conftest import request_for

pytestmark = pytest.mark.ray


def digits_spec(source: str, **extra) -> dict:
    return {
        "name": "decisions",
        "task": "digits",
        "stages": [
            {"name": "preprocess", "choices": ["none", "deskew", "threshold"]},
            {"name": "classify", "choices": ["linear", "onnx", "onnx-int8"]},
        ],
        "dataset": {"source": source},
        "sla": {"p95_latency_ms": 50, "min": {"accuracy": 0.5}},
        "slices": {"cross": [["profile", "digit"]], "min_items": 20},
        **extra,
    }


@pytest.fixture(scope="module")
def digits_run(ray_cluster, digits_dataset, tmp_path_factory):
    request = request_for(digits_spec(str(digits_dataset)), tmp_path_factory.mktemp("dec") / "run")
    return evaluate(request)


def test_the_first_row_is_the_decisions_pick_and_never_one_the_data_show_worse(digits_run):
    configs = digits_run.configs
    decision = digits_run.manifest["decision"]
    first = configs.row(0, named=True)
    assert first["rank"] == 1 and first["config_id"] == decision["config_id"] and first["decision"] == "pick"
    assert decision["status"] in ("certified", "undecided") and decision["n_items"] == 120
    assert decision["epsilon"] == 0.02 and decision["delta"] == 0.05
    group = "certified" if decision["status"] == "certified" else "candidate"
    candidates = configs.filter(pl.col("decision").is_in(["pick", group]))
    assert set(candidates["config_id"]) == set(
        decision["certified" if group == "certified" else "candidates"]
    )
    if decision["status"] == "undecided":  # the provisional pick is the best point estimate among candidates
        assert first["objective"] == candidates["objective"].max()
        assert decision["items_needed"] is None or decision["items_needed"] > 0
    assert configs.head(candidates.height)["tied"].all()  # the pick's group comes first, as one block
    # threshold throws away ink: its configurations are out with confidence (the SLA's accuracy >= 0.5 or
    # below a rival that meets the SLA), never a candidate
    threshold = configs.filter(pl.col("preprocess") == "threshold")
    assert set(threshold["decision"]) <= {"excluded", "candidate"}
    assert (configs["p95_ci_low"] <= configs["latency_p95_ms"]).all()


def test_slices_never_name_a_winner_below_min_items(digits_run):
    slices = digits_run.run_dir.read_parquet("slices.parquet")
    cells = slices.group_by("dimension", "cell").agg(pl.col("cell_items").first(), pl.col("winner").first())
    small, large = cells.filter(pl.col("cell_items") < 20), cells.filter(pl.col("cell_items") >= 20)
    assert small.height > 0 and small["winner"].null_count() == small.height
    assert large.height > 0
    decided = (
        slices.filter(pl.col("cell_items") >= 20)
        .group_by("dimension", "cell")
        .agg(pl.col("cell_status").first(), pl.col("winner").first(), pl.col("provisional").first())
    )
    assert (
        set(decided["cell_status"]) <= {"certified", "undecided"} and decided["cell_status"].null_count() == 0
    )
    # a winner only where the cell's decision is certified; an undecided cell names its provisional pick
    assert (decided["winner"].is_not_null() == (decided["cell_status"] == "certified")).all()
    assert (decided["provisional"].is_not_null() == (decided["cell_status"] == "undecided")).all()
    assert "profile x digit" in set(slices["dimension"])  # the crossed pair the spec asked for
    # every configuration appears in every cell with its interval and n
    assert slices.group_by("dimension", "cell").len()["len"].unique().to_list() == [9]
    assert (slices["ci_low"] <= slices["objective"]).all() and (
        slices["objective"] <= slices["ci_high"]
    ).all()


def test_continuous_attributes_are_binned_not_one_slice_per_value(digits_run):
    items = digits_run.run_dir.read_parquet("items.parquet")
    assert items["ink"].n_unique() > 50
    assert items["bin_ink"].n_unique() == 3  # quantile bins by default
    assert "= 0" in items["bin_noise"].drop_nulls().unique().to_list()  # the task's zero bin


def test_recommend_without_a_mix_agrees_with_the_ranking(digits_run):
    view = RunView(digits_run.run_dir)
    own = recommend(
        view.items, view.configs, view.task, view.objective, view.spec.sla, None, {}, view.stage_names
    )
    assert own.recommended == view.configs["config_id"][0] == view.manifest["decision"]["config_id"]
    assert own.decision.status == view.manifest["decision"]["status"]
    out = CliRunner().invoke(app, ["recommend", str(digits_run.run_dir)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    what = "recommended, certified" if own.decision.status == "certified" else "provisional pick, undecided"
    assert (
        "mix: the run's own data" in out.output
        and f"{what} (expected accuracy): {own.recommended[:8]}" in (out.output)
    )


def test_recommend_for_a_mix_reweights_the_per_slice_results(digits_run):
    view = RunView(digits_run.run_dir)
    attribute, given = parse_mix(["profile=rotated:1.0"])
    mix = mix_weights(view.items, attribute, given)
    assert mix == {"rotated": 1.0} | {b: 0.0 for b in mix if b != "rotated"}
    rec = recommend(
        view.items, view.configs, view.task, view.objective, view.spec.sla, attribute, mix, view.stage_names
    )
    top = rec.ranking.row(0, named=True)
    rotated = view.items.filter((pl.col("profile") == "rotated") & (pl.col("config_id") == top["config_id"]))
    assert top["expected"] == pytest.approx(float(rotated["accuracy"].cast(pl.Float64).mean()))
    out = CliRunner().invoke(app, ["recommend", str(digits_run.run_dir), "--mix", "profile=rotated:0.6"])
    assert out.exit_code == 0, out.output
    assert "mix of profile: rotated 0.60" in out.output and "against the run's own mix" in out.output


def test_recommend_refuses_a_bad_mix(digits_run):
    with pytest.raises(RaypipeError, match=r"write it as ATTRIBUTE=BIN:WEIGHT"):
        parse_mix(["profile-rotated"])
    out = CliRunner().invoke(app, ["recommend", str(digits_run.run_dir), "--mix", "profile=sideways:0.5"])
    assert out.exit_code == 2 and "no bin 'sideways' in this run (bins: " in out.output
    out = CliRunner().invoke(
        app,
        ["recommend", str(digits_run.run_dir), "--mix", "profile=rotated:0.9", "--mix", "profile=clean:0.5"],
    )
    assert out.exit_code == 2 and "add up to 1.4, more than 1" in out.output


def test_a_weighted_p95_under_a_mix_uses_the_items_of_its_bins(digits_run):
    view = RunView(digits_run.run_dir)
    rec = recommend(
        view.items,
        view.configs,
        view.task,
        view.objective,
        view.spec.sla,
        "profile",
        {"clean": 1.0},
        view.stage_names,
    )
    row = rec.ranking.row(0, named=True)
    clean = view.items.filter((pl.col("profile") == "clean") & (pl.col("config_id") == row["config_id"]))
    values = np.sort(clean["latency_total_ms"].to_numpy())
    assert values[0] <= row["p95_ms"] <= values[-1]


def test_a_class_registered_at_run_time_works_inside_the_actors(ray_cluster, digits_dataset, tmp_path):
    @register("preprocess", "negate_for_test")
    class Negate(Stage):  # defined here, in the test: the actors can only get it by value
        def __call__(self, image):
            return (255 - image).astype(image.dtype)

    raw = digits_spec(str(digits_dataset))
    raw["stages"] = [
        {"name": "preprocess", "choices": ["none", "negate_for_test"]},
        {"name": "classify", "choices": ["onnx"]},
    ]
    result = evaluate(request_for(raw, tmp_path / "run", limit=20, calibrate=False))
    items = result.run_dir.read_parquet("items.parquet")
    assert items["error"].null_count() == items.height == 40
    negated = items.filter(pl.col("preprocess") == "negate_for_test")["accuracy"].cast(pl.Float64).mean()
    plain = items.filter(pl.col("preprocess") == "none")["accuracy"].cast(pl.Float64).mean()
    assert negated < plain  # the classifier never saw negated digits: the class really ran
