"""The betting test's arithmetic in place (`confseq._bet`) is the formula's, to the bit: checked against the
version that made new arrays at every step (kept here as the reference), on random evidence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from raypipe.decide import confseq


def reference_bet(e: confseq.Evidence, x: np.ndarray) -> confseq.Evidence:
    """One row, as `confseq._bet` was first written (before it worked in place)."""
    seen = ~np.isnan(x)
    x = np.clip(np.where(seen, x, 0.0), e.low, e.high)
    scale = (e.high - e.low) ** 2 * confseq.PRIOR_SECOND_MOMENT
    mean, second = e.total / (e.n + 1), (scale + e.total_sq) / (e.n + 1)
    cap = confseq.LAMBDA_CAP / max(-e.low, 1e-9)
    stake = np.clip(mean / second, 0.0, cap)
    log_wealth = e.log_wealth + np.where(seen, np.log1p(stake * x), 0.0)
    min_p = np.minimum(e.min_p, np.exp(-np.maximum(log_wealth, 0.0)))
    return replace(
        e, n=e.n + seen, total=e.total + x, total_sq=e.total_sq + x * x, log_wealth=log_wealth, min_p=min_p
    )


FIELDS = ("n", "total", "total_sq", "log_wealth", "min_p")


@pytest.mark.parametrize("seed", range(12))
def test_betting_in_place_gives_the_formula_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    shape = [(9,), (6, 6), (40, 40)][seed % 3]
    low, high = [(-1.02, 0.98), (-0.98, 1.02), (-0.05, 0.95), (0.1, 0.9)][seed % 4]  # the last: 0 outside
    evidence = confseq.Evidence.start(shape, low, high)
    reference = evidence
    for _ in range(3):  # evidence carried over calls, as the rule feeds blocks of items
        x = rng.normal(0.1 * (seed % 5 - 2), 0.6, size=(int(rng.integers(1, 25)), *shape))
        x[rng.random(x.shape) < [0.0, 0.1, 0.6][seed % 3]] = np.nan
        before = {f: getattr(evidence, f).copy() for f in FIELDS}
        advanced = confseq.advance(evidence, x)
        assert all(np.array_equal(getattr(evidence, f), before[f]) for f in FIELDS)  # left as it was
        for row in x:
            reference = reference_bet(reference, row)
        for f in FIELDS:
            assert np.array_equal(getattr(advanced, f), getattr(reference, f)), f
        evidence = advanced
    assert (evidence.min_p < 1).any() and (evidence.n > 0).all()  # the tests did bet and did see items
