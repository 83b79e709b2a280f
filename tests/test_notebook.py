"""notebooks/results.ipynb runs headless on a racing run and on an exhaustive run, and shows the ranked
table, the plots, the reweighted ranking and the racing looks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from raypipe.engine.rundir import SearchRequest
from raypipe.evaluate.driver import evaluate
from tests.conftest import REPO, request_for

pytestmark = pytest.mark.ray

NOTEBOOK = REPO / "notebooks" / "results.ipynb"


def spec(source: str) -> dict:
    small = {"resources": {"batch_size": 2}}  # small batches: drops reach the actors while items flow
    # threshold at 240 keeps too little ink (accuracy ~0.28 against ~0.84): the race drops it at an early
    # look whatever order the items arrive in (at the default 128 it scores ~0.65, and whether the race
    # could rule it out by item 110 depended on that order: a CI run once did not)
    faint = {"name": "threshold", "params": {"level": 240}, **small}
    return {
        "name": "notebook",
        "task": "digits",
        "stages": [
            {
                "name": "preprocess",
                "choices": [*({"name": n, **small} for n in ("none", "deskew")), faint],
            },
            {"name": "classify", "choices": [{"name": n, **small} for n in ("linear", "onnx")]},
        ],
        "dataset": {"source": source},
        # a metric bound, not a p95 one: a race can exclude only below a rival that meets the SLA with
        # confidence, and a p95 bound needs ~180 items to be shown met (README: What a pick guarantees)
        "sla": {"min": {"accuracy": 0.5}},
        "slices": {"min_items": 10},
    }


@pytest.fixture(scope="module")
def runs(ray_cluster, digits_dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nb")
    racing = SearchRequest(name="racing", params={"look_every": 10, "tolerance": 0.05})
    raced = evaluate(request_for(spec(str(digits_dataset)), folder / "raced", search=racing, calibrate=False))
    full = evaluate(request_for(spec(str(digits_dataset)), folder / "full", calibrate=False))
    return raced, full


def execute(run_dir, monkeypatch):
    import nbformat
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    from nbclient import NotebookClient

    monkeypatch.setenv("RAYPIPE_RUN_DIR", str(run_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name=NATIVE_KERNEL_NAME, resources={"metadata": {"path": str(REPO)}}
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


def test_notebook_shows_a_racing_run(runs, monkeypatch):
    raced, _ = runs
    configs = raced.configs
    stopped = configs.filter(pl.col("dropped_after_items").is_not_null())
    assert stopped.height >= 1  # the faint threshold cannot race to the end
    cells = execute(raced.run_dir, monkeypatch)
    assert "search: racing" in text_of(cells[0])
    ranked = text_of(cells[1])
    positions = [ranked.index(config_id) for config_id in configs["config_id"]]
    assert positions == sorted(positions)  # in the file's ranked order, as the CLI prints it
    assert "drop_reason" in ranked
    assert images(cells) == 4  # objective vs p95, heatmap, latency, racing looks
    assert "recommended for this mix" in text_of(cells[4])
    assert "configurations still racing" not in text_of(cells[6])  # a plot, not text
    assert stopped["config_id"][0] in text_of(cells[6])


def test_notebook_shows_an_exhaustive_run_and_a_monitoring_check(runs, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from raypipe.cli.monitor import monitor_app
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task
    from raypipe.tasks.digits.data import encode_png

    _, full = runs
    profile = CliRunner().invoke(
        monitor_app, ["reference", str(full.run_dir), "--out", str(tmp_path / "profile")]
    )
    assert profile.exit_code == 0, profile.output
    task = resolve_task("digits")
    write_table(task.generate("mixed", 80, seed=42), str(tmp_path / "same.parquet"))
    # an upside-down batch of the same profile: the upright feature sees it (tests/test_monitor.py checks
    # upside-down ID cards)
    flipped = task.generate("mixed", 80, seed=41)
    turned = [encode_png(np.rot90(task.decode(b), 2)) for b in flipped["image"].to_pylist()]
    flipped = flipped.set_column(flipped.column_names.index("image"), "image", pa.array(turned, pa.binary()))
    write_table(flipped, str(tmp_path / "flipped.parquet"))
    codes = {}
    for name in ("same", "flipped"):
        check = CliRunner().invoke(
            monitor_app,
            ["check", str(tmp_path / "profile"), "--batch", str(tmp_path / f"{name}.parquet"),
             "--out", str(tmp_path / name)],
        )  # fmt: skip
        codes[name] = check.exit_code
        assert check.exit_code in (0, 1), check.output
    assert codes == {"same": 0, "flipped": 1}
    monkeypatch.setenv("RAYPIPE_CHECK_DIR", str(tmp_path / "flipped"))
    cells = execute(full.run_dir, monkeypatch)
    assert "search: exhaustive" in text_of(cells[0])
    assert "there are no looks" in text_of(cells[6])
    # the run's three, then feature distributions, the estimated mix and the reference's history
    assert images(cells) == 3 + 3
    monitoring = text_of(cells[7])
    assert "drifted: True" in monitoring and "80 items" in monitoring
    assert "2 checks, 1 with drift" in text_of(cells[8])
