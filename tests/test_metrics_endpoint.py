"""Live metrics reach Prometheus: a digits run on the local Ray, then its node's /metrics endpoint read."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid

import polars as pl
import pytest

from raypipe.evaluate.driver import evaluate
from tests.conftest import request_for

pytestmark = pytest.mark.ray

CONFIGS = {"preprocess": ["none", "deskew"], "classify": ["linear"]}
# Ray's metrics agent exports what the driver recorded every few seconds (5 s by default).
WAIT_S = 60


def metrics_port(ray) -> int:
    ports = {node["MetricsExportPort"] for node in ray.nodes() if node["Alive"]}
    assert len(ports) == 1, f"one local node expected, got metrics ports {ports}"
    return ports.pop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def samples(text: str, name: str, run: str) -> dict[str, float]:
    """The samples of Prometheus metric `name` for one run, keyed by their tags (Ray prefixes `ray_`; a
    counter ends in `_total`: the names the README's queries use)."""
    pattern = re.compile(rf"^ray_{name}\{{(.*)\}} (\S+)$")
    found = {}
    for line in text.splitlines():
        match = pattern.match(line)
        if match and f'run="{run}"' in match.group(1):
            found[match.group(1)] = float(match.group(2))
    return found


def tag(labels: str, key: str) -> str:
    return re.search(rf'{key}="([^"]*)"', labels).group(1)


@pytest.fixture(scope="module")
def scraped(ray_cluster, digits_dataset, tmp_path_factory):
    run = f"metrics-{uuid.uuid4().hex[:8]}"  # its own `run` tag: counters add up over a session
    raw = {
        "name": run,
        "task": "digits",
        "stages": [{"name": k, "choices": v} for k, v in CONFIGS.items()],
        "dataset": {"source": str(digits_dataset)},
    }
    result = evaluate(request_for(raw, tmp_path_factory.mktemp("metrics") / "run", calibrate=False))
    items = result.run_dir.read_parquet("items.parquet")
    rows, n_items = items.height, items["item_id"].n_unique()
    port, deadline, text = metrics_port(ray_cluster), time.monotonic() + WAIT_S, ""
    while time.monotonic() < deadline:
        text = scrape(port)
        if exported_all(text, run, rows, n_items):
            break
        time.sleep(1)
    return run, result, text


def exported_all(text: str, run: str, rows: int, n_items: int) -> bool:
    """Whether the agent's last export holds the finished run. An export is a snapshot taken every few
    seconds, so a scrape right after the run can still show one taken while results were arriving (CI saw
    120 of 240 rows): the tests judge the final snapshot, and fail on whatever stands at the deadline."""
    done = sum(samples(text, "raypipe_rows_done_total", run).values())
    stages = samples(text, "raypipe_stage_call_ms_count", run).values()
    gauges = samples(text, "raypipe_config_objective", run)
    return done >= rows and len(stages) == len(CONFIGS) and min(stages) >= n_items and bool(gauges)


def test_rows_and_items_done_count_every_item_and_configuration(scraped):
    run, _, text = scraped
    (rows,) = samples(text, "raypipe_rows_done_total", run).values()
    assert rows == 120 * 2
    (items,) = samples(text, "raypipe_items_done_total", run).values()
    assert items == 120
    assert sum(samples(text, "raypipe_rows_errored_total", run).values()) == 0


def test_each_configuration_exports_its_running_objective(scraped):
    run, result, text = scraped
    gauges = {
        tag(labels, "config"): value
        for labels, value in samples(text, "raypipe_config_objective", run).items()
    }
    expected = dict(result.configs.select("config_id", "accuracy").iter_rows())
    assert gauges == pytest.approx(expected)


def test_stage_call_times_form_a_histogram_per_stage(scraped):
    run, result, text = scraped
    counts = {
        tag(labels, "stage"): value
        for labels, value in samples(text, "raypipe_stage_call_ms_count", run).items()
    }
    items = result.run_dir.read_parquet("items.parquet")
    work = result.manifest["work"]
    for stage in CONFIGS:
        # one observation per item and stage (its mean call time), not per row: rows repeat a shared call
        assert counts[stage] == items["item_id"].n_unique() > 0
        assert work[stage]["calls"] >= counts[stage]
    buckets = samples(text, "raypipe_stage_call_ms_bucket", run)
    infinite = [
        v for labels, v in buckets.items() if 'le="+Inf"' in labels and tag(labels, "stage") == "classify"
    ]
    assert infinite == [counts["classify"]]
    assert pl.Series(list(buckets.values())).min() >= 0
