"""Load a spec and check it against the registries: every problem at once, each with its full YAML path.

A spec is code: a choice named "package.module:Class" imports that module while the spec is checked, as
an import statement would. Load specs you would run as code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raypipe.errors import ConfigError, RaypipeError, UnknownComponentError
from raypipe.spec.registry import params_model, resolve, resolve_task
from raypipe.spec.schema import PipelineSpec
from raypipe.spec.task import Task


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a YAML spec; raises ConfigError listing every problem with its YAML path."""
    path = Path(path)
    if not path.is_file():
        raise RaypipeError(f"spec file not found: {path} (see configs/ for examples)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(path)) from exc
    return parse_spec(raw, source=str(path))


def parse_spec(raw: Any, source: str = "spec") -> PipelineSpec:
    """Validate a loaded YAML document: schema first, then the task, every choice, the objective and SLA."""
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_format_error(err) for err in exc.errors()], source=source) from exc
    problems = check_components(spec)
    if problems:
        raise ConfigError(problems, source=source)
    return spec


def task_of(spec: PipelineSpec) -> Task:
    """The spec's task instance; ConfigError when no registry knows it."""
    try:
        return resolve_task(spec.task)
    except UnknownComponentError as exc:
        raise ConfigError([f"task: {exc}"]) from exc


def check_components(spec: PipelineSpec) -> list[str]:
    """Every problem with the spec's task, choices, exclusions, objective, SLA and slices."""
    try:
        task = resolve_task(spec.task)
    except UnknownComponentError as exc:
        return [f"task: {exc}"]
    problems: list[str] = []
    for i, stage in enumerate(spec.stages):
        for j, choice in enumerate(stage.choices):
            path = f"stages[{i}].choices[{j}]"
            problems += _check_choice(stage.registry_kind, choice.name, choice.params, path, task)
    problems += [f"stages: {p}" for p in task.check_stages([s.registry_kind for s in spec.stages])]
    problems += _check_exclusions(spec)
    problems += _check_metrics(spec, task)
    problems += _check_slices(spec, task)
    return problems


def _check_choice(kind: str, name: str, params: dict, path: str, task: Task) -> list[str]:
    try:
        cls = resolve(kind, name, task)
    except UnknownComponentError as exc:
        return [f"{path}.name: {exc}"]
    try:
        params_model(cls).model_validate(params)
    except ValidationError as exc:
        return [f"{path}.params{_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
    return []


def _check_metrics(spec: PipelineSpec, task: Task) -> list[str]:
    known = task.metric_names()
    listing = ", ".join(known)
    problems = []
    if spec.objective and spec.objective.metric not in known:
        problems.append(
            f"objective.metric: task '{task.name}' has no metric '{spec.objective.metric}' ({listing})"
        )
    for metric, side, _ in spec.sla.bounds():
        if metric not in known:
            problems.append(f"sla.{side}.{metric}: task '{task.name}' has no metric '{metric}' ({listing})")
    return problems


def _check_slices(spec: PipelineSpec, task: Task) -> list[str]:
    known = [a.name for a in task.slice_attributes]
    problems = []
    named = [("slices.attributes", a) for a in spec.slices.attributes or []]
    named += [(f"slices.bins.{a}", a) for a in spec.slices.bins]
    named += [(f"slices.cross[{i}]", a) for i, pair in enumerate(spec.slices.cross) for a in pair]
    for path, attribute in named:
        if attribute not in known:
            problems.append(f"{path}: task '{task.name}' has no attribute '{attribute}' ({', '.join(known)})")
    problems += [
        f"slices.cross[{i}]: give two attributes, got {len(pair)}"
        for i, pair in enumerate(spec.slices.cross)
        if len(pair) != 2
    ]
    return problems


def _loc(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _check_exclusions(spec: PipelineSpec) -> list[str]:
    labels = {s.name: [c.key for c in s.choices] for s in spec.stages}
    problems = []
    for i, rule in enumerate(spec.exclude):
        for stage_name, value in rule.items():
            path = f"exclude[{i}].{stage_name}"
            if stage_name not in labels:
                problems.append(f"{path}: no stage named '{stage_name}' (stages: {', '.join(labels)})")
                continue
            for label in [value] if isinstance(value, str) else value:
                if label not in labels[stage_name]:
                    known = ", ".join(labels[stage_name])
                    problems.append(
                        f"{path}: stage '{stage_name}' has no choice '{label}' (choices: {known})"
                    )
    return problems


def _format_error(err: dict[str, Any]) -> str:
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path or '(top)'}: {err['msg']}"
