"""Two-sample drift tests of a batch against the reference, and their family-wise correction (weighted Holm).

Univariate: Kolmogorov-Smirnov for continuous columns, chi-squared on the contingency table of categories
for categorical ones and for continuous ones with few distinct values. KS's exact distribution assumes no
ties; on a column with a point mass (a card's width: most are 640) it almost never fires (measured: 0 of
2,000 draws at p <= 0.05), so ties are broken at random (seeded), which makes that distribution exact
again. The chi-squared approximation overstates small cells, so rare categories are pooled and a
two-category table with an expected count under 5 takes Fisher's exact p-value instead.
Multivariate: the maximum mean discrepancy with a Gaussian kernel and a permutation p-value; everything the
kernel depends on (scaling, bandwidth) is computed on the pooled sample, so the permutation stays exact.
The family's tests are corrected together by Holm's procedure with weights, which keeps the family-wise
error rate at `alpha` under any dependence between the tests while giving the strongest test most of the
level. A test whose samples are too small steps aside: it is reported with its reason, never fires, and
its share of the level goes to the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

# The level the family is tested at. raypipe promises at most 5 % false alarms on unshifted batches. Weighted
# Holm over tests whose p-values are exact fires at most alpha, and these fire close to it: at alpha 0.05,
# 4.2 % of 3,600 unshifted digits checks and up to 5.3 % in a cell of 300 (MONITORING.md). Testing at 4 %
# keeps every reference and batch size under the promise with a margin a few hundred checks can show.
FAMILY_ALPHA = 0.04
# Shares of the family-wise level by group of tests (see MONITORING.md): the slice-mix test is the most
# powerful against the shifts that move the objective, the others localise drift and catch what the mix
# cannot see (a new kind of degradation). Groups a check lacks give their share to the others.
GROUP_WEIGHTS: dict[str, float] = {"mix": 0.7, "multivariate": 0.1, "feature": 0.15, "output": 0.05}
# A continuous column with this many distinct reference values or fewer is tested as categories.
FEW_VALUES = 12
RARE_TOTAL = 10  # categories seen fewer times than this in both samples together are pooled
MIN_EXPECTED = 5.0
MMD_PERMUTATIONS = 1000
MMD_MAX_REFERENCE = 600
# Smallest samples a test runs on (below: it steps aside). A univariate test of 5 values against many has
# an attainable p-value far under its share of the level; the MMD's median bandwidth needs a few rows.
MIN_VALUES = 5
MIN_ROWS_MMD = 10


@dataclass(frozen=True)
class DriftTest:
    """One test of the family, before and after the correction."""

    name: str  # the column tested, or "all features" / the slice attribute
    group: str  # "feature", "output", "multivariate" or "mix"
    test: str  # "ks", "chi2", "mmd" or "mix-share"
    statistic: float
    p_value: float
    detail: str = ""
    weight: float = 0.0
    p_corrected: float = 1.0
    drifted: bool = False
    stepped_aside: str = ""  # why the test did not run (too few items); empty when it ran


def stepped_aside(name: str, group: str, why: str) -> DriftTest:
    """A test that did not run: p = 1, no weight, never drifted, and the reason for the report."""
    return DriftTest(name, group, "none", 0.0, 1.0, why, stepped_aside=why)


def ks_test(reference: np.ndarray, batch: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (exact for small samples, as scipy decides);
    tied values are first put in a random (seeded) order, so the statistic's null distribution is the
    continuous one that scipy computes."""
    pooled = np.concatenate([reference, batch])
    if len(np.unique(pooled)) < len(pooled):
        order = np.lexsort((np.random.default_rng(seed).random(len(pooled)), pooled))
        ranks = np.empty(len(pooled))
        ranks[order] = np.arange(len(pooled))
        reference, batch = ranks[: len(reference)], ranks[len(reference) :]
    result = stats.ks_2samp(reference, batch)
    return float(result.statistic), float(result.pvalue)


def chi2_test(reference: Sequence[object], batch: Sequence[object]) -> tuple[float, float, int]:
    """Chi-squared test of homogeneity of two samples of categories: (statistic, p-value, degrees of freedom).

    Categories seen fewer than RARE_TOTAL times in all are pooled into one; one category in all gives
    (0, 1, 0); a 2x2 table with an expected count under MIN_EXPECTED takes Fisher's exact p-value."""
    table = _contingency(reference, batch)
    if table.shape[1] < 2:
        return 0.0, 1.0, 0
    statistic, p_value, dof, expected = stats.chi2_contingency(table, correction=False)
    if table.shape[1] == 2 and expected.min() < MIN_EXPECTED:
        p_value = stats.fisher_exact(table).pvalue
    return float(statistic), float(p_value), int(dof)


def _contingency(reference: Sequence[object], batch: Sequence[object]) -> np.ndarray:
    categories = sorted({str(v) for v in [*reference, *batch]})
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((2, len(categories)))
    for row, sample in enumerate((reference, batch)):
        for value in sample:
            table[row, index[str(value)]] += 1
    rare = table.sum(axis=0) < RARE_TOTAL
    if rare.sum() >= 1 and (~rare).sum() >= 1:
        table = np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)])
    return table


def univariate_test(name: str, group: str, kind: str, reference: np.ndarray, batch: np.ndarray) -> DriftTest:
    """KS or chi-squared for one column, nulls dropped; a column the batch lacks entirely is not drift."""
    reference = reference[~_missing(reference)]
    batch = batch[~_missing(batch)]
    if len(reference) < MIN_VALUES or len(batch) < MIN_VALUES:
        why = f"{len(reference)} reference and {len(batch)} batch values: the test needs {MIN_VALUES} of each"
        return stepped_aside(name, group, why)
    if kind == "categorical" or len(np.unique(reference)) <= FEW_VALUES:
        statistic, p_value, dof = chi2_test(list(reference), list(batch))
        return DriftTest(name, group, "chi2", statistic, p_value, f"{dof} dof")
    statistic, p_value = ks_test(reference.astype(float), batch.astype(float))
    return DriftTest(name, group, "ks", statistic, p_value)


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.array([v is None for v in values], dtype=bool)


def robust_scale(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column centre (median) and scale (IQR, else standard deviation, else 1) of the reference."""
    centre = np.median(reference, axis=0)
    q75, q25 = np.percentile(reference, [75, 25], axis=0)
    scale = q75 - q25
    spread = reference.std(axis=0)
    scale = np.where(scale > 0, scale, np.where(spread > 0, spread, 1.0))
    return centre, scale


def mmd_test(
    reference: np.ndarray,
    batch: np.ndarray,
    permutations: int = MMD_PERMUTATIONS,
    seed: int = 0,
) -> tuple[float, float]:
    """Squared MMD (biased estimate, Gaussian kernel, median-heuristic bandwidth) and its permutation p-value.

    Columns are scaled by the pooled sample's robust spread first, so no feature dominates by its units
    (the pooled sample, not the reference: a scale the permutations cannot move keeps the test exact). The
    reference is subsampled to MMD_MAX_REFERENCE rows (seeded) to bound the kernel matrix."""
    rng = np.random.default_rng(seed)
    if len(reference) > MMD_MAX_REFERENCE:
        reference = reference[rng.choice(len(reference), MMD_MAX_REFERENCE, replace=False)]
    pooled = np.vstack([reference, batch])
    centre, scale = robust_scale(pooled)
    pooled = (pooled - centre) / scale
    squared = _squared_distances(pooled)
    bandwidth = float(np.median(squared[np.triu_indices(len(pooled), k=1)]))
    kernel = np.exp(-squared / (bandwidth if bandwidth > 0 else 1.0))
    m, n = len(reference), len(batch)
    signs = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)])
    observed = float(signs @ kernel @ signs)
    shuffled = np.stack([rng.permutation(signs) for _ in range(permutations)], axis=1)
    null = np.einsum("ij,ij->j", shuffled, kernel @ shuffled)
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (permutations + 1)
    return observed, p_value


def _squared_distances(points: np.ndarray) -> np.ndarray:
    norms = np.sum(points**2, axis=1)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * points @ points.T, 0.0)


def holm_adjusted(p_values: Sequence[float], weights: Sequence[float] | None = None) -> list[float]:
    """Holm's step-down adjusted p-values, weighted (Holm 1979): reject where adjusted <= alpha.

    With weights w (summing to 1), the test with the smallest p/w is compared with w * alpha, the next
    with w / (the weight left) * alpha, and so on; equal weights give the textbook Holm."""
    p = np.asarray(p_values, dtype=float)
    w = np.full(len(p), 1.0 / len(p)) if weights is None else np.asarray(weights, dtype=float)
    if len(p) == 0:
        return []
    w = w / w.sum()
    order = np.argsort(p / w, kind="stable")
    adjusted = np.empty(len(p))
    running, left = 0.0, 1.0
    for i in order:
        running = max(running, min(1.0, p[i] * left / w[i]))
        adjusted[i] = running
        left -= w[i]
    return adjusted.tolist()


def correct_family(tests: list[DriftTest], alpha: float = FAMILY_ALPHA) -> list[DriftTest]:
    """The tests with their weights, weighted-Holm corrected p-values and drift flags; tests that stepped
    aside keep weight 0 and p 1 and give their share to the tests that ran."""
    ran = [t for t in tests if not t.stepped_aside]
    if not ran:
        return list(tests)
    present = {t.group for t in ran}
    total = sum(GROUP_WEIGHTS[g] for g in present)
    sizes = {g: sum(t.group == g for t in ran) for g in present}
    weights = [GROUP_WEIGHTS[t.group] / total / sizes[t.group] for t in ran]
    adjusted = iter(holm_adjusted([t.p_value for t in ran], weights))
    shares = iter(weights)
    out = []
    for t in tests:
        if t.stepped_aside:
            out.append(t)
            continue
        corrected = next(adjusted)
        out.append(replace(t, weight=next(shares), p_corrected=corrected, drifted=corrected <= alpha))
    return out
