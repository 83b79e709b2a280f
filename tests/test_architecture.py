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


def test_every_part_of_raypipe_has_a_layer():
    """The layers contract names packages, so a new module inside one is covered; a new top-level package or
    module must be given a layer (errors is the only top-level module)."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    named = {part.strip().removeprefix("raypipe.") for layer in layers for part in layer.split("|")}
    root = REPO / "raypipe"
    parts = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    parts |= {p.stem for p in root.glob("*.py") if p.name != "__init__.py"}
    assert parts == named
    assert {p.stem for p in root.glob("*.py")} == {"__init__", "errors"}


def test_only_the_ray_package_imports_ray():
    import re

    importers = {
        p.relative_to(REPO).parts[:2]
        for p in (REPO / "raypipe").rglob("*.py")
        if re.search(r"^\s*(import ray\b|from ray\b)", p.read_text(), re.M)
    }
    assert importers == {("raypipe", "ray")}


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


def code_strings(path: Path) -> set[str]:
    """The words of a module's string literals and identifiers, docstrings and comments left out."""
    import ast
    import re

    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value))
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
    return words


def test_no_engine_module_names_a_column_of_the_idcard_task():
    """The engine knows a task only through raypipe.spec.task.Task: the idcard task's metric, truth and slice
    columns appear in no engine module's code, only in the task packages (comments and docstrings may
    mention them)."""
    from raypipe.spec.registry import resolve_task

    task = resolve_task("idcard")
    names = {m.name for m in task.metrics} | {f"truth_{f}" for f in task.truth_fields}
    names |= {a.name for a in task.slice_attributes} - {"profile", "rotation"}  # generic words too
    names |= {"id_number", "birth_date"}
    engine = [
        p for p in (REPO / "raypipe").rglob("*.py") if "tasks" not in p.relative_to(REPO / "raypipe").parts
    ]
    assert len(engine) > 25
    found = {f"{p.relative_to(REPO)}: {name}" for p in engine for name in names & code_strings(p)}
    assert found == set()
    # and the check can see a column when one is named
    assert "key_fields_exact" in code_strings(REPO / "raypipe" / "tasks" / "idcard" / "task.py")
