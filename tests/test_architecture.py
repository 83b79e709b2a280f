"""Layers point one way (import-linter contracts in pyproject.toml); Docker and CI install as the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


def test_dockerfile_and_ci_use_the_readme_commands():
    dockerfile = (REPO / "Dockerfile").read_text()
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/install.sh" in dockerfile
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "bash scripts/install.sh" in makefile


def test_cluster_yaml_follows_rays_cluster_schema():
    import json

    import jsonschema
    import ray
    import yaml

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert {"cpu_worker", "gpu_worker"} <= set(config["available_node_types"])
    assert any("scripts/install.sh" in command for command in config["setup_commands"])
    with pytest.raises(jsonschema.ValidationError, match="'many' is not of type 'integer'"):
        jsonschema.validate({**config, "max_workers": "many"}, schema)


def test_cluster_dashboard_listens_on_loopback_only():
    """The dashboard serves the Jobs API, which runs any command: it must not face the network."""
    import yaml

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    starts = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert starts and all("--dashboard-host=127.0.0.1" in c for c in starts)
    assert "0.0.0.0" not in (REPO / "cluster.yaml").read_text()
    assert "ray dashboard cluster.yaml" in (REPO / "cluster.yaml").read_text()  # how to reach it instead
