"""Paired comparisons of a variant with its float reference on the same items: change, interval, sign test.

A variant and its reference score the same items, so their difference is measured item by item: the
change in mean score, a 95 % interval from a bootstrap that resamples whole groups (the four quarter
turns of one card move together, as they are not independent), the items where only one of the two was
right, and the exact two-sided sign test on those (McNemar's exact test when the scores are 0 or 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from raypipe.decide.stats import sign_test_p

RESAMPLES = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class PairedChange:
    """Variant minus reference on the same items (negative: the variant lost)."""

    change: float
    low: float
    high: float
    better: int  # items the variant scored higher on
    worse: int  # items the reference scored higher on
    p_value: float  # exact two-sided sign test over the untied items
    items: int
    groups: int

    def as_dict(self, prefix: str, scale: float = 1.0) -> dict[str, float | int]:
        """The fields as report columns named `prefix`_..., the change and its bounds times `scale`."""
        values = asdict(self)
        for key in ("change", "low", "high"):
            values[key] *= scale
        return {f"{prefix}_{key}": value for key, value in values.items()}


def paired_change(
    variant: np.ndarray, reference: np.ndarray, groups: np.ndarray | None = None, seed: int = 0
) -> PairedChange:
    """Mean(variant - reference) with its 95 % group-bootstrap interval and the exact sign test.

    Scores are per item in [0, 1]. With no untied item the bootstrap has nothing to resample, so the
    interval is then the exact (Clopper-Pearson) bound on the share of untied groups: 0 untied out of n
    groups still allows a change of up to 1 - 0.025^(1/n) either way.
    """
    variant, reference = np.asarray(variant, float), np.asarray(reference, float)
    if variant.shape != reference.shape or variant.ndim != 1 or len(variant) == 0:
        raise ValueError(
            f"paired scores need two equal non-empty 1-D arrays, got {variant.shape}, {reference.shape}"
        )
    groups = np.arange(len(variant)) if groups is None else np.asarray(groups)
    difference = variant - reference
    better, worse = int(np.sum(difference > 0)), int(np.sum(difference < 0))
    _, index = np.unique(groups, return_inverse=True)
    n_groups = int(index.max()) + 1
    if better == worse == 0:
        bound = 1.0 - ((1.0 - LEVEL) / 2) ** (1.0 / n_groups)
        low, high = -bound, bound
    else:
        low, high = group_bootstrap(difference, index, n_groups, seed)
    return PairedChange(
        change=float(difference.mean()),
        low=low,
        high=high,
        better=better,
        worse=worse,
        p_value=two_sided_sign_test(better, worse),
        items=len(variant),
        groups=n_groups,
    )


def group_bootstrap(
    difference: np.ndarray, index: np.ndarray, n_groups: int, seed: int
) -> tuple[float, float]:
    """Percentile interval of the mean difference when whole groups are resampled with replacement."""
    sums = np.bincount(index, weights=difference, minlength=n_groups)
    counts = np.bincount(index, minlength=n_groups).astype(float)
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(RESAMPLES, n_groups))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def two_sided_sign_test(better: int, worse: int) -> float:
    """Exact two-sided sign test: twice the one-sided tail of the larger count, at most 1."""
    return min(1.0, 2 * sign_test_p(max(better, worse), min(better, worse)))
