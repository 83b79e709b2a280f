"""End to end on the shared local Ray: tiny ID-card data through real engines, Parquet results, the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from raypipe.cli import app
from raypipe.decide.stats import wilson_interval
from raypipe.engine.plan import OperatorPlan, fuse, group_resources
from raypipe.engine.rundir import RunDir
from raypipe.errors import DatasetError
from raypipe.evaluate.driver import evaluate
from raypipe.ray.pipeline import pool_strategy
from raypipe.spec import columns
from raypipe.spec.space import expand_configurations, invocations_per_item
from raypipe.spec.stage import Resources
from raypipe.spec.validation import parse_spec
from tests.conftest import request_for

pytestmark = pytest.mark.ray

CHOICES = {
    "orient": ["none", "osd"],
    "enhance": ["none", "clahe"],
    "channel": ["original", "gray"],
    "ocr": [{"name": "tesseract", "params": {"lang": "chi_sim+eng", "psm": 11}}],
    "extract": ["label_value"],
}
STAGES = list(CHOICES)


def spec_raw(source: str, choices=CHOICES, **extra) -> dict:
    return {
        "name": "tiny",
        "task": "idcard",
        "stages": [{"name": k, "choices": v} for k, v in choices.items()],
        "dataset": {"source": source},
        "sla": {"p95_latency_ms": 5000, "min": {"assertion_score": 0.2}},
        **extra,
    }


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tiny_dataset, tmp_path_factory):
    raw = spec_raw(str(tiny_dataset))
    folder, remove_parts = tmp_path_factory.mktemp("run"), RunDir.remove_parts

    def keep_a_copy(run_dir: RunDir) -> None:  # where each stage ran is only in the streamed parts
        shutil.copytree(run_dir.path("parts"), folder / "parts")
        remove_parts(run_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunDir, "remove_parts", keep_a_copy)
        result = evaluate(request_for(raw, folder / "run"))
    return parse_spec(raw), result


def read(result, name: str) -> pl.DataFrame:
    return result.run_dir.read_parquet(name)


def test_results_have_one_row_per_item_and_configuration(tiny_run):
    spec, result = tiny_run
    items = read(result, "items.parquet")
    configs = expand_configurations(spec)
    assert items.height == 4 * len(configs)
    assert items.select("item_id", "config_id").n_unique() == items.height
    for column in (
        *STAGES,
        "key_fields_exact",
        "assertion_score",
        "exact_id_number",
        "cer",
        "prediction",
        "ocr_confidence",
        "latency_orient_ms",
        "busy_ocr_ms",
        "cpu_ocr_ms",
        "latency_total_ms",
        "error",
        "profile",
        "bin_profile",
        "rotation",
    ):
        assert column in items.columns, column
    stage_sum = sum(items[f"latency_{s}_ms"] for s in STAGES)
    assert (items["latency_total_ms"] - stage_sum).abs().max() < 1e-6
    busy_sum = sum(items[f"busy_{s}_ms"] for s in STAGES)
    assert (items["busy_total_ms"] - busy_sum).abs().max() < 1e-6
    assert items["error"].null_count() == items.height, items["error"].drop_nulls().to_list()[:1]


def test_tesseract_reads_clean_cards(tiny_run):
    _, result = tiny_run
    items = read(result, "items.parquet")
    clean = items.filter((pl.col("profile") == "clean") & (pl.col("orient") == "none"))
    assert clean["assert_id"].mean() == 1.0
    assert clean["exact_id_number"].mean() >= 0.5


def test_each_stage_runs_once_per_unique_prefix_or_less(tiny_run):
    spec, result = tiny_run
    work = result.manifest["work"]
    shared = invocations_per_item(expand_configurations(spec))
    for k, stage in enumerate(STAGES):
        assert work[stage]["calls_with_prefix_sharing_only"] == 4 * shared[k]
        assert work[stage]["calls"] + work[stage]["saved_by_reuse"] == 4 * shared[k]
    assert work["orient"]["calls"] == 4 * 2
    # osd leaves upright cards byte-identical, so enhance sees one input for them, not two
    assert work["enhance"]["saved_by_reuse"] >= 2 * 3
    assert work["ocr"]["calls"] < 4 * 8


def test_configs_aggregate_exactly_what_the_items_say(tiny_run):
    _, result = tiny_run
    items, configs = read(result, "items.parquet"), read(result, "configs.parquet")
    assert configs.height == 8 and configs["n_items"].to_list() == [4] * 8
    for row in configs.iter_rows(named=True):
        mine = items.filter(pl.col("config_id") == row["config_id"])
        hits = float(mine["key_fields_exact"].cast(pl.Float64).sum())
        assert row["objective"] == pytest.approx(hits / 4)
        low, high = wilson_interval(hits, 4)
        assert (row["objective_ci_low"], row["objective_ci_high"]) == pytest.approx((low, high))
        latencies = mine["latency_total_ms"].to_numpy()
        assert row["latency_p95_ms"] == pytest.approx(float(np.quantile(latencies, 0.95)))
        assert row["latency_p50_ms"] == pytest.approx(float(np.quantile(latencies, 0.5)))
        assert row["sla_pass"] == (row["latency_p95_ms"] <= 5000 and row["assertion_score"] >= 0.2)
    assert configs["rank"].to_list() == list(range(1, 9))


def test_pareto_flags_match_a_brute_force_dominance_check(tiny_run):
    _, result = tiny_run
    configs = read(result, "configs.parquet").to_dicts()
    for c in configs:
        dominated = any(
            o["objective"] >= c["objective"]
            and o["latency_p95_ms"] <= c["latency_p95_ms"]
            and (o["objective"] > c["objective"] or o["latency_p95_ms"] < c["latency_p95_ms"])
            for o in configs
        )
        assert c["pareto"] == (not dominated), c["config_id"]


def test_manifest_and_slices(tiny_run):
    _, result = tiny_run
    manifest = result.manifest
    assert manifest["n_items"] == 4 and manifest["n_configs"] == 8 and manifest["versions"]["ray"]
    assert manifest["objective"] == {
        "metric": "key_fields_exact",
        "higher_is_better": True,
        "description": manifest["objective"]["description"],
        "chosen_by": "task default",
    }
    calibrated = {(f["stage"], f["choice"]) for f in manifest["latency"]["factors"]}
    named = {(s, c if isinstance(c, str) else c["name"]) for s, cs in CHOICES.items() for c in cs}
    assert calibrated == named
    slices = read(result, "slices.parquet")
    profile = slices.filter(pl.col("dimension") == "profile")
    assert set(profile["cell"]) == {"clean", "rotated", "dark"}
    # 4 items are far below min_slice_items (20): no cell names a winner
    assert profile["winner"].null_count() == profile.height
    assert set(profile["note"]) == {"too few items (2 < 20)", "too few items (1 < 20)"}
    assert not result.run_dir.exists("parts")


def test_report_command_prints_and_plots(tiny_run):
    _, result = tiny_run
    out = CliRunner().invoke(app, ["report", str(result.run_dir)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "config_id" in out.output and "key_fields_exact" in out.output and "too few items" in out.output
    assert result.run_dir.fs.get_file_info(result.run_dir.path("pareto.png")).size > 5000


def test_corrupt_images_give_error_rows_that_count_in_latency(ray_cluster, tiny_dataset, tmp_path):
    table = pq.read_table(tiny_dataset)
    images = table.column("image").to_pylist()
    images[0] = {"bytes": images[0]["bytes"][:200], "path": "truncated.png"}
    images[1] = {"bytes": b"", "path": "empty.png"}
    table = table.set_column(
        table.column_names.index("image"), "image", pa.array(images, table.schema.field("image").type)
    )
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad)
    choices = {"orient": ["none"], "ocr": ["tesseract"], "extract": ["label_value"]}
    result = evaluate(request_for(spec_raw(str(bad), choices), tmp_path / "run", calibrate=False))
    items = read(result, "items.parquet")
    assert items.height == 4
    errors = items.filter(pl.col("error").is_not_null())
    assert sorted(errors["error"].str.slice(0, 16).to_list()) == ["load: ValueError"] * 2
    assert errors["latency_total_ms"].null_count() == 0 and (errors["key_fields_exact"] == False).all()  # noqa: E712
    assert result.configs["n_errors"].to_list() == [2]


def test_a_missing_dataset_fails_with_its_path(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere\.parquet"):
        evaluate(request_for(spec_raw(str(tmp_path / "nowhere.parquet")), tmp_path / "run"))


def test_start_tasks_run_at_most_as_many_at_once_as_the_cluster_has_cpus():
    # each task needs a worker process of its own: uncapped, 8 one-item blocks started 8 workers
    import ray

    from raypipe.engine.plan import RunOptions, plan_operators
    from raypipe.ray.pipeline import operators
    from raypipe.spec.registry import resolve_task

    spec = parse_spec(spec_raw("cards.parquet"))
    task, configs = resolve_task("idcard"), expand_configurations(spec)
    plans = plan_operators(spec, task, 3.5, 0)
    items = pa.table({"item_id": ["a", "b"]})
    start = operators(items, task, configs, plans, RunOptions(), control=None, cpus=3.5)[0]
    assert start.map_batches_args()["compute"] == ray.data.TaskPoolStrategy(size=3)


def test_pools_grow_from_one_actor_on_one_node_and_start_full_on_a_cluster():
    # one node: a cheap stage pays for one actor's start; a cluster: the actors spread over its nodes
    one, several = pool_strategy(4, nodes=1), pool_strategy(4, nodes=3)
    assert (one.min_size, one.initial_size, one.max_size) == (1, 1, 4)
    assert (several.min_size, several.initial_size, several.max_size) == (4, 4, 4)


def test_the_light_stages_run_in_one_actor_and_the_ocr_in_its_own_pool(tiny_run):
    # engine.plan.fuse: orientation (two resource classes), enhancement and channel share an actor process;
    # the OCR engines, the heaviest stage, have a pool of their own
    _, result = tiny_run
    pids = [columns.work("pid", stage) for stage in STAGES]
    parts = Path(result.run_dir.root).parent / "parts"
    rows = pl.read_parquet(parts / "*.parquet", columns=["item_id", *pids]).drop_nulls(pids)
    assert rows["item_id"].n_unique() == rows.height == 4  # each item's place rides on its first row
    light = rows.select(pl.concat_list(pids[:3]).list.n_unique().alias("n"))["n"]
    assert light.to_list() == [1] * 4
    assert (rows[pids[0]] != rows[pids[3]]).all()


def test_fuse_groups_runs_of_light_cpu_operators_and_keeps_heavy_and_gpu_ones_alone():
    def plan(stage, cpus, gpus=0.0):
        return OperatorPlan(stage, f"s{stage}", {}, Resources(cpus, gpus, 8), finalize=True)

    # stage 3 is the heaviest (1 CPU); stage 1 asks for a GPU
    plans = [plan(0, 0.5), plan(1, 0.5, 0.25), plan(2, 0.5), plan(2, 1.0), plan(3, 1.0)]
    plans += [plan(4, 0.25), plan(5, 0.5)]
    groups = fuse(plans)
    assert [[(p.stage_index, p.resources.num_cpus) for p in g] for g in groups] == [
        [(0, 0.5)],
        [(1, 0.5)],
        [(2, 0.5), (2, 1.0)],
        [(3, 1.0)],
        [(4, 0.25), (5, 0.5)],
    ]
    assert [len(g) for g in fuse(plans, light_together=False)] == [1] * len(plans)  # benchmarks' switch
    cpu_only = [plan(0, 0.5), plan(1, 1.0), plan(2, 0.25)]
    assert [len(g) for g in fuse(cpu_only)] == [3]  # every pool one CPU actor: one actor runs every stage
    cpu_only[1].pool_size = 2
    assert [len(g) for g in fuse(cpu_only)] == [1, 1, 1]
    resources, size = group_resources(groups[-1])
    assert (resources.num_cpus, resources.batch_size, size) == (0.5, 8, 1)
