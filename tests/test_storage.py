"""Results that outlive the job: run directories and datasets at file:// and s3:// URIs.

The S3 endpoint is moto's server mode on loopback (a real HTTP S3 API in a thread of this process): no
MinIO package is available here, and moto needs no binary, no network and no account.
"""

from __future__ import annotations

import logging
import socket

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from raypipe.cli import app
from raypipe.engine.datasets import write_table
from raypipe.engine.rundir import RunDir
from raypipe.evaluate.driver import evaluate
from raypipe.spec.registry import resolve_task
from tests.conftest import request_for

pytestmark = pytest.mark.ray
RESULT_FILES = ("run.json", "items.parquet", "configs.parquet", "slices.parquet", "manifest.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A loopback S3 server with bucket `raypipe`; yields the query that points pyarrow URIs at it."""
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any credentials; pyarrow reads them from here
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        admin = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
        )
        admin.create_dir("raypipe")
        yield f"?endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.stop()


def digits_spec(source: str) -> dict:
    return {
        "name": "stored",
        "task": "digits",
        "stages": [
            {"name": "preprocess", "choices": ["none", "threshold"]},
            {"name": "classify", "choices": ["linear"]},
        ],
        "dataset": {"source": source},
    }


def run_at(out: str, source: str) -> RunDir:
    write_table(resolve_task("digits").generate("clean", 12, seed=4), source)
    result = evaluate(request_for(digits_spec(source), out, calibrate=False))
    return result.run_dir


def check_results(run_dir: RunDir) -> None:
    assert all(run_dir.exists(name) for name in RESULT_FILES)
    assert not run_dir.exists("parts")  # the streamed parts were folded into the final files
    items = run_dir.read_parquet("items.parquet")
    assert items.height == 24 and items.select("item_id", "config_id").n_unique() == 24
    assert items["error"].null_count() == 24
    report = CliRunner().invoke(app, ["report", run_dir.location, "--top", "2"])
    assert report.exit_code == 0, report.output
    assert "threshold" in report.output


def test_run_directory_and_dataset_at_file_uris(ray_cluster, tmp_path):
    run_dir = run_at(f"file://{tmp_path}/runs/r1", f"file://{tmp_path}/data/digits.parquet")
    check_results(run_dir)
    assert str(run_dir) == f"{tmp_path}/runs/r1"  # a local URI is shown as the path the user can open
    local = pl.read_parquet(tmp_path / "runs" / "r1" / "configs.parquet")
    assert local.height == 2 and local["n_items"].to_list() == [12, 12]


def test_run_directory_and_dataset_on_an_s3_endpoint(ray_cluster, s3_endpoint):
    out = "s3://raypipe/runs/r1" + s3_endpoint
    run_dir = run_at(out, "s3://raypipe/data/digits.parquet" + s3_endpoint)
    check_results(run_dir)
    fs, root = pafs.FileSystem.from_uri(out)
    assert root == "raypipe/runs/r1"
    configs = pq.read_table(f"{root}/configs.parquet", filesystem=fs)
    assert configs.num_rows == 2 and configs.column("n_items").to_pylist() == [12, 12]
    assert "testing" not in run_dir.read_bytes("run.json").decode()  # credentials come from the environment


def test_a_resumed_run_drops_its_unfinished_items_earlier_rows_from_the_parts(tmp_path):
    """The items a resumed run runs again lose their earlier rows, part by part (a part left empty goes),
    so every (item, configuration) keeps one row and finalizing need not deduplicate."""
    import pyarrow as pa

    run_dir = RunDir(str(tmp_path / "run")).make()
    parts = [(["a", "a", "b"], [0, 1, 0]), (["c", "c"], [0, 1]), (["b", "d"], [1, 0])]
    for index, (items, configs) in enumerate(parts):
        run_dir.write_part(pa.table({"item_id": items, "config_index": configs}), index)
    assert run_dir.drop_from_parts({"b", "c"}) == 4
    assert len(run_dir.part_names()) == 2  # the part of c alone is gone
    rows = run_dir.read_parts().sort("item_id", "config_index")
    assert rows.rows() == [("a", 0), ("a", 1), ("d", 0)]
    assert run_dir.drop_from_parts({"b", "c"}) == 0  # again: nothing left to drop


def test_parts_are_scanned_together_and_parts_of_other_schemas_still_join(tmp_path):
    """Parts of one schema are read by one scan (a concat of one scan per part stays a union of scans under
    an aggregate, and kept buffers that grew with the parts: BENCHMARKS.md section 3); a part whose schema
    differs (no error yet: a null column) still joins the others, as before."""
    import pyarrow as pa

    run_dir = RunDir(str(tmp_path / "run")).make()
    for index in range(3):
        run_dir.write_part(
            pa.table({"item_id": [f"i{index}"], "error": pa.array(["boom"], pa.string())}), index
        )
    same = run_dir.scan_parts()
    plan = same.select(pl.col("item_id").len()).explain()  # an aggregate over the parts, as finalize's
    assert "UNION" not in plan and same.collect()["item_id"].sort().to_list() == ["i0", "i1", "i2"]
    run_dir.write_part(pa.table({"item_id": ["i3"], "error": pa.nulls(1), "extra": [1.0]}), 3)
    mixed = run_dir.scan_parts().collect().sort("item_id")
    assert mixed["error"].to_list() == ["boom"] * 3 + [None] and mixed["extra"].to_list() == [None] * 3 + [
        1.0
    ]
