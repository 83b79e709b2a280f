"""End to end on the shared local Ray: a tiny dataset through real stages, Parquet results, the report."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from raypipe.cli import app
from raypipe.errors import DatasetError
from raypipe.evaluation import evaluate
from raypipe.space import expand_configurations, invocations_per_item
from raypipe.spec import parse_spec

pytestmark = pytest.mark.ray

CHOICES = {
    "orient": ["none", "osd"],
    "enhance": ["none", "clahe"],
    "channel": ["original", "gray"],
    "ocr": [{"name": "tesseract", "params": {"lang": "chi_sim+eng", "psm": 11}}],
}


def spec_for(source: str, choices=CHOICES, **extra):
    raw = {
        "name": "tiny",
        "stages": [{"name": k, "choices": v} for k, v in choices.items()],
        "dataset": {"source": source},
        "sla": {"p95_latency_ms": 5000, "min_assertion_accuracy": 0.2},
        **extra,
    }
    return parse_spec(raw)


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tiny_dataset, tmp_path_factory):
    spec = spec_for(str(tiny_dataset))
    return spec, evaluate(spec, out=str(tmp_path_factory.mktemp("run") / "run"))


def test_results_have_one_row_per_item_and_configuration(tiny_run):
    spec, result = tiny_run
    items = pl.read_parquet(result.run_dir / "items.parquet")
    configs = expand_configurations(spec)
    assert items.height == 4 * len(configs)
    assert items.select("item_id", "config_id").n_unique() == items.height
    for column in (
        "orient",
        "enhance",
        "channel",
        "ocr",
        "assert_id",
        "assertion_score",
        "exact_id_number",
        "cer",
        "latency_orient_ms",
        "latency_ocr_ms",
        "latency_total_ms",
        "error",
        "profile",
        "rotation",
    ):
        assert column in items.columns, column
    ok = items.filter(pl.col("error").is_null())
    stage_sum = sum(ok[f"latency_{s}_ms"] for s in ("orient", "enhance", "channel", "ocr"))
    assert (ok["latency_total_ms"] - stage_sum).abs().max() < 1e-6
    assert items["error"].null_count() == items.height, items.filter(pl.col("error").is_not_null())["error"][
        0
    ]


def test_tesseract_reads_clean_cards(tiny_run):
    _, result = tiny_run
    items = pl.read_parquet(result.run_dir / "items.parquet")
    clean = items.filter(
        (pl.col("profile") == "clean") & (pl.col("orient") == "none") & (pl.col("enhance") == "none")
    )
    assert clean["assert_id"].mean() == 1.0
    assert clean["exact_id_number"].mean() >= 0.5


def test_each_stage_runs_once_per_unique_prefix_or_less(tiny_run):
    spec, result = tiny_run
    work = result.manifest["work"]
    shared = invocations_per_item(expand_configurations(spec))
    for k, stage in enumerate(["orient", "enhance", "channel", "ocr"]):
        assert work[stage]["calls_with_prefix_sharing_only"] == 4 * shared[k]
        assert work[stage]["calls"] + work[stage]["saved_by_reuse"] == 4 * shared[k]
    assert work["orient"]["calls"] == 4 * 2
    # osd leaves upright cards byte-identical, so enhance sees one input for them, not two
    assert work["enhance"]["saved_by_reuse"] >= 2 * 3
    assert work["ocr"]["calls"] < 4 * 8


def test_configs_table_and_manifest(tiny_run):
    _, result = tiny_run
    configs = pl.read_parquet(result.run_dir / "configs.parquet")
    assert configs.height == 8
    assert configs["n_items"].to_list() == [4] * 8
    assert (
        (configs["assertion_ci_low"] <= configs["assertion_accuracy"])
        & (configs["assertion_accuracy"] <= configs["assertion_ci_high"])
    ).all()
    assert (configs["latency_p50_ms"] <= configs["latency_p95_ms"]).all()
    assert configs["pareto"].any()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["n_items"] == 4 and manifest["n_configs"] == 8 and manifest["versions"]["ray"]
    slices = pl.read_parquet(result.run_dir / "slices.parquet")
    assert set(slices.filter(pl.col("attribute") == "profile")["value"]) == {"clean", "rotated", "dark"}
    assert not (result.run_dir / "parts").exists() or not any((result.run_dir / "parts").iterdir())


def test_report_command_prints_and_plots(tiny_run):
    _, result = tiny_run
    out = CliRunner().invoke(app, ["report", str(result.run_dir)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "config_id" in out.output and (result.run_dir / "pareto.png").stat().st_size > 5000


def test_corrupt_images_give_error_rows_and_the_run_completes(ray_cluster, tiny_dataset, tmp_path):
    table = pq.read_table(tiny_dataset)
    images = table.column("image").to_pylist()
    images[0] = {"bytes": images[0]["bytes"][:200], "path": "truncated.png"}
    images[1] = {"bytes": b"", "path": "empty.png"}
    table = table.set_column(
        table.column_names.index("image"), "image", pa.array(images, table.schema.field("image").type)
    )
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad)
    choices = {"orient": ["none"], "enhance": ["none"], "channel": ["gray"], "ocr": ["tesseract"]}
    result = evaluate(spec_for(str(bad), choices), out=str(tmp_path / "run"))
    items = pl.read_parquet(result.run_dir / "items.parquet")
    assert items.height == 4
    assert items.filter(pl.col("error").is_not_null()).height == 2
    assert result.configs["n_errors"].to_list() == [2]


def test_a_missing_dataset_fails_with_its_path(tmp_path):
    spec = spec_for(str(tmp_path / "nowhere.parquet"))
    with pytest.raises(DatasetError, match=r"nowhere\.parquet"):
        evaluate(spec, out=str(tmp_path / "run"))
