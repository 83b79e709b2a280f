"""What a task supplies to the engine: its data, its stage kinds, a per-item scorer and a metric catalogue.

The engine (runner, execution, results, search, report, cli) knows a task only through this interface: it
never names a task's columns. A task is a package under `raypipe/tasks/<name>/` (or a plugin in the entry
point group `raypipe.tasks`) whose `Task` subclass says:

- its dataset: `load` and `generate` return an Arrow table with `item_id`, the task's input column, the
  truth columns `truth_<field>` and the slice attributes; `inputs` picks the encoded inputs out of it and
  `decode` turns one into what the first stage takes (this runs inside the actors);
- its stage kinds with their built-in choices (`stages`), on top of the generic ones;
- `score(output, truth)`: one prediction's metric values (pure: no Ray, no I/O);
- `metrics`: the catalogue saying, per metric, whether higher is better, whether it needs truth and which
  interval it takes; the engine aggregates exactly what the catalogue says;
- `default_objective(has_truth)`: the metric that ranks when the spec names none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pyarrow as pa

from raypipe.spec import columns

IntervalMethod = Literal["wilson", "normal", "none"]


@dataclass(frozen=True)
class Metric:
    """One entry of a task's metric catalogue; per-item values are aggregated by their mean."""

    name: str
    description: str
    higher_is_better: bool = True
    needs_truth: bool = True
    # "wilson" for scores in [0, 1] (rates and fractions), "normal" for unbounded values such as an error
    # rate that can exceed 1, "none" for columns reported without an interval.
    interval: IntervalMethod = "wilson"
    # Shown in the ranked table (the objective always is).
    headline: bool = False

    def oriented(self, value: float) -> float:
        """The value on a higher-is-better scale."""
        return value if self.higher_is_better else -value


@dataclass(frozen=True)
class SliceAttribute:
    """A per-item attribute that results are sliced by: categorical, or continuous and binned.

    `bins` are the inner edges of a continuous attribute (e.g. (2.0, 5.0) makes three bins); None means
    quantile bins chosen from the data. `zero_bin` gives exact zeros a bin of their own (a card that was
    not skewed at all is a different population from one skewed a little).
    """

    name: str
    kind: Literal["categorical", "continuous"] = "categorical"
    bins: tuple[float, ...] | None = None
    zero_bin: bool = False
    description: str = ""


@dataclass(frozen=True)
class ItemBox:
    """A region of an item's input drawn in the report: a polygon in the input image's pixels."""

    points: tuple[tuple[float, float], ...]
    label: str = ""


@dataclass(frozen=True)
class FieldView:
    """One field of an item's output shown in the report beside its truth (None: not read / unknown)."""

    name: str
    predicted: str | None
    truth: str | None = None
    # The task's own verdict where plain string equality is not its rule (e.g. normalised text).
    wrong: bool | None = None

    @property
    def differs(self) -> bool:
        """Wrong against a known truth (a field without truth is never counted as wrong)."""
        if self.wrong is not None:
            return self.wrong
        return self.truth is not None and (self.predicted or "") != self.truth


@dataclass(frozen=True)
class ItemView:
    """What the HTML report shows of one input: an image (a uint8 array, HxW or HxWx3; None for no
    image), the regions to draw on it, and whether to scale it up without smoothing (tiny images)."""

    image: Any = None
    boxes: tuple[ItemBox, ...] = ()
    pixelated: bool = False


@dataclass(frozen=True)
class Profile:
    """A named distribution the task's generator can draw."""

    name: str
    description: str


@dataclass
class Task:
    """Base class of tasks. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    truth_fields: ClassVar[tuple[str, ...]] = ()
    slice_attributes: ClassVar[tuple[SliceAttribute, ...]] = ()
    metrics: ClassVar[tuple[Metric, ...]] = ()
    # Task-specific stage kinds: kind -> {choice name -> "package.module:Class"}.
    stages: ClassVar[dict[str, dict[str, str]]] = {}
    # The distributions whose versions a run's manifest records besides the engine's (its stages' engines).
    packages: ClassVar[tuple[str, ...]] = ()
    profiles: ClassVar[tuple[Profile, ...]] = ()
    options: dict[str, Any] = field(default_factory=dict)

    # -- data -------------------------------------------------------------------------------------------
    def load(self, source: str, limit: int | None = None) -> pa.Table:
        """The first `limit` items of `source` (a path, folder, URI or hub name) in the task's schema."""
        raise NotImplementedError

    def generate(self, profile: str, n: int, seed: int, **options: Any) -> pa.Table:
        """`n` synthetic items of `profile`; the same arguments give the same bytes."""
        raise NotImplementedError(f"task '{self.name}' has no generator")

    def inputs(self, table: pa.Table) -> pa.Array | pa.ChunkedArray:
        """The encoded input of each item (binary), in table order."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        """One encoded input as the first stage takes it; raises ValueError for a corrupt one."""
        raise NotImplementedError

    def has_truth(self, table: pa.Table) -> bool:
        """Whether the items carry the truth the truth-needing metrics compare against."""
        names = [columns.truth(f) for f in self.truth_fields if columns.truth(f) in table.column_names]
        return any(table.column(n).null_count < table.num_rows for n in names)

    # -- scoring ----------------------------------------------------------------------------------------
    def score(self, output: Any, truth: Mapping[str, Any]) -> dict[str, Any]:
        """Every catalogue metric for one item's final output (None when the pipeline failed on it).

        A truth-needing metric is None where the item has no truth for it. The returned dict may also hold
        `prediction` (a short string shown in items.parquet) and label-free outputs the task declares
        in `outputs`.
        """
        raise NotImplementedError

    def default_objective(self, has_truth: bool) -> str:
        """The metric that ranks when the spec names none."""
        raise NotImplementedError

    def check_stages(self, kinds: list[str]) -> list[str]:
        """Problems with the pipeline's stage kinds, in order (e.g. the scorer needs a given last stage)."""
        return []

    def unwritable(self, alphabet: str, table: pa.Table) -> dict[str, str]:
        """The metrics that are 0 on every item of `table` (that has truth for them) for a pipeline whose text
        holds only `alphabet`'s characters (`Stage.alphabet`), each with why: e.g. a name no item has in
        that script. Empty when none is, or when the task cannot tell."""
        return {}

    # Label-free per-item outputs of `score` that monitoring keeps (e.g. an OCR confidence).
    outputs: ClassVar[tuple[str, ...]] = ()

    # -- monitoring -------------------------------------------------------------------------------------
    # Label-free features of one decoded input, for drift tests; name -> "continuous" | "categorical".
    features: ClassVar[dict[str, str]] = {}

    def item_features(self, decoded: Any) -> dict[str, float | str]:
        """The `features` of one decoded input (label-free, cheap next to the pipeline)."""
        return {}

    # -- the HTML report's item browser -----------------------------------------------------------------
    def view_input(self, data: bytes, row: Mapping[str, Any]) -> ItemView:
        """How the report shows one item's input: `data` is its encoded input, `row` its dataset row (truth
        and any annotations). The default shows the decoded input when it is an image array."""
        import numpy as np

        decoded = self.decode(data)
        if isinstance(decoded, np.ndarray) and decoded.ndim in (2, 3):
            return ItemView(image=decoded, pixelated=max(decoded.shape[:2]) < 64)
        return ItemView()

    def view_fields(self, prediction: str | None, truth: Mapping[str, Any]) -> list[FieldView]:
        """One configuration's output on one item as fields against the truth (`truth` holds the dataset's
        `truth_<field>` values; empty where the dataset is unavailable). The report's error kinds are the
        names of the fields that differ. The default: the whole prediction against the first truth field."""
        first = self.truth_fields[0] if self.truth_fields else None
        value = truth.get(columns.truth(first)) if first else None
        return [FieldView(first or "prediction", prediction, None if value is None else str(value))]

    # -- helpers the engine uses ------------------------------------------------------------------------
    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        known = ", ".join(m.name for m in self.metrics)
        raise KeyError(f"task '{self.name}' has no metric '{name}' (metrics: {known})")

    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def slice_attribute(self, name: str) -> SliceAttribute | None:
        return next((a for a in self.slice_attributes if a.name == name), None)

    def profile_names(self) -> list[str]:
        return [p.name for p in self.profiles]
