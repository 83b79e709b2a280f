"""The configuration space: expand a spec into configurations with stable ids, and their prefix tree."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

from raypipe.spec.schema import ChoiceSpec, PipelineSpec


@dataclass(frozen=True)
class Configuration:
    """One path through the pipeline: a choice label per stage, in stage order."""

    config_id: str
    stage_names: tuple[str, ...]
    labels: tuple[str, ...]

    def choices(self) -> dict[str, str]:
        return dict(zip(self.stage_names, self.labels, strict=True))

    def prefix(self, length: int) -> tuple[str, ...]:
        return self.labels[:length]

    def describe(self) -> str:
        return " > ".join(f"{s}={c}" for s, c in zip(self.stage_names, self.labels, strict=True))


def config_id(choices: list[tuple[str, ChoiceSpec]]) -> str:
    """Stable id: a hash of each stage's implementation name and parameters (labels do not count)."""
    canonical = [[stage, choice.name, choice.params] for stage, choice in choices]
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _excluded(labels: dict[str, str], rules: list[dict[str, str | list[str]]]) -> bool:
    def matches(rule: dict[str, str | list[str]]) -> bool:
        return all(labels[stage] in ([v] if isinstance(v, str) else v) for stage, v in rule.items())

    return any(matches(rule) for rule in rules)


def expand_configurations(spec: PipelineSpec) -> list[Configuration]:
    """The cartesian product of the stages' choices, less the exclusions, in a stable order."""
    names = tuple(s.name for s in spec.stages)
    configs = []
    for combo in itertools.product(*(s.choices for s in spec.stages)):
        labels = tuple(c.key for c in combo)
        if _excluded(dict(zip(names, labels, strict=True)), spec.exclude):
            continue
        configs.append(Configuration(config_id(list(zip(names, combo, strict=True))), names, labels))
    return configs


def unique_prefixes(configs: list[Configuration], length: int) -> set[tuple[str, ...]]:
    """Distinct choice prefixes of the given length: how often stage `length` runs per item when shared."""
    return {c.prefix(length) for c in configs}


def prefix_tree(configs: list[Configuration]) -> dict:
    """Nested dict label -> subtree; leaves map the last label to the config id."""
    tree: dict = {}
    for config in configs:
        node = tree
        for label in config.labels[:-1]:
            node = node.setdefault(label, {})
        node[config.labels[-1]] = config.config_id
    return tree


def invocations_per_item(configs: list[Configuration], shared: bool = True) -> list[int]:
    """Stage calls per item for each stage: unique prefixes when shared, one per configuration when not."""
    n_stages = len(configs[0].labels) if configs else 0
    if not shared:
        return [len(configs)] * n_stages
    return [len(unique_prefixes(configs, k + 1)) for k in range(n_stages)]
