"""Monitoring statistics against known values: KS, chi-squared, weighted Holm, MMD, mix, estimates."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from raypipe.monitor import drift
from raypipe.monitor.drift import DriftTest, correct_family, holm_adjusted, mmd_test, univariate_test
from raypipe.monitor.estimate import mix_reweighted, score_calibrated, slice_means
from raypipe.monitor.mix import (
    FeatureEncoder,
    MixModel,
    estimate_mix,
    fit_mix_model,
    share_test,
    stratified_share_test,
)
from raypipe.spec.task import Metric

ACCURACY = Metric("accuracy", "right or wrong")


def test_ks_agrees_with_the_exact_two_sample_distribution():
    statistic, p_value = drift.ks_test(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6, 0.7, 0.8]))
    assert statistic == 1.0
    assert p_value == pytest.approx(2 / math.comb(8, 4))  # only the two fully separated orders are as extreme


def test_chi2_of_a_known_two_by_two_table():
    statistic, p_value, dof = drift.chi2_test(["a"] * 30 + ["b"] * 10, ["a"] * 10 + ["b"] * 30)
    # N (ad - bc)^2 / (row and column totals) = 80 * 800^2 / 40^4
    assert statistic == pytest.approx(20.0)
    assert dof == 1
    assert p_value == pytest.approx(stats.chi2.sf(20.0, 1))


def test_chi2_of_one_category_is_no_evidence():
    assert drift.chi2_test(["x"] * 5, ["x"] * 3) == (0.0, 1.0, 0)


def test_small_cells_take_fisher_and_rare_categories_are_pooled():
    # 2 errors in a batch of 200 against none in 600: chi-squared would say p = 0.014
    _, p_value, _ = drift.chi2_test(["ok"] * 600, ["ok"] * 198 + ["error"] * 2)
    assert p_value == pytest.approx(200 * 199 / (800 * 799))  # both errors fell in the batch, by chance
    # "c" and "d" (3 items in all) join one column: the table is a vs b vs rare
    statistic, _, dof = drift.chi2_test(["a"] * 40 + ["b"] * 40 + ["c"], ["a"] * 20 + ["b"] * 18 + ["d"] * 2)
    assert dof == 2
    assert statistic == pytest.approx(stats.chi2_contingency([[40, 40, 1], [20, 18, 2]], correction=False)[0])


def test_univariate_test_chooses_chi2_for_few_values_and_drops_missing():
    few = univariate_test(
        "score", "output", "continuous", np.array([0.0, 0.2, 1.0] * 20), np.array([1.0] * 30)
    )
    assert few.test == "chi2" and few.p_value < 1e-6
    rng = np.random.default_rng(0)
    reference, batch = rng.normal(size=200), np.append(rng.normal(size=100), np.nan)
    many = univariate_test("brightness", "feature", "continuous", reference, batch)
    assert many.test == "ks"
    assert many.p_value == pytest.approx(stats.ks_2samp(reference, batch[:-1]).pvalue)
    empty = univariate_test("noise", "feature", "continuous", reference, np.array([np.nan]))
    assert (empty.test, empty.p_value) == ("none", 1.0)


def test_holm_adjusted_p_values_of_a_known_list():
    # sorted: 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1 -> 0.02, 0.03, 0.06, max(0.06, 0.04)
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_weighted_holm_compares_each_p_with_its_share_of_the_level():
    # p / w orders: 0.04 (index 1), 0.0429 (index 0), 2 (index 3), 5 (index 2)
    adjusted = holm_adjusted([0.03, 0.004, 0.5, 0.2], [0.7, 0.1, 0.1, 0.1])
    assert adjusted == pytest.approx([0.04, 0.04, 0.5, 0.4])


def test_family_weights_by_group_sum_to_one_and_flag_drift():
    tests = [DriftTest(f"f{i}", "feature", "ks", 0.1, 0.5) for i in range(3)]
    tests += [DriftTest("profile", "mix", "mix-share", 4.0, 0.03)]
    corrected = correct_family(tests)
    assert sum(t.weight for t in corrected) == pytest.approx(1.0)
    mix = corrected[-1]
    # without multivariate and output tests, mix holds 0.7 / 0.85 of the level: 0.03 / 0.8235 = 0.0364
    assert mix.weight == pytest.approx(0.7 / 0.85)
    assert mix.p_corrected == pytest.approx(0.03 / (0.7 / 0.85)) and mix.drifted
    assert not any(t.drifted for t in corrected[:3])


def test_mmd_of_two_points_is_two_minus_two_over_e():
    statistic, p_value = mmd_test(np.array([[0.0]]), np.array([[1.0]]), permutations=20)
    assert statistic == pytest.approx(2 - 2 / math.e)
    assert p_value == 1.0  # swapping the two points gives the same discrepancy


def test_mmd_permutation_p_values_are_uniform_under_the_null_and_small_under_a_shift():
    rng = np.random.default_rng(42)
    null = [mmd_test(rng.normal(size=(40, 2)), rng.normal(size=(40, 2)), 200, seed=s)[1] for s in range(80)]
    assert stats.kstest(null, "uniform").pvalue > 0.05
    assert 0.01 <= np.mean(np.array(null) <= 0.1) <= 0.25
    shifted = rng.normal(size=(40, 2)) + np.array([1.0, 0.0])
    assert mmd_test(rng.normal(size=(40, 2)), shifted, 500)[1] <= 0.004


def _separable(n_per: int, seed: int) -> tuple[pl.DataFrame, pl.Series]:
    rng = np.random.default_rng(seed)
    centres = {"clean": (0.0, 0.0), "dark": (5.0, 0.0), "rotated": (0.0, 5.0)}
    rows = [
        (x + rng.normal(0, 0.3), y + rng.normal(0, 0.3), label)
        for label, (x, y) in centres.items()
        for _ in range(n_per)
    ]
    frame = pl.DataFrame(rows, schema=["a", "b", "bin_profile"], orient="row")
    return frame.select("a", "b"), frame["bin_profile"]


def test_a_separable_mix_is_learnt_and_estimated_exactly():
    features, bins = _separable(30, 0)
    model = fit_mix_model(features, bins, {"a": "continuous", "b": "continuous"})
    assert model.labels == ["clean", "dark", "rotated"] and model.accuracy == 1.0
    assert np.allclose(model.confusion, np.eye(3)) and model.folds == 5
    assert model.true_counts.tolist() == [30, 30, 30]  # with C the identity: 30 out-of-fold predictions each
    batch, _ = _separable(10, 1)
    batch = pl.concat([batch, batch[20:30], batch[20:30]])  # rotated: 30 of 50
    predicted = model.predict(batch)
    assert predicted.shape == (5, 3) and predicted.sum(axis=1).tolist() == [10] * 5  # one part per fold
    estimate = estimate_mix(model, predicted)
    assert estimate.as_dict() == pytest.approx({"clean": 0.2, "dark": 0.2, "rotated": 0.6})
    # the share test: each half of the reference predicted by the forest of the other, the whole batch by both
    assert model.test_reference_counts.sum(axis=1).tolist() == [45, 45]
    whole = model.predict_whole(batch)
    assert whole.tolist() == [[10, 10, 30], [10, 10, 30]]
    found = share_test(model, whole)
    zs = []  # the statistic is the largest |z| of a share, in the half whose test gave the smaller p
    for half in model.test_reference_counts:
        for label in range(3):
            pooled = (half[label] + whole[0][label]) / 95  # among the half's 45 and the batch's 50
            se = math.sqrt(pooled * (1 - pooled) * (1 / 50 + 1 / 45))
            zs.append(abs(whole[0][label] / 50 - half[label] / 45) / se)
    assert found.statistic == pytest.approx(max(zs[:3])) or found.statistic == pytest.approx(max(zs[3:]))
    level = drift.GROUP_WEIGHTS["mix"] * drift.FAMILY_ALPHA  # its share of the family's level: it fires
    assert found.p_value < level and "predicted share" in found.detail
    assert share_test(model, model.predict_whole(_separable(10, 2)[0])).p_value > 0.5
    assert share_test(model, whole[:, :0]).stepped_aside  # no batch item: the test steps aside


def test_the_share_test_holds_its_level_on_simulated_counts():
    """1,000 draws of a reference (40 items in 5 folds) and a batch (20) from one mix: the permutation
    test fires at most its level plus 2 points, at the mix test's own share of the family's level."""
    rng = np.random.default_rng(7)
    shares = np.array([0.3, 0.1, 0.12, 0.12, 0.12, 0.12, 0.12])
    level = drift.GROUP_WEIGHTS["mix"] * drift.FAMILY_ALPHA
    fired = 0
    for draw in range(1000):
        reference = np.array([rng.multinomial(8, shares) for _ in range(5)])
        batch = np.array([rng.multinomial(4, shares) for _ in range(5)])
        fired += stratified_share_test(reference, batch, permutations=500, seed=draw)[1] <= level
    assert fired / 1000 <= level + 0.02
    assert fired >= 5  # the test can fire: its level (2.8 %) is not spent on nothing


def test_the_share_test_sees_a_rise_of_twenty_points():
    reference = np.array([[30, 10, 10]] * 5)
    batch = np.array([[10, 10, 20]] * 5)  # the third label from 20 % to 50 %, the first from 60 % to 25 %
    statistic, p_value, worst = stratified_share_test(reference, batch)
    assert worst == 0 and p_value == pytest.approx(1 / 4001) and statistic > 5  # the largest |z|


def test_bbse_undoes_a_known_confusion():
    confusion = np.array([[0.8, 0.3], [0.2, 0.7]])
    model = _model(["a", "b"], confusion, true_counts=[1e9, 1e9])  # a confusion known exactly
    predicted = np.array([55, 45])  # C @ (0.5, 0.5) = (0.55, 0.45)
    estimate = estimate_mix(model, predicted)
    assert estimate.shares == pytest.approx([0.5, 0.5])
    low, high = estimate.interval(0)
    # q's standard error (add-one shares 56/102 and 46/102, over 100 items), divided by det(C) = 0.5
    se = math.sqrt(56 / 102 * 46 / 102 / 100) / 0.5
    assert high - low == pytest.approx(2 * 1.959964 * se, rel=1e-6)
    # a confusion learnt from 50 items per label widens the interval
    wider = estimate_mix(_model(["a", "b"], confusion, true_counts=[50, 50]), predicted).interval(0)
    assert wider[1] - wider[0] > (high - low) * 1.2


def _model(labels: list[str], confusion: np.ndarray, true_counts: list[float]) -> MixModel:
    k = len(labels)
    return MixModel(
        "profile", labels, FeatureEncoder([], {}, {}), [None] * 5, confusion, np.full(k, 1 / k),
        np.array(true_counts, dtype=float), 0.75,
    )  # fmt: skip


def test_mix_reweighted_objective_and_its_interval():
    outputs = pl.DataFrame(
        {"bin_profile": ["clean"] * 96 + ["rotated"] * 46, "accuracy": [True] * 96 + [False] * 46}
    )
    per_slice = slice_means(outputs, "bin_profile", ACCURACY)
    model = _model(["clean", "rotated"], np.eye(2), true_counts=[50, 50])
    estimate = mix_reweighted(per_slice, estimate_mix(model, np.array([25, 75])), ACCURACY)
    assert estimate.value == pytest.approx(0.25)
    # Agresti-Coull variances of the two slice means, then the multinomial variance of the mix
    var_clean, var_rotated = (98 / 100 * 2 / 100) / 96, (2 / 50 * 48 / 50) / 46
    variance = 0.25**2 * var_clean + 0.75**2 * var_rotated + (26 / 102) * (76 / 102) / 100
    # and the 100 batch items' own spread around their slices' means
    variance += (0.25 * 98 / 100 * 2 / 100 + 0.75 * 2 / 50 * 48 / 50) / 100
    assert estimate.ci_high - estimate.value == pytest.approx(1.959964 * math.sqrt(variance), rel=1e-4)


def test_score_calibrated_maps_scores_to_the_reference_objective():
    reference = pl.DataFrame({"score": [1.0] * 50 + [0.2] * 50, "accuracy": [1.0] * 50 + [0.0] * 50})
    estimate = score_calibrated(reference, np.array([1.0] * 30 + [0.2] * 10), "score", ACCURACY)
    # smoothed bin means: (50 + 2 * 0.5) / 52 and (0 + 1) / 52
    assert estimate.value == pytest.approx(0.75 * 51 / 52 + 0.25 * 1 / 52)
    assert estimate.ci_low < estimate.value < estimate.ci_high


def _covers(estimate, truth: float) -> bool:
    return estimate.ci_low <= truth <= estimate.ci_high


def test_label_free_intervals_cover_a_small_batch_s_own_objective():
    """A 95 % interval is about the batch's mean objective, so it must hold it about 95 % of the time, also
    for a batch of 20 against a large reference (it held 56 % without the batch items' own spread)."""
    rng = np.random.default_rng(11)
    accuracy = {"clean": 0.95, "rotated": 0.6}
    model = _model(["clean", "rotated"], np.eye(2), true_counts=[500, 500])
    covered = {"mix": 0, "score": 0}
    draws = 400
    for _ in range(draws):
        bins = np.array(["clean", "rotated"])[rng.integers(0, 2, 1000)]
        right = rng.random(1000) < np.where(bins == "clean", accuracy["clean"], accuracy["rotated"])
        reference = pl.DataFrame({"bin_profile": bins, "accuracy": right, "score": (bins == "clean") * 1.0})
        batch_bins = np.where(rng.random(20) < 0.3, "clean", "rotated")
        batch_right = rng.random(20) < np.where(batch_bins == "clean", 0.95, 0.6)
        counts = np.array([np.sum(batch_bins == "clean"), np.sum(batch_bins == "rotated")])
        per_slice = slice_means(reference, "bin_profile", ACCURACY)
        mixed = mix_reweighted(per_slice, estimate_mix(model, counts), ACCURACY)
        scored = score_calibrated(reference, (batch_bins == "clean") * 1.0, "score", ACCURACY)
        covered["mix"] += _covers(mixed, batch_right.mean())
        covered["score"] += _covers(scored, batch_right.mean())
    # 400 draws: a true 95 % reads above 0.92 with probability > 0.99; 0.56 (the old interval) cannot
    assert covered["mix"] / draws >= 0.92
    assert covered["score"] / draws >= 0.92


def test_ks_on_a_column_with_a_point_mass_holds_its_level_and_can_fire():
    """Card widths: most are 640, a skewed card is wider. Ties broken at random keep KS exact."""
    rng = np.random.default_rng(3)

    def widths(n: int, skewed: float = 0.12) -> np.ndarray:
        return np.where(rng.random(n) < skewed, rng.uniform(650, 760, n).round(), 640.0)

    p_values = np.array([drift.ks_test(widths(40), widths(20), seed=s)[1] for s in range(1000)])
    assert np.mean(p_values <= 0.05) <= 0.05 + 0.02
    assert np.mean(p_values <= 0.05) >= 0.02  # scipy's own KS on these ties fired 0 of 2,000 times
    assert drift.ks_test(widths(200), widths(100, skewed=0.4))[1] < 1e-4


def test_a_test_too_small_steps_aside_and_gives_its_share_to_the_others():
    small = univariate_test("noise", "feature", "continuous", np.arange(40.0), np.arange(3.0))
    assert small.stepped_aside == "40 reference and 3 batch values: the test needs 5 of each"
    assert (small.p_value, small.test) == (1.0, "none")
    tests = [
        small,
        DriftTest("brightness", "feature", "ks", 0.5, 0.02),
        DriftTest("profile", "mix", "mix-share", 3, 0.5),
    ]
    corrected = correct_family(tests)
    assert corrected[0].weight == 0.0 and not corrected[0].drifted
    assert corrected[1].weight == pytest.approx(0.15 / 0.85)  # the only feature test that ran
    assert sum(t.weight for t in corrected) == pytest.approx(1.0)


def test_mmd_scales_on_the_pooled_sample():
    """A batch far out in one feature: scaled by the reference alone, the permutations would not move the
    scale; scaled on the pooled sample, the p-values under no shift stay uniform."""
    rng = np.random.default_rng(5)
    null = [mmd_test(rng.normal(size=(40, 3)), rng.normal(size=(20, 3)), 200, seed=s)[1] for s in range(100)]
    assert np.mean(np.array(null) <= 0.05) <= 0.05 + 0.05
    assert mmd_test(rng.normal(size=(40, 3)), rng.normal(size=(20, 3)) + 3, 200)[1] <= 1 / 201 + 1e-9
