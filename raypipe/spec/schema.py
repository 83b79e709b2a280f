"""The pipeline spec: pydantic models of the YAML (extra="forbid"), every field described.

Loading and checking against the registries lives in `raypipe.spec.validation`, which imports this module
(never the reverse).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid")
# Long enough for any built-in engine on a 16k x 16k image on a busy 2-core machine; short enough that a
# hung call costs minutes, not the run.
DEFAULT_TIMEOUT_S = 300.0


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
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S,
        gt=0,
        description="Longest one call of this stage may take on one item; a call that runs longer becomes "
        "that item's error ('timeout in stage X after N s') and its actor is replaced.",
    )

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
    profile: str = Field("mixed", description="The task generator's distribution profile.")
    n: int = Field(40, ge=1, description="Number of items.")
    seed: int = Field(0, ge=0, description="Seed; the same seed gives the same bytes.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Further options of the task's generator (e.g. `renderer`)."
    )


class DatasetSpec(BaseModel):
    """Where the labelled items come from."""

    model_config = _STRICT
    source: str = Field(
        description="Parquet file, folder, filesystem URI (file://, s3://, gs://, hdfs://) or 'hf:<repo>' "
        "(relative paths: from the working directory)."
    )
    generate: GenerateSpec | None = Field(
        None, description="Generate `source` with these settings if absent."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N items.")


class ObjectiveSpec(BaseModel):
    """The metric that ranks configurations, drives the search and names slice winners."""

    model_config = _STRICT
    metric: str = Field(description="A metric of the task's catalogue (`raypipe tasks TASK` lists them).")


class SLASpec(BaseModel):
    """What a configuration must meet to be deployable: bounds on p95 latency and on any metrics."""

    model_config = _STRICT
    p95_latency_ms: float | None = Field(
        None, gt=0, description="Upper bound on end-to-end p95 service time per item (ms)."
    )
    min: dict[str, float] = Field(
        default_factory=dict, description="Lower bounds on metric means, e.g. {accuracy: 0.9}."
    )
    max: dict[str, float] = Field(
        default_factory=dict, description="Upper bounds on metric means, e.g. {error_rate: 0.1}."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        if isinstance(value, dict) and "min_assertion_accuracy" in value:
            raise ValueError(
                "min_assertion_accuracy was replaced by bounds on any metric of the task: write "
                f"`min: {{METRIC: {value['min_assertion_accuracy']}}}` "
                "(`raypipe tasks TASK` lists the metrics)"
            )
        return value

    def bounds(self) -> list[tuple[str, str, float]]:
        """(metric, "min" | "max", bound) for every metric bound."""
        return [(m, "min", b) for m, b in self.min.items()] + [(m, "max", b) for m, b in self.max.items()]


class SlicesSpec(BaseModel):
    """How results are sliced by item attributes."""

    model_config = _STRICT
    attributes: list[str] | None = Field(
        None, description="Attributes to slice by (default: all the task's)."
    )
    bins: dict[str, list[float]] = Field(
        default_factory=dict, description="Inner bin edges of continuous attributes, overriding the task's."
    )
    quantiles: int = Field(
        3, ge=2, le=10, description="Quantile bins for continuous attributes without edges."
    )
    min_items: int = Field(20, ge=1, description="Fewest items in a cell for it to name a winner.")
    cross: list[list[str]] = Field(
        default_factory=list, description="Pairs of attributes to cross, e.g. [[profile, ocr_engine]]."
    )


class DecisionSpec(BaseModel):
    """What a certified pick promises: within `epsilon` of the best SLA-meeting configuration, and meeting the
    SLA, with probability at least 1 - `delta` (README: "What a pick guarantees")."""

    model_config = _STRICT
    epsilon: float = Field(
        0.02, gt=0, lt=1, description="How far below the best a pick may be, on the objective's scale."
    )
    delta: float = Field(
        0.05, gt=0, lt=0.5, description="The chance, at most, that a certified pick breaks its guarantee."
    )


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
    task: str = Field(description="The task: its data, scorer and metrics (idcard, digits, or a plugin).")
    stages: list[StageSpec] = Field(min_length=1, description="Stages in the order they run.")
    exclude: list[dict[str, str | list[str]]] = Field(
        default_factory=list,
        description="Combinations not to run: each maps stage names to a choice label (or a list of them).",
    )
    dataset: DatasetSpec = Field(description="The items (labelled, or not for label-free objectives).")
    objective: ObjectiveSpec | None = Field(
        None, description="The metric that ranks; default: the task's (with truth or without)."
    )
    sla: SLASpec = Field(default_factory=SLASpec, description="The service-level agreement.")
    slices: SlicesSpec = Field(default_factory=SlicesSpec, description="How results are sliced.")
    decision: DecisionSpec = Field(
        default_factory=DecisionSpec, description="The guarantee a certified pick carries (epsilon, delta)."
    )
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
