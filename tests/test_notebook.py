"""notebooks/results.ipynb runs headless on a small halving run (and on the same run stripped to exhaustive
files), and shows the ranked table, the plots and the halving rounds."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from raypipe.evaluation import evaluate
from raypipe.spec import parse_spec
from tests.conftest import REPO

pytestmark = pytest.mark.ray

NOTEBOOK = REPO / "notebooks" / "results.ipynb"
PLOT_CELLS = 4  # Pareto, heatmap, latency per engine, halving rounds


@pytest.fixture(scope="module")
def halving_run(ray_cluster, tiny_dataset, tmp_path_factory):
    raw = {
        "name": "notebook",
        "stages": [
            {"name": "orient", "choices": ["none"]},
            {"name": "enhance", "choices": ["none"]},
            {"name": "channel", "choices": ["original", "gray"]},
            {
                "name": "ocr",
                "choices": ["tesseract", {"name": "tests.plugin_stages:EchoOCR", "label": "echo"}],
            },
        ],
        "dataset": {"source": str(tiny_dataset)},
        # echo reads no field, so at this SLA it is out after the first round of two items
        "sla": {"p95_latency_ms": 5000, "min_assertion_accuracy": 0.7},
    }
    out = tmp_path_factory.mktemp("nb") / "run"
    return evaluate(parse_spec(raw), out=str(out), search="halving", first_round_items=2)


def execute(run_dir, monkeypatch):
    import nbformat
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    from nbclient import NotebookClient

    monkeypatch.setenv("RAYPIPE_RUN_DIR", str(run_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name=NATIVE_KERNEL_NAME,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def text_of(cell) -> str:
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", ""))
        parts += [str(output.get("data", {}).get(kind, "")) for kind in ("text/plain", "text/html")]
    return "\n".join(parts)


def images(cells) -> int:
    return sum("image/png" in output.get("data", {}) for cell in cells for output in cell.outputs)


def test_notebook_shows_a_halving_run(halving_run, monkeypatch):
    configs = pl.read_parquet(halving_run.run_dir / "configs.parquet")
    assert configs["dropped_round"].to_list().count(0) == 2  # both echo configurations
    cells = execute(halving_run.run_dir, monkeypatch)
    assert not any(output.output_type == "error" for cell in cells for output in cell.outputs)
    assert "search: halving" in text_of(cells[0])
    ranked = text_of(cells[1])
    positions = [ranked.index(config_id) for config_id in configs["config_id"]]
    assert positions == sorted(positions)  # in the file's ranked order: survivors first, as the CLI prints
    assert images(cells) == PLOT_CELLS
    assert "tesseract" in text_of(cells[4]) and "echo" in text_of(cells[4])  # latency rows per engine
    rounds = text_of(cells[5])
    assert "SLA: accuracy upper bound" in rounds and "engine-seconds" in rounds


def test_notebook_shows_an_exhaustive_run(halving_run, monkeypatch, tmp_path):
    # The same files as an exhaustive run writes them: no search.parquet, no drop columns.
    run_dir = tmp_path / "exhaustive"
    shutil.copytree(halving_run.run_dir, run_dir)
    (run_dir / "search.parquet").unlink()
    configs = pl.read_parquet(run_dir / "configs.parquet").drop("dropped_round", "drop_reason")
    configs.write_parquet(run_dir / "configs.parquet")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["search"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    cells = execute(run_dir, monkeypatch)
    assert "search: exhaustive" in text_of(cells[0])
    assert images(cells) == PLOT_CELLS - 1
    assert "no halving rounds" in text_of(cells[5])
