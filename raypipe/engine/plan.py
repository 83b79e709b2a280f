"""The execution plan, pure: operators per (stage, resource class), pool sizes, the operators that share one
actor (`fuse`), and each choice's identity.

The runner turns these plans into Ray Data operators. Pools are sized so the cluster never deadlocks:
the heaviest stage (the one whose choices ask for the most CPU per actor, the OCR engines in the ID-card
pipeline) gets most actors, every other operator one, and CPU shares shrink so that half a CPU stays
free for Ray Data's own tasks (on 2 cores an actor pool that takes every CPU waits forever).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from raypipe.engine.cache import CacheConfig, identity_key
from raypipe.engine.execution import ChoiceRef
from raypipe.spec.registry import effective_params, resolve
from raypipe.spec.schema import ChoiceSpec, PipelineSpec, StageSpec
from raypipe.spec.stage import Resources
from raypipe.spec.task import Task

CPU_HEADROOM = 0.5


@dataclass
class OperatorPlan:
    """One Ray Data operator: the choices of one stage that share a resource class."""

    stage_index: int
    stage_name: str
    choices: dict[str, ChoiceRef]
    resources: Resources
    finalize: bool
    pool_size: int = 1
    # the actors its batches are cut for: the pool the cluster allows, before the run's items cap it
    # (`size_pools`), so that a small run's results still come in small batches
    batches_for: int = 1
    devices: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        gpu = f", {self.resources.num_gpus:g} GPU" if self.resources.num_gpus else ""
        cpu = f"{self.resources.num_cpus:.2f} CPU"
        choices = ", ".join(f"{c} on {self.devices.get(c, 'cpu')}" for c in self.choices)
        return f"{self.stage_name}: {choices}; {self.pool_size} actor(s), {cpu}{gpu} each"


def declared_resources(cls: type, choice: ChoiceSpec) -> Resources:
    """What the implementation declares, overridden by the spec's `resources`."""
    base = getattr(cls, "resources", Resources())
    o = choice.resources
    return Resources(
        num_cpus=base.num_cpus if o.num_cpus is None else o.num_cpus,
        num_gpus=base.num_gpus if o.num_gpus is None else o.num_gpus,
        batch_size=base.batch_size if o.batch_size is None else o.batch_size,
    )


def choice_identity(cls: type, params: dict) -> str:
    """Everything that decides a choice's outputs: implementation, version, effective parameters (defaults
    included), its own `cache_identity` (model hashes, engine versions) and its package's version."""
    identity = getattr(cls, "cache_identity", None)
    parts = {
        "implementation": f"{cls.__module__}:{cls.__qualname__}",
        "version": str(getattr(cls, "version", "1")),
        "params": effective_params(cls, params),
        "identity": identity(**params) if identity is not None else {},
        "package": _package_version(cls.__module__.split(".")[0]),
    }
    return identity_key(parts)


def _package_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def choice_ref(stage: StageSpec, choice: ChoiceSpec, task: Task) -> tuple[ChoiceRef, type]:
    cls = resolve(stage.registry_kind, choice.name, task)
    ref = ChoiceRef(
        label=choice.key,
        kind=stage.registry_kind,
        name=choice.name,
        cls=cls,
        params=dict(choice.params),
        timeout_s=stage.timeout_s,
        cache_key_base=choice_identity(cls, dict(choice.params)),
    )
    return ref, cls


def resolve_choices(spec: PipelineSpec, task: Task) -> list[list[tuple[ChoiceRef, type]]]:
    """Every stage's choices resolved to their classes and identities (`choice_ref`; model hashes, engine
    versions): nothing here needs the cluster, so a driver does it while Ray starts."""
    return [[choice_ref(stage, choice, task) for choice in stage.choices] for stage in spec.stages]


def plan_operators(
    spec: PipelineSpec,
    task: Task,
    cluster_cpus: float,
    cluster_gpus: float,
    max_actors: int | None = None,
    n_items: int | None = None,
    resolved: list[list[tuple[ChoiceRef, type]]] | None = None,
) -> list[OperatorPlan]:
    """Group each stage's choices by resource class (CPUs and GPUs per actor) and size the pools (for a run
    of `n_items` items, when given: `size_pools`); `resolved`: `resolve_choices`, when done already.

    A class's batch is the smallest its choices ask for. Without a GPU, a choice that asks for one joins
    the CPU class: one pool then holds every engine, and its actors share the stage's work evenly (in
    separate pools on 2 cores, EasyOCR's one actor was the whole run's critical path)."""
    plans = []
    resolved = resolved or resolve_choices(spec, task)
    for k, stage in enumerate(spec.stages):
        by_class: dict[tuple[float, float], dict[str, ChoiceRef]] = {}
        batch: dict[tuple[float, float], int] = {}
        devices: dict[str, str] = {}
        for choice, (ref, cls) in zip(stage.choices, resolved[k], strict=True):
            res = declared_resources(cls, choice)
            devices[choice.key] = "gpu" if res.num_gpus and cluster_gpus else "cpu"
            if res.num_gpus and not cluster_gpus:
                res = Resources(res.num_cpus, 0.0, res.batch_size)  # no GPU here: run it on CPU
                devices[choice.key] = "cpu (asks for a GPU; the cluster has none)"
            key = (res.num_cpus, res.num_gpus)
            by_class.setdefault(key, {})[choice.key] = ref
            batch[key] = min(batch.get(key, res.batch_size), res.batch_size)
        classes = list(by_class.items())
        for i, ((cpus, gpus), refs) in enumerate(classes):
            where = {label: devices[label] for label in refs}
            res = Resources(cpus, gpus, batch[(cpus, gpus)])
            plans.append(
                OperatorPlan(k, stage.name, refs, res, finalize=i == len(classes) - 1, devices=where)
            )
    return size_pools(plans, cluster_cpus, cluster_gpus, max_actors, n_items)


def heaviest_stage(plans: list[OperatorPlan]) -> int:
    """The stage whose choices ask for the most CPU per actor (the last such stage on a tie)."""
    most = max(p.resources.num_cpus for p in plans)
    return max(p.stage_index for p in plans if p.resources.num_cpus == most)


def size_pools(
    plans: list[OperatorPlan],
    cluster_cpus: float,
    cluster_gpus: float,
    max_actors: int | None = None,
    n_items: int | None = None,
) -> list[OperatorPlan]:
    """The heaviest stage gets most actors; CPU shares shrink to fit under the headroom.

    A pool has no more actors than `n_items` fills full batches of its own (one at least): a choice's
    declared batch says how many items its call amortizes, so a stage that costs a fraction of a
    millisecond an item (digits: 64 a batch) gets one actor for 120 items, while an OCR engine (one a
    batch) gets its planned pool for 6 cards. Each actor costs a process, Ray Data's import and the models,
    about 2 CPU-s: with one actor for every stage (`fuse`), a 40-digit run took 2.6 s and 3.8 CPU-s, against
    4.6 s and 8.8 CPU-s (`benchmarks/idle_workers.py --compare pools`, BENCHMARKS.md section 8). Its
    batches are still cut for the pool the cluster allows (`batches_for`): results come in as many parts as
    before, for the progress bar and for a resumed run."""
    heavy = heaviest_stage(plans)
    n_heavy = sum(p.stage_index == heavy for p in plans)
    for p in plans:
        want = max(p.resources.num_cpus, 0.01)
        size = int(cluster_cpus / n_heavy // want) if p.stage_index == heavy else int(cluster_cpus // 8)
        if p.resources.num_gpus:
            size = min(size, int(cluster_gpus // p.resources.num_gpus))
        size = max(1, min(size, max_actors or size))
        p.batches_for = size
        p.pool_size = size if n_items is None else max(1, min(size, n_items // p.resources.batch_size))
    budget = max(cluster_cpus - CPU_HEADROOM, 0.1)
    demand = sum(p.pool_size * p.resources.num_cpus for p in plans)
    if demand > budget:
        scale = budget / demand
        for p in plans:
            p.resources = Resources(
                p.resources.num_cpus * scale, p.resources.num_gpus, p.resources.batch_size
            )
    return plans


def fuse(plans: list[OperatorPlan], light_together: bool = True) -> list[list[OperatorPlan]]:
    """The operators, grouped into the pools that run them: each run of consecutive CPU operators outside the
    heaviest stage is one group, run in one actor stage after stage; the heaviest stage's operators and GPU
    operators are groups of their own. Without `light_together` (benchmarks), every operator is its own.

    The light stages (orientation, enhancement, channel: milliseconds to a Tesseract OSD call) cost a pool
    each otherwise: an actor process to start and to feed, and a hop of every item's state (images
    included) between pools. Their work is small beside the heaviest stage's, which keeps its own pool
    sized to the cluster. When every pool is one CPU actor (a run too small to fill two batches of its
    heaviest stage: `size_pools`), one actor runs every stage: a second pool would only overlap stages, and
    costs its own actor's start."""
    if light_together and all(p.pool_size == 1 and not p.resources.num_gpus for p in plans):
        return [list(plans)]
    heavy = heaviest_stage(plans)
    groups: list[list[OperatorPlan]] = []
    for p in plans:
        if light_together and _light(p, heavy) and groups and _light(groups[-1][-1], heavy):
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _light(plan: OperatorPlan, heavy: int) -> bool:
    return plan.stage_index != heavy and not plan.resources.num_gpus


def group_resources(group: list[OperatorPlan]) -> tuple[Resources, int]:
    """One group's actor: the most CPU and GPU any of its operators asks for, the smallest batch; and its
    pool size, the largest of theirs."""
    res = Resources(
        num_cpus=max(p.resources.num_cpus for p in group),
        num_gpus=max(p.resources.num_gpus for p in group),
        batch_size=min(p.resources.batch_size for p in group),
    )
    return res, max(p.pool_size for p in group)


def group_label(group: list[OperatorPlan]) -> str:
    if len(group) == 1:
        return group[0].label
    res, size = group_resources(group)
    stages = " + ".join(dict.fromkeys(p.stage_name for p in group))
    choices = "; ".join(f"{p.stage_name} " + ", ".join(p.choices) for p in group)
    return f"{stages} in one actor ({choices}): {size} actor(s), {res.num_cpus:.2f} CPU each"


@dataclass(frozen=True)
class RunOptions:
    """How to execute: switches for the two savings (benchmarks turn them off) and the pool sizes."""

    share_prefixes: bool = True
    reuse_identical: bool = True
    cache: CacheConfig | None = None
    max_actors_per_pool: int | None = None
    # A search that drops configurations while items flow wants small batches: an actor reads the live set
    # once per batch, and a large batch decided before a drop runs to its end.
    max_batch_size: int | None = None
    fuse_light_stages: bool = True  # `fuse`; off: a pool per operator (benchmarks/scale.py measures both)
