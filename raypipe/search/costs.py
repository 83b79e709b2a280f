"""What a set of configurations costs per item when shared prefixes run once: racing's engine fraction.

With prefix sharing the engine calls stage k once per item for each distinct choice prefix (the labels of
stages 0..k) among the configurations it still runs, so an item costs the sum over those (stage, prefix)
pairs of that stage's time. Both live racing (from the rows' `cpu_<stage>_ms`) and replay (from an
exhaustive run's `latency_<stage>_ms`) price work this way, so their fractions compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def prefix_groups(labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Per stage, each configuration's prefix group (configurations that share the stage's call)."""
    n_stages = len(labels[0]) if labels else 0
    groups = []
    for k in range(n_stages):
        index: dict[tuple[str, ...], int] = {}
        groups.append(np.array([index.setdefault(tuple(lab[: k + 1]), len(index)) for lab in labels]))
    return groups


def group_costs(stage_costs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per item and prefix group: the stage's cost of that group's call (NaN where no configuration of the
    group has a value). `stage_costs` is (items, K); configurations of a group carry the same shared call."""
    out = np.full((stage_costs.shape[0], int(groups.max()) + 1), np.nan)
    for g in range(out.shape[1]):
        with np.errstate(all="ignore"):
            column = stage_costs[:, groups == g]
            present = ~np.isnan(column).all(axis=1)
            out[present, g] = np.nanmax(column[present], axis=1)
    return out


def live_cost(costs: list[np.ndarray], groups: list[np.ndarray], live: np.ndarray) -> np.ndarray:
    """Per item: what the engine spends running the `live` configurations (`costs`: per stage, an
    (items, prefix groups) array)."""
    total = np.zeros(costs[0].shape[0]) if costs else np.zeros(0)
    for cost, group in zip(costs, groups, strict=True):
        running = np.zeros(cost.shape[1], dtype=bool)
        running[np.unique(group[live])] = True
        total += np.nansum(cost[:, running], axis=1)
    return total


class CostTracker:
    """Live racing's running account: the cost of the calls its rows report, and the mean cost of every
    (stage, prefix) call, whose sum prices one item of an exhaustive run."""

    def __init__(self, labels: Sequence[Sequence[str]]):
        self.groups = prefix_groups(labels)
        self.sums = [np.zeros(int(g.max()) + 1) for g in self.groups]
        self.counts = [np.zeros(int(g.max()) + 1) for g in self.groups]
        self.spent = 0.0

    def add(self, stage_costs: list[np.ndarray]) -> None:
        """Per stage, an (items, K) array of the rows' stage times (NaN where there is no row)."""
        for k, matrix in enumerate(stage_costs):
            cost = group_costs(matrix, self.groups[k])
            self.sums[k] += np.nansum(cost, axis=0)
            self.counts[k] += (~np.isnan(cost)).sum(axis=0)
            self.spent += float(np.nansum(cost))

    def exhaustive_per_item(self) -> float:
        """The estimated cost of one item through every configuration."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(sum(np.nansum(s / c) for s, c in zip(self.sums, self.counts, strict=True)))
