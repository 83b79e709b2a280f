"""The pipeline spec: pydantic models of the YAML, loading, and validation with full YAML paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raypipe.errors import ConfigError, RaypipeError

_STRICT = ConfigDict(extra="forbid")


class ResourceSpec(BaseModel):
    """Overrides of what an implementation declares it needs."""

    model_config = _STRICT
    num_cpus: float | None = Field(None, ge=0, description="CPUs one actor of this choice reserves.")
    num_gpus: float | None = Field(None, ge=0, description="GPU share one actor takes (fractions allowed).")
    batch_size: int | None = Field(None, ge=1, description="Items handed to the actor per call.")


class ChoiceSpec(BaseModel):
    """One interchangeable implementation of a stage, with its parameters."""

    model_config = _STRICT
    name: str = Field(description="Registered name (e.g. 'clahe') or an import path 'package.module:Class'.")
    label: str | None = Field(None, description="Unique label within the stage; defaults to `name`.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the implementation."
    )
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Resource overrides.")

    @property
    def key(self) -> str:
        return self.label or self.name


class StageSpec(BaseModel):
    """One stage of the pipeline and its choices, in the order they run."""

    model_config = _STRICT
    name: str = Field(description="Stage name; becomes the result column holding the choice.")
    kind: str | None = Field(None, description="Registry kind of the implementations; defaults to `name`.")
    choices: list[ChoiceSpec] = Field(min_length=1, description="Interchangeable implementations.")

    @property
    def registry_kind(self) -> str:
        return self.kind or self.name

    @field_validator("choices", mode="before")
    @classmethod
    def _names_as_choices(cls, value: Any) -> Any:
        # `choices: [none, clahe]` is shorthand for `[{name: none}, {name: clahe}]`.
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class GenerateSpec(BaseModel):
    """How to make the synthetic dataset when `dataset.source` does not exist yet."""

    model_config = _STRICT
    profile: str = Field("mixed", description="Distribution profile (clean, rotated, ..., mixed).")
    n: int = Field(40, ge=1, description="Number of cards.")
    seed: int = Field(0, description="Seed; the same seed gives the same bytes.")


class DatasetSpec(BaseModel):
    """Where the labelled items come from."""

    model_config = _STRICT
    source: str = Field(description="Parquet file, folder, or 'hf:<repo>' (relative paths: from the CWD).")
    generate: GenerateSpec | None = Field(
        None, description="Generate `source` with these settings if absent."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N items.")


class SLASpec(BaseModel):
    """What a configuration must meet to be deployable."""

    model_config = _STRICT
    p95_latency_ms: float = Field(gt=0, description="Upper bound on end-to-end p95 latency per item (ms).")
    min_assertion_accuracy: float = Field(ge=0, le=1, description="Lower bound on course-assertion accuracy.")


class RaySpec(BaseModel):
    """How to reach Ray; the CLI's --address overrides `address`."""

    model_config = _STRICT
    address: str | None = Field(None, description="Existing cluster ('auto', 'ray://...'); none: embedded.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded local Ray (default: all).")


class PipelineSpec(BaseModel):
    """A whole pipeline: stages in order, their choices, the data, and the SLA."""

    model_config = _STRICT
    name: str = Field(description="Pipeline name, used in run directory names.")
    description: str = Field("", description="Free text.")
    stages: list[StageSpec] = Field(min_length=1, description="Stages in the order they run; OCR last.")
    exclude: list[dict[str, str | list[str]]] = Field(
        default_factory=list,
        description="Combinations not to run: each maps stage names to a choice label (or a list of them).",
    )
    dataset: DatasetSpec = Field(description="The labelled items.")
    sla: SLASpec = Field(description="The service-level agreement.")
    ray: RaySpec = Field(default_factory=RaySpec, description="Ray connection.")

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineSpec:
        problems = _duplicates([s.name for s in self.stages], "stages", "stage name")
        for i, stage in enumerate(self.stages):
            problems += _duplicates([c.key for c in stage.choices], f"stages[{i}].choices", "choice label")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)


def _duplicates(keys: list[str], path: str, what: str) -> list[str]:
    seen = [k for i, k in enumerate(keys) if k in keys[:i]]
    return [f"{path}: {what} '{k}' appears twice (give one a `label`)" for k in dict.fromkeys(seen)]


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
    """Validate a loaded YAML document: schema first, then every choice against its implementation."""
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_format_error(err) for err in exc.errors()], source=source) from exc
    from raypipe.validation import check_components

    problems = check_components(spec)
    if problems:
        raise ConfigError(problems, source=source)
    return spec


def _format_error(err: dict[str, Any]) -> str:
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path or '(top)'}: {err['msg']}"
