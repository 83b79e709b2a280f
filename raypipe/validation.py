"""Checks a parsed spec against the registry: every choice resolves and its parameters fit its signature."""

from __future__ import annotations

from pydantic import ValidationError

from raypipe.errors import UnknownComponentError
from raypipe.registry import params_model, resolve
from raypipe.spec import PipelineSpec


def check_components(spec: PipelineSpec) -> list[str]:
    """Every problem with the spec's choices and exclusions, each prefixed by its YAML path."""
    problems: list[str] = []
    for i, stage in enumerate(spec.stages):
        for j, choice in enumerate(stage.choices):
            problems += _check_choice(
                stage.registry_kind, choice.name, choice.params, f"stages[{i}].choices[{j}]"
            )
    problems += _check_exclusions(spec)
    return problems


def _check_choice(kind: str, name: str, params: dict, path: str) -> list[str]:
    try:
        cls = resolve(kind, name)
    except UnknownComponentError as exc:
        return [f"{path}.name: {exc}"]
    try:
        params_model(cls).model_validate(params)
    except ValidationError as exc:
        return [f"{path}.params{_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
    return []


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
